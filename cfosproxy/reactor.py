"""Installing Twisted's asyncio reactor, which pymodbus 3 needs.

The twistd plugins call :func:`install_asyncio_reactor` before anything
imports the global reactor; a reactor chosen explicitly with ``--reactor``
other than ``asyncio`` is refused with a message that says what to do.
"""

import asyncio
import sys


class ReactorError(Exception):
    """The running process already has a reactor other than asyncio's."""


def install_asyncio_reactor():
    """Install the asyncio reactor, or accept it when it is already there.

    @return: the installed reactor.
    @raise ReactorError: another reactor is already installed.
    """
    if "twisted.internet.reactor" in sys.modules:
        from twisted.internet import asyncioreactor, reactor

        if isinstance(reactor, asyncioreactor.AsyncioSelectorReactor):
            return reactor
        raise ReactorError(
            "cfosproxy needs Twisted's asyncio reactor (pymodbus runs on "
            "asyncio), but {} is installed; run twistd without --reactor "
            "or with --reactor=asyncio".format(type(reactor).__name__)
        )
    from twisted.internet import asyncioreactor

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
    from twisted.internet import reactor

    return reactor
