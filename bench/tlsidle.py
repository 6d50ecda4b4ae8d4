"""Silent TLS connections: what each costs cfosproxy while it is open, and
whether the memory comes back once cfosproxy has closed them.

    python bench/tlsidle.py [--connections 3000] [--rounds 4] [--tls on] [--json out.json]

cfosproxy runs under ``twistd -n`` with ``tls = on`` (or ``detect``) and its
self-signed certificate. Each round opens --connections TLS connections
(--concurrency handshakes at a time), completes each TLS handshake, and
then sends nothing: no HTTP upgrade, as a client that stalls after TLS.
cfosproxy closes each of them at its open-handshake timeout (10 s). The
round ends when every connection has been closed by cfosproxy; --settle
seconds later (15: cfosproxy gives back what a burst of closed connections
left within 10 s) the RSS is read and the next round starts.

Per round: cfosproxy's RSS before, with every connection open, and after
they were closed; the RSS per open connection; the open file descriptors
after the round (all closed: back to where they were). The growth from the
first round's end to the last one's is what the closed connections left
behind.
"""

import argparse
import asyncio
import ssl
import sys
import time

import common


async def _one(port, context, opened, closed, errors, limit):
    """One silent TLS connection: handshake, then wait for the server to
    close it."""
    async with limit:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=context), 60
            )
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            return
    opened.append(writer)
    try:
        await asyncio.wait_for(reader.read(), 120)
    except (OSError, ssl.SSLError, asyncio.TimeoutError):
        pass
    closed.append(writer)
    writer.close()


async def _round(port, count, concurrency, pid, samples):
    context = common.client_ssl()
    opened, closed, errors = [], [], {}
    limit = asyncio.Semaphore(concurrency)
    tasks = [asyncio.ensure_future(_one(port, context, opened, closed, errors, limit))
             for _ in range(count)]
    started = time.monotonic()
    # The largest RSS while the connections are open.
    peak = 0
    while not all(task.done() for task in tasks):
        peak = max(peak, common.rss_kib(pid))
        if len(opened) == count - sum(errors.values()) and not closed:
            samples.append(common.rss_kib(pid))
        await asyncio.sleep(0.2)
    await asyncio.gather(*tasks)
    return {
        "opened": len(opened),
        "closed_by_server": len(closed),
        "errors": errors,
        "peak_rss_kib": peak,
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--tls", choices=("on", "detect"), default="on")
    # cfosproxy gives back what a burst of closed connections left within
    # 10 s (cfosproxy.ops.memory): the RSS after a round is read after that.
    parser.add_argument("--settle", type=float, default=15.0)
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    proxy = common.Proxy([("a", "CB-1", None)], server="tls = {}\n".format(args.tls)).start()
    pid = proxy.process.pid
    rounds = []
    try:
        time.sleep(args.settle)
        start_rss, start_fds = common.rss_kib(pid), common.open_fds(pid)
        for _ in range(args.rounds):
            before = common.rss_kib(pid)
            samples = []
            result = asyncio.run(_round(proxy.port, args.connections, args.concurrency, pid, samples))
            time.sleep(args.settle)
            result.update(
                rss_before_kib=before,
                rss_all_open_kib=max(samples) if samples else None,
                rss_after_kib=common.rss_kib(pid),
                fds_after=common.open_fds(pid),
            )
            # All open at once (or, when the first ones were closed before
            # the last opened, as many as were open at the peak: an upper
            # bound on the count, so a lower bound per connection).
            top = max(samples) if samples else result["peak_rss_kib"]
            if result["opened"]:
                result["kib_per_open_connection"] = round((top - before) / result["opened"], 1)
            rounds.append(result)
            print(result, file=sys.stderr)
        problems, first = proxy.log_problems()
    finally:
        proxy.stop()

    after = [r["rss_after_kib"] for r in rounds]
    figures = {
        "tls": args.tls,
        "connections": args.connections,
        "rss_start_kib": start_rss,
        "fds_start": start_fds,
        "rounds": rounds,
        "rss_after_each_round_kib": after,
        # What the closed connections left behind, from the first round's
        # end to the last one's.
        "growth_after_first_round_kib": after[-1] - after[0],
        "growth_per_later_round_kib": round((after[-1] - after[0]) / max(1, len(after) - 1)),
        "log_problems": problems,
        "directory": proxy.directory,
    }
    per_open = [r.get("kib_per_open_connection") for r in rounds if r.get("kib_per_open_connection")]
    rows = [
        ("RSS at start, KiB", None, start_rss, None),
        ("RSS after each round, KiB", None, " ".join(str(a) for a in after), None),
        ("growth from round 1 to {}, KiB".format(len(after)), None, after[-1] - after[0], None),
        ("KiB per open connection (each round)", None, " ".join(str(p) for p in per_open), None),
        ("fds at start / after the last round", None, "{} / {}".format(start_fds, rounds[-1]["fds_after"]), None),
    ]
    common.report("{} silent TLS connections x {} rounds (tls = {})".format(
        args.connections, args.rounds, args.tls), rows, figures, args.json)


if __name__ == "__main__":
    main()
