"""One way for a test to wait on a condition: poll it, and fail naming what never happened."""

from __future__ import annotations

from collections.abc import Callable

from modelcache.testing.ports import wait_until


def wait_for(condition: Callable[[], object], what: str, timeout: float = 90) -> None:
    """Poll `condition` until it is truthy; fail the test naming `what` after `timeout` s."""
    try:
        wait_until(lambda: bool(condition()), timeout=timeout, what=what, interval=0.05)
    except TimeoutError as error:
        raise AssertionError(str(error)) from None
