"""Test set-up shared by every test module.

The asyncio reactor must be installed before any test module imports
``twisted.internet.reactor``: the daemon runs on it (pymodbus needs asyncio),
so the tests do too.
"""

from cfosproxy.reactor import install_asyncio_reactor

install_asyncio_reactor()
