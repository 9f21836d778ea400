"""What jobs that run on one worker thread while a UI polls them have in common.

A subclass keeps its progress and outcome under `_lock`, calls `_mark_ended()` (under the lock)
when the work is over, and implements `view()`: a consistent, frozen copy for one render.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

ViewT = TypeVar("ViewT")


class WorkerJob(Generic[ViewT]):
    """A job on a daemon thread.

    # NOTE: a daemon thread: a UI script reruns constantly and must not own the work; the caller
    # keeps the job (session state, a module registry) and polls view(). Only the worker writes
    # the state, always under _lock; readers get view() copies.
    """

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._ended: float | None = None

    def start(self, target: Callable[..., None], name: str, **kwargs: Any) -> None:
        """Run target(**kwargs) on a daemon thread called `name`."""
        self.thread = threading.Thread(target=target, kwargs=kwargs, name=name, daemon=True)
        self.thread.start()

    def _mark_ended(self) -> None:
        """Record that the work is over (call with _lock held)."""
        self._ended = time.monotonic()

    def _elapsed_s(self) -> float:
        """Seconds since the job was created, up to its end (call with _lock held)."""
        end = self._ended if self._ended is not None else time.monotonic()
        return end - self._started

    def view(self) -> ViewT:
        raise NotImplementedError

    def wait(self, timeout: float | None = None) -> ViewT:
        """Block until the worker ends (or `timeout` seconds pass); the current view."""
        if self.thread is not None:
            self.thread.join(timeout)
        return self.view()
