"""Reconnect storm over TLS: every wallbox drops at once and reconnects at
the same moment; how long until cfosproxy has re-admitted them all, against
the backend peer taking the same storm directly.

    python bench/storm.py [--wallboxes 1000] [--gateway] [--drop reset] [--json out.json]

Scenarios, each against fresh server processes:

- direct: the wallboxes connect over wss:// to ``bench/backend.py`` serving
  TLS with a throwaway certificate (made with ``cfosproxy-certs``), boot,
  then storm (the baseline);
- local: the same against cfosproxy with ``tls = on`` and its own
  self-signed certificate, wallboxes configured without a gateway;
- gateway (with --gateway): the same, each wallbox with a gateway leg over
  wss:// to the backend (verified with ``gateway_ca``).

A wallbox is re-admitted once its WebSocket is open again and its
BootNotification is answered Accepted; one that fails tries again after
--retry-delay seconds, as a wallbox would. The storm starts when the
connections drop (--drop reset: a TCP reset, no WebSocket close; --drop
silent: the old connections stay open and are never read again, as when a
wallbox's network went away). Clients verify the server certificate.
"""

import argparse
import collections
import os
import sys
import tempfile
import time

import common

# The target: this many wallboxes re-admitted over TLS in this time.
TARGET_WALLBOXES, TARGET_S = 1000, 10.0


def storm(generator, pid, urls, ca, args, status_port=None):
    """Connect a wallbox per URL (verifying the server with C{ca}), then
    drop them all and time their re-admission; C{pid} is the server's
    process, C{status_port} cfosproxy's status API when it has gateway
    legs (their links are waited for before the storm and after it)."""
    connected = generator.connect(urls, concurrency=args.concurrency, ca=ca, timeout=args.timeout)
    result = {
        "wallboxes": len(urls),
        "connected": connected["opened"],
        "connect_s": round(connected["seconds"], 3),
        "connect_errors": connected["errors"],
    }
    if status_port is not None:
        result["links_before"], _ = common.wait_for_links(status_port, connected["opened"], args.timeout)
    time.sleep(args.settle)
    fds_before = common.open_fds(pid)
    cpu_before = common.cpu_seconds(pid)
    stormed = generator.storm(drop=args.drop, retry_for=args.retry_for,
                              retry_delay=args.retry_delay, timeout=args.timeout)
    cpu_after = common.cpu_seconds(pid)
    admitted = stormed["admitted_s"]
    result.update(
        readmitted=stormed["opened"],
        attempts=stormed["attempts"],
        storm_errors=stormed["errors"],
        # None unless every wallbox came back.
        all_readmitted_s=round(max(admitted), 3) if admitted and not stormed["failed"] else None,
        p50_readmitted_s=round(common.percentile(admitted, 0.5), 3) if admitted else None,
        p99_readmitted_s=round(common.percentile(admitted, 0.99), 3) if admitted else None,
        server_cpu_s=round(cpu_after - cpu_before, 3),
        # Re-admissions per whole second since the storm's start: TCP's SYN
        # retransmits (after 1, 3, 7 s) show as clusters.
        readmitted_per_second={
            str(second): count for second, count in sorted(
                collections.Counter(int(t) for t in admitted).items())
        },
    )
    if status_port is not None:
        links, waited = common.wait_for_links(status_port, stormed["opened"], args.timeout)
        result["links_after"] = links
        # None: some links did not open again within --timeout.
        result["links_open_again_s"] = (
            round(stormed["seconds"] + waited, 3) if links >= stormed["opened"] else None
        )
    result["held_after"] = generator.heartbeat(timeout=args.timeout)["answered"]
    # The dropped connections must be gone by now (with --drop silent, once
    # the server has given up on their close handshake).
    time.sleep(args.settle)
    result["server_fds_before"], result["server_fds_after"] = fds_before, common.open_fds(pid)
    generator.close()
    return result


def backend_errors(args, name):
    """A file for a backend's error output: the websockets library logs a
    traceback for every connection the storm resets."""
    return open(os.path.join(args.directory, "backend-{}.log".format(name)), "w")


def direct(generator, tls_files, args):
    """The storm against a fresh backend serving TLS."""
    ca, cert, key = tls_files
    backend = common.Backend(tls=(cert, key), stderr=backend_errors(args, "direct")).start()
    try:
        urls = ["wss://127.0.0.1:{}/ocpp/SB-{}".format(backend.port, i) for i in range(args.wallboxes)]
        return storm(generator, backend.process.pid, urls, ca, args)
    finally:
        backend.stop()


def through_proxy(generator, tls_files, args, gateway):
    """The storm against a fresh cfosproxy with C{tls = on}; with
    C{gateway}, each wallbox has a gateway leg over wss:// to a fresh
    backend."""
    ca, cert, key = tls_files
    backend = None
    if gateway:
        backend = common.Backend(tls=(cert, key), stderr=backend_errors(args, "gateway")).start()
    url = "wss://127.0.0.1:{}/ocpp/".format(backend.port) if gateway else None
    proxy = common.Proxy(
        [("w{}".format(i), "SB-{}".format(i), url) for i in range(args.wallboxes)],
        server="tls = on\n",
        mode="observe",
        wallbox_extra="gateway_ca = {}\n".format(ca) if gateway else "",
        backlog=args.backlog,
    )
    try:
        proxy.start()
        # cfosproxy made its self-signed certificate on start (it names
        # 127.0.0.1): the wallboxes trust exactly that one.
        own = os.path.join(proxy.directory, "var", "server-cert.pem")
        urls = [proxy.url("SB-{}".format(i), scheme="wss") for i in range(args.wallboxes)]
        result = storm(generator, proxy.process.pid, urls, own, args,
                       status_port=proxy.status_port if gateway else None)
    finally:
        proxy.stop()
        if backend is not None:
            backend.stop()
        problems, lines = proxy.log_problems()
        print("cfosproxy log {}: {} warning/error lines{}".format(
            os.path.join(proxy.directory, "twistd.log"), problems,
            "".join("\n  " + line for line in lines)), file=sys.stderr)
    result.update(log_problems=problems, log_problem_lines=lines, proxy_directory=proxy.directory)
    return result


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wallboxes", type=int, default=TARGET_WALLBOXES,
                        help="wallboxes in the storm (default: %(default)s)")
    parser.add_argument("--gateway", action="store_true",
                        help="also storm wallboxes with gateway legs to the backend")
    parser.add_argument("--drop", choices=("reset", "silent"), default="reset",
                        help="how the connections drop (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="load generator processes (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=40,
                        help="handshakes at a time for the first connect, over all workers (default: %(default)s);"
                             " the storm itself has no limit")
    parser.add_argument("--backlog", type=int,
                        help="cfosproxy's listen backlog (default: its own, 1024, as the backend's)")
    parser.add_argument("--retry-delay", type=float, default=1.0,
                        help="seconds a wallbox waits before trying again (default: %(default)s)")
    parser.add_argument("--retry-for", type=float, default=120.0,
                        help="seconds after the storm's start a wallbox keeps trying (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds one handshake with boot may take (default: %(default)s)")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds between connecting and the storm (default: %(default)s)")
    parser.add_argument("--json", help="write the figures to this file too")
    args = parser.parse_args()

    args.directory = tempfile.mkdtemp(prefix="cfosproxy-storm-")
    tls_files = common.make_certificates(args.directory)
    generator = common.LoadGenerator(args.workers).start()
    try:
        print("direct: {} wallboxes".format(args.wallboxes), file=sys.stderr)
        base = direct(generator, tls_files, args)
        runs = {}
        print("local only: {} wallboxes".format(args.wallboxes), file=sys.stderr)
        runs["local"] = through_proxy(generator, tls_files, args, gateway=False)
        if args.gateway:
            print("gateway: {} wallboxes".format(args.wallboxes), file=sys.stderr)
            runs["gateway"] = through_proxy(generator, tls_files, args, gateway=True)
    finally:
        generator.stop()

    figures = {
        "cpu_cores": os.cpu_count(), "wallboxes": args.wallboxes, "drop": args.drop,
        "workers": args.workers, "backlog": args.backlog, "retry_delay_s": args.retry_delay,
        "direct": base,
    }
    rows = []
    for name, label in (("local", "local only"), ("gateway", "gateway legs")):
        if name not in runs:
            continue
        run = figures[name] = runs[name]
        rows += [
            ("s to connect and boot all first, {}".format(label), base["connect_s"], run["connect_s"],
             ratio(run["connect_s"], base["connect_s"])),
            ("re-admitted of {}, {}".format(args.wallboxes, label), base["readmitted"], run["readmitted"],
             ratio(run["readmitted"], base["readmitted"])),
            ("s until all re-admitted, {}".format(label), base["all_readmitted_s"], run["all_readmitted_s"],
             ratio(run["all_readmitted_s"], base["all_readmitted_s"])),
            ("p50 s to re-admission, {}".format(label), base["p50_readmitted_s"], run["p50_readmitted_s"],
             ratio(run["p50_readmitted_s"], base["p50_readmitted_s"])),
            ("p99 s to re-admission, {}".format(label), base["p99_readmitted_s"], run["p99_readmitted_s"],
             ratio(run["p99_readmitted_s"], base["p99_readmitted_s"])),
            ("connection attempts, {}".format(label), base["attempts"], run["attempts"], None),
            ("server CPU s in the storm, {}".format(label), base["server_cpu_s"], run["server_cpu_s"],
             ratio(run["server_cpu_s"], base["server_cpu_s"])),
            ("held after the storm, {}".format(label), base["held_after"], run["held_after"], None),
            ("server fds before / after, {}".format(label),
             "{} / {}".format(base["server_fds_before"], base["server_fds_after"]),
             "{} / {}".format(run["server_fds_before"], run["server_fds_after"]), None),
        ]
        if name == "gateway":
            rows += [
                ("backend links open after the storm", None, run["links_after"], None),
                ("s until every backend link is open again", None, run["links_open_again_s"], None),
            ]
    local = runs["local"]
    figures["target_met"] = None  # not tried with fewer wallboxes
    if args.wallboxes >= TARGET_WALLBOXES:
        figures["target_met"] = (
            local["all_readmitted_s"] is not None and local["all_readmitted_s"] <= TARGET_S
        )
    common.report("Reconnect storm over TLS (direct = backend alone; drop: {})".format(args.drop),
                  rows, figures, args.json)
    print("target: {} wallboxes re-admitted over TLS within {:.0f} s: {}".format(
        TARGET_WALLBOXES, TARGET_S,
        {True: "met", False: "NOT met", None: "not tried"}[figures["target_met"]]))


if __name__ == "__main__":
    main()
