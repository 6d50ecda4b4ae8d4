"""Relay benchmark: OCPP round trips through cfosproxy's gateway, against
the same backend reached directly, in one run.

    python bench/relay.py [--wallboxes 200] [--seconds 10] [--rate 500] [--json out.json] [--profile stats]

Three processes on loopback: a backend (``bench/backend.py``, a minimal OCPP
central system that answers every CALL at once), cfosproxy under
``twistd -n`` with a gateway per wallbox to that backend (``mode =
observe``, so that only the relay is measured), and this load generator
(many wallboxes over real WebSockets). Each scenario runs twice, directly
to the backend and through cfosproxy; the figures are reported as the ratio
of the two, since absolute numbers depend on the machine (and here all
three processes share its cores).

- saturation: every wallbox sends Heartbeats back to back for --seconds;
  round trips per second, and the server's CPU seconds per 1000 round trips
  (the backend's directly, cfosproxy's through it).
- transaction messages: MeterValues (stored in SQLite before they go on)
  back to back; the same figures.
- latency: --rate Heartbeats per second in total, spread over the
  wallboxes; p50 and p99 round-trip time, and what cfosproxy adds.
- memory: cfosproxy's resident set size before and after the wallboxes
  connect, read once every backend leg is open; per wallbox.
- the stack's floor (not with --tls): the two saturation scenarios through
  ``bench/barerelay.py``, a relay on Twisted and Autobahn that only passes
  frames on. Its CPU per round trip is what the stack costs before any of
  cfosproxy's work; cfosproxy's throughput is also given as a ratio to it.
"""

import argparse
import asyncio
import os
import tempfile
import time

import common

METER = {"connectorId": 1, "meterValue": [{"timestamp": "2026-01-01T00:00:00Z", "sampledValue": [{"value": "1"}]}]}


async def saturate(boxes, seconds, action, payload, pid):
    """Every wallbox sends C{action} back to back for C{seconds}.

    @return: C{(round trips per second, CPU seconds of process C{pid} per
        1000 round trips)}
    """
    deadline = time.monotonic() + seconds
    done = 0

    async def loop(box):
        nonlocal done
        while time.monotonic() < deadline:
            await box.call(action, payload)
            done += 1

    cpu = common.cpu_seconds(pid)
    start = time.monotonic()
    await asyncio.gather(*(loop(box) for box in boxes))
    elapsed = time.monotonic() - start
    cpu = common.cpu_seconds(pid) - cpu
    return done / elapsed, 1000 * cpu / max(1, done)


async def latency(boxes, seconds, rate):
    """Heartbeats at C{rate} per second in total; the round-trip times."""
    interval = len(boxes) / rate
    samples = []
    deadline = time.monotonic() + seconds

    async def loop(index, box):
        await asyncio.sleep(interval * index / len(boxes))
        while time.monotonic() < deadline:
            started = time.monotonic()
            await box.call("Heartbeat", {})
            samples.append(time.monotonic() - started)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    await asyncio.gather(*(loop(i, box) for i, box in enumerate(boxes)))
    return samples


async def connect(urls, ca=None):
    # Without compression, as cfosproxy talks to both sides: the websockets
    # client would otherwise agree on permessage-deflate with the backend,
    # and the direct run would do work the proxied one does not.
    tls = {"ssl": common.client_ssl(ca)} if ca else {}
    return await common.connect_many(urls, compression=None, proxy=None, **tls)


async def scenario(boxes, args, pid, with_latency=True):
    """The saturation and latency scenarios on connected C{boxes};
    C{pid} is the process whose CPU time counts (the server)."""
    try:
        result = {}
        result["heartbeats_per_s"], result["cpu_s_per_1000_heartbeats"] = await saturate(
            boxes, args.seconds, "Heartbeat", {}, pid)
        result["meter_values_per_s"], result["cpu_s_per_1000_meter_values"] = await saturate(
            boxes, args.seconds, "MeterValues", METER, pid)
        if not with_latency:
            return result
        samples = await latency(boxes, args.seconds, args.rate)
        result["p50_ms"] = 1000 * common.percentile(samples, 0.5)
        result["p99_ms"] = 1000 * common.percentile(samples, 0.99)
        return result
    finally:
        for box in boxes:
            await box.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wallboxes", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--json", help="write the figures to this file too")
    parser.add_argument("--profile", help="run cfosproxy under cProfile, stats to this file")
    parser.add_argument(
        "--tls", action="store_true",
        help="everything over TLS: the wallboxes to cfosproxy (tls = on) and "
        "to the backend, and cfosproxy's backend legs (wss://)",
    )
    args = parser.parse_args()

    ca = None
    tls_files = None
    if args.tls:
        ca, *tls_files = common.make_certificates(tempfile.mkdtemp(prefix="cfosproxy-relay-"))
    backend = common.Backend(tls=tls_files).start()
    proxy = common.Proxy(
        [("w{}".format(i), "CB-{}".format(i), backend.url) for i in range(args.wallboxes)],
        mode="observe", profile=args.profile,
        server="tls = on\n" if args.tls else "",
        wallbox_extra="gateway_ca = {}\n".format(ca) if args.tls else "",
    )
    try:
        proxy.start()
        time.sleep(1)  # the start-up's garbage settles
        idle_rss = common.rss_kib(proxy.process.pid)

        async def run():
            boxes = await connect(["{}CB-{}".format(backend.url, i) for i in range(args.wallboxes)], ca)
            direct = await scenario(boxes, args, backend.process.pid)
            # cfosproxy made its self-signed certificate on start (it names
            # 127.0.0.1): with --tls the wallboxes trust exactly that one.
            own = os.path.join(proxy.directory, "var", "server-cert.pem") if args.tls else None
            scheme = "wss" if args.tls else "ws"
            boxes = await connect(
                [proxy.url("CB-{}".format(i), scheme) for i in range(args.wallboxes)], own
            )
            # Memory is read with every wallbox connected and its backend
            # leg open; the status API tells when they are.
            links, _ = await asyncio.get_running_loop().run_in_executor(
                None, common.wait_for_links, proxy.status_port, len(boxes), 120)
            loaded_rss = common.rss_kib(proxy.process.pid)
            proxied = await scenario(boxes, args, proxy.process.pid)
            floor = None
            if not args.tls:
                bare = common.BareRelay(backend.url).start()
                try:
                    boxes = await connect([bare.url("CB-{}".format(i)) for i in range(args.wallboxes)])
                    floor = await scenario(boxes, args, bare.process.pid, with_latency=False)
                finally:
                    bare.stop()
            return direct, proxied, floor, links, loaded_rss

        direct, proxied, floor, links, loaded_rss = asyncio.run(run())
    finally:
        proxy.stop()
        backend.stop()

    problems, lines = proxy.log_problems()
    figures = {
        "wallboxes": args.wallboxes,
        "tls": args.tls,
        "cpu_cores": os.cpu_count(),
        "startup_to_listening_s": round(proxy.startup_s, 3),
        "backend_links_open": links,
        "rss_per_wallbox_kib": round((loaded_rss - idle_rss) / args.wallboxes, 1),
        "direct": {k: round(v, 3) for k, v in direct.items()},
        "through_cfosproxy": {k: round(v, 3) for k, v in proxied.items()},
        "ratio_heartbeats": round(proxied["heartbeats_per_s"] / direct["heartbeats_per_s"], 3),
        "ratio_meter_values": round(proxied["meter_values_per_s"] / direct["meter_values_per_s"], 3),
        "bare_relay": floor and {k: round(v, 3) for k, v in floor.items()},
        "added_p50_ms": round(proxied["p50_ms"] - direct["p50_ms"], 3),
        "added_p99_ms": round(proxied["p99_ms"] - direct["p99_ms"], 3),
        "log_problems": problems,
        "log_problem_lines": lines,
        "proxy_directory": proxy.directory,
    }

    def row(name, key):
        ratio = proxied[key] / direct[key] if direct[key] else None
        return (name, direct[key], proxied[key], None if ratio is None else round(ratio, 3))

    rows = [
        row("heartbeat round trips/s", "heartbeats_per_s"),
        row("MeterValues round trips/s (stored)", "meter_values_per_s"),
        row("server CPU s per 1000 heartbeats", "cpu_s_per_1000_heartbeats"),
        row("server CPU s per 1000 MeterValues", "cpu_s_per_1000_meter_values"),
        row("p50 latency ms at {:.0f}/s".format(args.rate), "p50_ms"),
        row("p99 latency ms at {:.0f}/s".format(args.rate), "p99_ms"),
        ("RSS KiB per wallbox with its backend leg", None, figures["rss_per_wallbox_kib"], None),
    ]
    if floor:
        # The floor in the "direct" column: cfosproxy against a relay that
        # does none of its work.
        rows += [
            ("bare relay / cfosproxy: heartbeat round trips/s", floor["heartbeats_per_s"],
             proxied["heartbeats_per_s"], round(proxied["heartbeats_per_s"] / floor["heartbeats_per_s"], 3)),
            ("bare relay / cfosproxy: MeterValues round trips/s", floor["meter_values_per_s"],
             proxied["meter_values_per_s"], round(proxied["meter_values_per_s"] / floor["meter_values_per_s"], 3)),
            ("bare relay / cfosproxy: CPU s per 1000 heartbeats", floor["cpu_s_per_1000_heartbeats"],
             proxied["cpu_s_per_1000_heartbeats"], None),
            ("bare relay vs. direct: heartbeat ratio", direct["heartbeats_per_s"], floor["heartbeats_per_s"],
             round(floor["heartbeats_per_s"] / direct["heartbeats_per_s"], 3)),
        ]
    rows += [
        ("s from start to listening", None, figures["startup_to_listening_s"], None),
    ]
    common.report(
        "Relay: {} wallboxes{} (direct = backend alone; CPU: backend direct, cfosproxy via)".format(
            args.wallboxes, " over TLS" if args.tls else ""),
        rows, figures, args.json,
    )
    print("added latency p50 {added_p50_ms} ms, p99 {added_p99_ms} ms; "
          "cfosproxy logged {log_problems} warning/error lines".format(**figures))


if __name__ == "__main__":
    main()
