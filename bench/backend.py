"""The benchmarks' backend peer: a minimal OCPP 1.6 central system that
answers every CALL at once.

    python bench/backend.py --port P [--log calls.jsonl] [--cert C --key K]

Prints ``ready`` once it listens. With ``--log`` it appends one JSON line per
CALL received, ``[client id, unique id, action, payload]``, flushed as it
goes, so that a benchmark can account for every transaction message even
across restarts of this process. Transaction ids continue across restarts
too (they start from the number of lines already in the log).
"""

import argparse
import asyncio
import itertools
import json
import signal
import ssl

from websockets.asyncio.server import serve

NOW = "2026-01-01T00:00:00Z"


def answer(action, ids):
    if action == "BootNotification":
        return {"status": "Accepted", "currentTime": NOW, "interval": 300}
    if action == "Heartbeat":
        return {"currentTime": NOW}
    if action == "Authorize":
        return {"idTagInfo": {"status": "Accepted"}}
    if action == "StartTransaction":
        return {"transactionId": next(ids), "idTagInfo": {"status": "Accepted"}}
    if action == "DataTransfer":
        return {"status": "Accepted"}
    return {}


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument(
        "--backlog", type=int, default=1024,
        help="listen backlog, as cfosproxy's (asyncio's own is 100): a "
        "reconnect storm must not measure TCP retries in the direct run",
    )
    args = parser.parse_args()

    start = 1
    log = None
    if args.log:
        try:
            with open(args.log) as f:
                start += sum(1 for _ in f)
        except FileNotFoundError:
            pass
        log = open(args.log, "a")
    ids = itertools.count(start)
    context = None
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)

    async def handler(ws):
        client = ws.request.path.rstrip("/").rsplit("/", 1)[-1]
        async for text in ws:
            frame = json.loads(text)
            if frame[0] != 2:
                continue
            if log is not None:
                log.write(json.dumps([client, frame[1], frame[2], frame[3]]) + "\n")
                log.flush()
            await ws.send(json.dumps([3, frame[1], answer(frame[2], ids)]))

    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(
        handler, "127.0.0.1", args.port, subprotocols=["ocpp1.6"], max_size=2**20,
        ssl=context, ping_interval=None, backlog=args.backlog,
    ):
        print("ready", flush=True)
        await stop


if __name__ == "__main__":
    asyncio.run(main())
