"""Waiting for something another process does (a cluster, a launcher, a worker) by asking again until it is
done or a deadline passes: tenacity's Retrying, in the one shape every such wait here has."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import Retrying, retry_if_not_result, stop_after_delay, wait_fixed

T = TypeVar("T")


def wait_until(read: Callable[[], T], done: Callable[[T], bool], timeout_s: float, every_s: float) -> T | None:
    """Call `read` every `every_s` seconds until `done` holds for what it returned, and return that; None once
    `timeout_s` passed without it. An exception of `read` ends the wait at once (it is raised)."""
    poll = Retrying(
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(every_s),
        retry=retry_if_not_result(done),
        retry_error_callback=lambda _: None,
    )
    return poll(read)
