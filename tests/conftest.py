"""Test set-up shared by every test module.

The asyncio reactor must be installed before any test module imports
``twisted.internet.reactor``: the daemon runs on it (pymodbus needs asyncio),
so the tests do too.

Trial checks after each of its tests that no error was logged without the
test taking it, and that nothing is left on the global reactor. The
fixtures below do the same for plain pytest tests; a module of such tests
asks for them with
C{pytestmark = pytest.mark.usefixtures("logged_errors", "no_reactor_timers")}.
"""

import pytest
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from cfosproxy.reactor import install_asyncio_reactor

install_asyncio_reactor()


def _is_trial_test(request):
    """Trial's own checks already run for its test cases."""
    return isinstance(request.instance, unittest.SynchronousTestCase)


@pytest.fixture
def logged_errors(request):
    """The failures logged while the test runs.

    A test that expects an error takes it out of the list; any left at the
    end fail the test, as an error trial was not told to flush does.
    """
    failures = []

    def observer(event):
        if "log_failure" in event:
            failures.append(event["log_failure"])

    if _is_trial_test(request):
        yield failures
        return
    globalLogPublisher.addObserver(observer)
    yield failures
    globalLogPublisher.removeObserver(observer)
    if failures:
        pytest.fail(
            "errors logged: "
            + "; ".join(
                "{}: {}".format(failure.type.__name__, failure.getErrorMessage())
                for failure in failures
            )
        )


@pytest.fixture
def no_reactor_timers(request):
    """Code tested with a fake clock leaves no call on the global reactor."""
    from twisted.internet import reactor

    before = set(reactor.getDelayedCalls())
    yield
    if _is_trial_test(request):
        return
    left = [call for call in reactor.getDelayedCalls() if call not in before]
    for call in left:
        call.cancel()
    assert not left, "calls left on the global reactor: {}".format(left)
