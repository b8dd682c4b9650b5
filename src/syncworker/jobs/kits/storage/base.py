"""The storage contract the media and clean-up kits share.

Keys are object keys (``media/u1/m1/image.webp``), never paths: a local store refuses a key
that would leave its directory. Transfers stream to and from files, so a large video is
never held in memory.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int
    modified_at: float
    """Seconds since the epoch."""


class Storage(abc.ABC):
    """``open`` connects (``ConnectionFailed`` with the reason when the store is unreachable
    or refuses the credentials); ``close`` may follow a failed ``open``. ``download`` raises
    ``FileNotFoundError`` naming the key when it does not exist; every other failure is an
    exception worth retrying. ``upload`` of an existing key overwrites it (a re-run of the
    same job writes the same keys, never new ones)."""

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def download(self, key: str, path: Path) -> int:
        """Writes the object to ``path``; returns its size in bytes."""

    @abc.abstractmethod
    async def upload(self, path: Path, key: str, content_type: str) -> None: ...

    @abc.abstractmethod
    async def delete(self, keys: Iterable[str]) -> int:
        """Removes the keys that exist (missing ones are not an error); returns how many.

        A key given twice counts once. S3 cannot tell a missing key from a deleted one, so
        its count includes keys that were already gone; the local store counts files."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> AsyncIterator[StoredObject]:
        """Every object under ``prefix``, in key order, page by page."""

    @abc.abstractmethod
    def url(self, key: str) -> str:
        """What the ``messages`` row stores for ``key`` (``s3://bucket/key``, a public base
        URL + key when configured, or ``file://`` for a local store)."""

    @abc.abstractmethod
    def key_of(self, url: str) -> str | None:
        """The key ``url`` (as ``url`` made it) points at; None when it is not this store's."""
