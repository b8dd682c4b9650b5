"""Pipeline events: ``sync_success``, ``sync_error``, ``worker_started``, ``worker_stopped``.

Handlers are plain or async callables taking one dict. A failing handler is logged and never
disturbs the pipeline.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

EVENT_NAMES = frozenset(
    {
        "sync_success",
        "sync_error",
        "worker_started",
        "worker_stopped",
        # Per batch, for metrics and dashboards; computed only when someone listens.
        "batch_committed",
        "batch_failed",
    }
)

Handler = Callable[[dict[str, Any]], Awaitable[None] | None]
log = structlog.get_logger(__name__)


class EventBus:
    """Subscribers by event name."""

    def __init__(self) -> None:
        self._handlers: defaultdict[str, list[Handler]] = defaultdict(list)

    def on(self, name: str, handler: Handler) -> Handler:
        """Subscribe ``handler`` to ``name``; returns it so this works as a decorator."""
        if name not in EVENT_NAMES:
            raise ValueError(f"unknown event {name!r}; expected one of {sorted(EVENT_NAMES)}")
        self._handlers[name].append(handler)
        return handler

    def has(self, name: str) -> bool:
        """Whether anyone listens to ``name`` (skip building a payload nobody reads)."""
        return bool(self._handlers.get(name))

    def off(self, name: str, handler: Handler) -> None:
        if handler in self._handlers[name]:
            self._handlers[name].remove(handler)

    async def emit(self, name: str, payload: dict[str, Any]) -> None:
        for handler in list(self._handlers[name]):
            try:
                result = handler(payload)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("event_handler_failed", event_name=name)
