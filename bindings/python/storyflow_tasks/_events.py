"""Wakes asyncio waiters from the library's change feed without blocking any event loop.

One daemon thread per process long-polls ``sft_wait_events`` (GIL released)
and, for each event, wakes the coroutines that subscribed to that task, through
``loop.call_soon_threadsafe``. However many coroutines wait, and on however
many loops, it costs one thread, and no coroutine ever makes a blocking call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from typing import Any, Dict, List, Optional, Set

from ._native import SFT_ERR_TIMEOUT, SFT_OK, Native

__all__ = ["Subscription", "EventHub"]

_logger = logging.getLogger("storyflow_tasks")

# Long enough to cost nothing while idle, short enough to notice that the last subscriber left.
_POLL_MS = 2000
_BATCH = 1024


class Subscription:
    """A coroutine's interest in one task: ``changed`` is set after each of its events."""

    __slots__ = ("task_id", "loop", "changed", "_wake_scheduled")

    def __init__(self, task_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.task_id = task_id
        self.loop = loop
        self.changed = asyncio.Event()
        self._wake_scheduled = False

    def wake(self) -> None:
        """Called on the feed thread; coalesces bursts into one wake-up of the loop."""
        if self._wake_scheduled:
            return
        self._wake_scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is left to wake
            self.loop.call_soon_threadsafe(self._set)

    def _set(self) -> None:
        self._wake_scheduled = False
        self.changed.set()


class EventHub:
    """The feed thread and the subscriptions it serves."""

    def __init__(self, native: Native) -> None:
        self._native = native
        self._condition = threading.Condition(threading.Lock())
        self._by_task: Dict[str, Set[Subscription]] = {}
        self._cursor = 0
        self._thread: Optional[threading.Thread] = None

    def subscribe(self, task_id: str, loop: asyncio.AbstractEventLoop) -> Subscription:
        """Registers interest in ``task_id``; every event from now on wakes the subscription."""
        subscription = Subscription(task_id, loop)
        with self._condition:
            if not self._by_task:
                # Idle until now: start from the present, so that no event after this call is missed.
                self._cursor = max(self._cursor, self._native.sft_last_event_seq())
            self._by_task.setdefault(task_id, set()).add(subscription)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="storyflow-tasks-events", daemon=True)
                self._thread.start()
            self._condition.notify()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Drops a subscription; safe to call twice."""
        with self._condition:
            subscribers = self._by_task.get(subscription.task_id)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._by_task[subscription.task_id]

    def _serve(self) -> None:
        native = self._native
        while True:
            with self._condition:
                while not self._by_task:
                    self._condition.wait()
                cursor = self._cursor
            code, text = native.call_with_out_string(native.sft_wait_events, cursor, _BATCH, _POLL_MS)
            if code == SFT_ERR_TIMEOUT:
                continue
            if code != SFT_OK or text is None:
                _logger.error("storyflow_tasks: the change feed failed (%s); retrying", native.result_name(code))
                continue
            self._dispatch(cursor, json.loads(text))

    def _dispatch(self, cursor: int, events: List[Dict[str, Any]]) -> None:
        flooded = len(events) >= _BATCH
        # Under a flood (a task reporting progress in a tight loop) reading every event would
        # cost a core: jump to the present instead and let every subscriber re-read its status.
        newest = self._native.sft_last_event_seq() if flooded else events[-1]["seq"]
        with self._condition:
            self._cursor = max(self._cursor, newest)
            if flooded or events[0]["seq"] > cursor + 1:
                # Events were skipped here or dropped by the feed: anyone may have missed one.
                woken = [s for subscribers in self._by_task.values() for s in subscribers]
            else:
                woken = [s for event in events for s in self._by_task.get(event["task_id"], ())]
        for subscription in woken:
            subscription.wake()
