"""The contract every kit follows, and how a ``kit:`` handler finds its kit."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, ClassVar, Self

from syncworker.errors import ConfigError

KIT_PREFIX = "kit:"


class Kit(abc.ABC):
    """A family of job handlers sharing clients.

    ``open`` is called once before any handler runs (by the jobs service, or ``async with``);
    it connects what the handlers share and raises ``ConnectionFailed`` (with the reason,
    secrets left out) when a dependency is down: the service logs it and calls ``open``
    again later. ``close`` releases everything and may be called after a failed ``open``.
    ``handlers`` maps each handler's name (``image`` in ``kit:media.image``) to an async
    ``fn(payload, ctx=None)`` whose first parameter's pydantic annotation is the payload
    model. A handler raises ``PermanentError`` for input that can never succeed (dead at
    once, no retries) and anything else for a failure worth retrying.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def handlers(self) -> Mapping[str, Callable[..., Awaitable[Any]]]: ...

    async def __aenter__(self) -> Self:
        try:
            await self.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def is_kit_handler(path: str) -> bool:
    return path.startswith(KIT_PREFIX)


def split_kit_handler(path: str) -> tuple[str, str]:
    """``("media", "image")`` for ``kit:media.image``; ``ValueError`` when it is not that shape."""
    family, sep, name = path.removeprefix(KIT_PREFIX).partition(".")
    if not sep or not family or not name:
        raise ValueError(f"expected 'kit:FAMILY.NAME' (e.g. 'kit:media.image'), got {path!r}")
    return family, name


def resolve_kit_handler(path: str, kits: Mapping[str, Kit]) -> Callable[..., Awaitable[Any]]:
    """The handler ``kit:FAMILY.NAME`` names; ``ConfigError`` when the family is not
    configured or has no such handler (the message lists what there is)."""
    try:
        family, name = split_kit_handler(path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    kit = kits.get(family)
    if kit is None:
        known = ", ".join(sorted(kits)) or "none"
        raise ConfigError(
            f"{path!r}: the {family!r} kit is not configured; add jobs.kits.{family} "
            f"(configured kits: {known})"
        )
    handlers = kit.handlers()
    handler = handlers.get(name)
    if handler is None:
        raise ConfigError(
            f"{path!r}: the {family} kit has no handler {name!r}; it has: "
            + ", ".join(sorted(handlers))
        )
    return handler
