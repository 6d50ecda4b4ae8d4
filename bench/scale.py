"""Scale benchmark: how many wallboxes cfosproxy holds, how fast they all
connect, and what each costs in memory, against the backend peer holding
the same number of wallboxes directly.

    python bench/scale.py [--local 10000] [--gateway 5000] [--workers 2] [--json out.json]

Every scenario runs against fresh server processes, one after the other:

- local: --local wallboxes, configured without ``gateway_url``, connect to
  cfosproxy (``mode = observe``) and each sends a BootNotification;
- gateway: --gateway wallboxes, each with a gateway leg to the backend, so
  that cfosproxy holds two WebSockets per wallbox; the figures are read once
  the status API shows every backend link connected;
- direct: the same numbers of wallboxes straight to the backend
  (``bench/backend.py``), as the baseline.

The load generator runs in worker processes of its own (--workers). A
wallbox is *held* when its WebSocket is still open at the end and answers a
Heartbeat. Memory is the server's resident set size before the wallboxes
connect and after they have all booted, divided by the wallboxes connected.
"""

import argparse
import os
import sys
import time

import common

# The target for a wallbox with its gateway leg.
TARGET_KB_PER_GATEWAY_WALLBOX = 100


def hold(generator, pid, urls, args, status_port=None):
    """Connect a wallbox per URL to the server process C{pid}, read its
    memory and CPU time around that, and count the wallboxes held at the
    end. With C{status_port}, wait for every gateway link before reading
    the memory."""
    time.sleep(args.settle)
    rss_before, cpu_before = common.rss_kib(pid), common.cpu_seconds(pid)
    fds_before = common.open_fds(pid)
    connected = generator.connect(urls, concurrency=args.concurrency, timeout=args.timeout)
    result = {
        "wallboxes": len(urls),
        "connected": connected["opened"],
        "connect_s": round(connected["seconds"], 3),
        "connect_errors": connected["errors"],
    }
    if status_port is not None:
        links, waited = common.wait_for_links(status_port, connected["opened"], timeout=args.timeout)
        result["links_connected"] = links
        result["connect_and_links_s"] = round(connected["seconds"] + waited, 3)
    # Let the last frames and the allocator settle before reading.
    time.sleep(args.settle)
    rss_after, cpu_after = common.rss_kib(pid), common.cpu_seconds(pid)
    result.update(
        # The sockets the server opened: one per wallbox, two with a gateway leg.
        server_sockets=common.open_fds(pid) - fds_before,
        rss_before_kib=rss_before,
        rss_after_kib=rss_after,
        rss_per_wallbox_kib=round((rss_after - rss_before) / max(1, connected["opened"]), 2),
        cpu_s_per_1000_connects=round(1000 * (cpu_after - cpu_before) / max(1, connected["opened"]), 3),
    )
    time.sleep(args.hold)
    answered = generator.heartbeat(timeout=args.timeout)
    result["held"] = answered["answered"]
    result["heartbeat_errors"] = answered["errors"]
    generator.close()
    return result


def direct(generator, count, args):
    """C{count} wallboxes straight to a fresh backend process."""
    backend = common.Backend().start()
    try:
        urls = ["{}DB-{}".format(backend.url, i) for i in range(count)]
        return hold(generator, backend.process.pid, urls, args)
    finally:
        backend.stop()


def through_proxy(generator, count, args, gateway):
    """C{count} wallboxes to a fresh cfosproxy, each configured with a
    gateway leg to a fresh backend when C{gateway}."""
    backend = common.Backend().start() if gateway else None
    prefix = "GB" if gateway else "LB"
    proxy = common.Proxy(
        [("w{}".format(i), "{}-{}".format(prefix, i), backend.url if gateway else None)
         for i in range(count)],
        mode="observe",
        backlog=args.backlog,
    )
    try:
        proxy.start()
        urls = [proxy.url("{}-{}".format(prefix, i)) for i in range(count)]
        result = hold(generator, proxy.process.pid, urls, args,
                      status_port=proxy.status_port if gateway else None)
    finally:
        proxy.stop()
        if backend is not None:
            backend.stop()
        problems, lines = proxy.log_problems()
        print("cfosproxy log {}: {} warning/error lines{}".format(
            os.path.join(proxy.directory, "twistd.log"), problems,
            "".join("\n  " + line for line in lines)), file=sys.stderr)
    result.update(
        startup_to_listening_s=round(proxy.startup_s, 3),
        log_problems=problems,
        log_problem_lines=lines,
        proxy_directory=proxy.directory,
    )
    return result


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--local", type=int, default=10000, help="local-only wallboxes (default: %(default)s)")
    parser.add_argument("--gateway", type=int, default=5000,
                        help="wallboxes with a gateway leg (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="load generator processes (default: %(default)s)")
    # Below the listen backlogs (1024): more handshakes at once would
    # overflow them, and the connect time then measures TCP's SYN retransmits.
    parser.add_argument("--concurrency", type=int, default=200,
                        help="handshakes under way at a time, over all workers (default: %(default)s)")
    parser.add_argument("--backlog", type=int,
                        help="cfosproxy's listen backlog (default: its own, 1024)")
    parser.add_argument("--hold", type=float, default=5.0,
                        help="seconds to hold the wallboxes before the final Heartbeat (default: %(default)s)")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds to wait before each memory reading (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds a handshake, boot, Heartbeat or the backend links may take")
    parser.add_argument("--json", help="write the figures to this file too")
    args = parser.parse_args()

    generator = common.LoadGenerator(args.workers).start()
    try:
        runs = {}
        if args.local:
            print("local only: {} wallboxes".format(args.local), file=sys.stderr)
            runs["local"] = through_proxy(generator, args.local, args, gateway=False)
        if args.gateway:
            print("gateway: {} wallboxes".format(args.gateway), file=sys.stderr)
            runs["gateway"] = through_proxy(generator, args.gateway, args, gateway=True)
        baselines = {}
        for count in sorted({n for n in (args.local, args.gateway) if n}):
            print("direct: {} wallboxes".format(count), file=sys.stderr)
            baselines[count] = direct(generator, count, args)
    finally:
        generator.stop()

    figures = {"cpu_cores": os.cpu_count(), "workers": args.workers, "concurrency": args.concurrency,
               "backlog": args.backlog}
    rows = []
    for name, label in (("local", "local only"), ("gateway", "gateway leg")):
        if name not in runs:
            continue
        run, base = runs[name], baselines[runs[name]["wallboxes"]]
        figures[name] = run
        figures["direct_{}".format(run["wallboxes"])] = base
        rows += [
            ("held of {}, {}".format(run["wallboxes"], label), base["held"], run["held"],
             ratio(run["held"], base["held"])),
            ("s to connect and boot all, {}".format(label), base["connect_s"], run["connect_s"],
             ratio(run["connect_s"], base["connect_s"])),
        ]
        rows.append(("server sockets opened, {}".format(label), base["server_sockets"],
                     run["server_sockets"], None))
        if name == "gateway":
            rows.append(("s until every backend link is open", None, run["connect_and_links_s"], None))
        rows += [
            ("RSS KiB per wallbox, {}".format(label), base["rss_per_wallbox_kib"],
             run["rss_per_wallbox_kib"], ratio(run["rss_per_wallbox_kib"], base["rss_per_wallbox_kib"])),
            ("CPU s per 1000 connects, {}".format(label), base["cpu_s_per_1000_connects"],
             run["cpu_s_per_1000_connects"],
             ratio(run["cpu_s_per_1000_connects"], base["cpu_s_per_1000_connects"])),
        ]
        if name == "gateway":
            # cfosproxy holds two WebSockets per wallbox, the backend one.
            per_socket = run["rss_per_wallbox_kib"] / 2
            rows.append(("RSS KiB per WebSocket, gateway leg", base["rss_per_wallbox_kib"],
                         round(per_socket, 2), ratio(per_socket, base["rss_per_wallbox_kib"])))
            kb = run["rss_per_wallbox_kib"] * 1.024
            figures["gateway"]["rss_per_wallbox_kb"] = round(kb, 2)
            figures["gateway_target_met"] = kb <= TARGET_KB_PER_GATEWAY_WALLBOX
    common.report("Scale: wallboxes held, connect time, memory (direct = backend alone)",
                  rows, figures, args.json)
    if "gateway" in runs:
        print("target: <= {} KB RSS per wallbox with its gateway leg: {} ({} KB)".format(
            TARGET_KB_PER_GATEWAY_WALLBOX, "met" if figures["gateway_target_met"] else "NOT met",
            figures["gateway"]["rss_per_wallbox_kb"]))


if __name__ == "__main__":
    main()
