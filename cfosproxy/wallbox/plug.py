"""Plug the virtual wallbox's car in or out through its Modbus test
register 8200: ``python -m cfosproxy.wallbox.plug PORT on|off [HOST]``."""

import asyncio
import sys

from pymodbus.client import AsyncModbusTcpClient

from cfosproxy.wallbox.model import TEST_CAR


async def plug(host, port, plugged):
    """Write the test register; raise on a Modbus error."""
    client = AsyncModbusTcpClient(host, port=port)
    if not await client.connect():
        raise ConnectionError("no Modbus server at {}:{}".format(host, port))
    try:
        result = await client.write_register(TEST_CAR, 1 if plugged else 0, device_id=1)
        if result.isError():
            raise RuntimeError("the wallbox refused: {}".format(result))
    finally:
        client.close()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (2, 3) or argv[1] not in ("on", "off") or not argv[0].isdigit():
        print("usage: python -m cfosproxy.wallbox.plug PORT on|off [HOST]", file=sys.stderr)
        return 2
    host = argv[2] if len(argv) == 3 else "127.0.0.1"
    try:
        asyncio.run(plug(host, int(argv[0]), argv[1] == "on"))
    except (ConnectionError, RuntimeError, OSError) as e:
        print("cfoswallbox: {}".format(e), file=sys.stderr)
        return 1
    print("car {} at {}:{}".format("plugged in" if argv[1] == "on" else "unplugged", host, argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
