"""A local directory as object storage: a key ``media/u1/m1/image.webp`` is that path under
the directory. Uploads land in a hidden partial file first and are renamed into place, so a
reader (or ``list``) never sees half an object and a re-run simply replaces it."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

from syncworker.errors import ConnectionFailed, PermanentError
from syncworker.jobs.kits.storage.base import Storage, StoredObject
from syncworker.jobs.kits.storage.config import LocalStorageConfig

PARTIAL_SUFFIX = ".syncworker-partial"
_LIST_PAGE = 1000


class InvalidKey(PermanentError):
    """A key that is not a relative object key (``..``, absolute, empty parts): it names
    nothing in this store and never will, so a job holding it is dead at once."""


def check_key(key: str) -> str:
    """``key`` unchanged when it is a plain relative key; ``InvalidKey`` otherwise."""
    parts = key.split("/")
    if (
        not key
        or "\\" in key
        or "\x00" in key
        or any(part in ("", ".", "..") for part in parts)
        or key.endswith(PARTIAL_SUFFIX)
    ):
        raise InvalidKey(f"invalid storage key {key!r}: expected a relative key like 'a/b.jpg'")
    return key


class LocalStorage(Storage):
    def __init__(self, config: LocalStorageConfig) -> None:
        self.config = config
        self.root = config.path.resolve()

    async def open(self) -> None:
        try:
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConnectionFailed(
                f"local storage {str(self.root)!r}: cannot create: {exc.strerror}"
            ) from exc
        if not os.access(self.root, os.W_OK):
            raise ConnectionFailed(f"local storage {str(self.root)!r}: not writable")

    async def close(self) -> None:
        return None

    def path_of(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    async def download(self, key: str, path: Path) -> int:
        source = self.path_of(key)
        try:
            return await asyncio.to_thread(_copy, source, path)
        except FileNotFoundError:
            raise FileNotFoundError(f"local storage: no object {key!r}") from None
        except IsADirectoryError:
            raise FileNotFoundError(f"local storage: no object {key!r} (a directory)") from None

    async def upload(self, path: Path, key: str, content_type: str) -> None:
        await asyncio.to_thread(self._upload, path, self.path_of(key))

    @staticmethod
    def _upload(path: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}")
        try:
            shutil.copyfile(path, partial)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)

    async def delete(self, keys: Iterable[str]) -> int:
        paths = [self.path_of(key) for key in keys]
        return await asyncio.to_thread(self._delete, paths)

    def _delete(self, paths: list[Path]) -> int:
        removed = 0
        for path in paths:
            try:
                path.unlink()
            except (FileNotFoundError, IsADirectoryError):
                continue
            removed += 1
            self._prune_empty_dirs(path.parent)
        return removed

    def _prune_empty_dirs(self, directory: Path) -> None:
        # Empty directories would pile up under media/{user}/{message}/ as objects are deleted.
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    async def list(self, prefix: str = "") -> AsyncIterator[StoredObject]:
        walk = _walk(self.root, "", prefix)
        while True:
            page = await asyncio.to_thread(_take, walk, _LIST_PAGE)
            for item in page:
                yield item
            if len(page) < _LIST_PAGE:
                return

    def url(self, key: str) -> str:
        check_key(key)
        if self.config.public_base_url:
            return self.config.public_base_url + key
        return self.path_of(key).as_uri()

    def key_of(self, url: str) -> str | None:
        base = self.config.public_base_url
        if base and url.startswith(base):
            key = url[len(base) :]
        elif url.startswith("file://"):
            path = Path(unquote(urlsplit(url).path))
            if self.root not in path.parents:
                return None
            key = path.relative_to(self.root).as_posix()
        else:
            return None
        try:
            return check_key(key)
        except InvalidKey:
            return None


def _walk(directory: Path, key_prefix: str, prefix: str) -> Iterator[StoredObject]:
    """Objects under ``directory`` in key order: entries sorted with a directory named as
    ``name/``, so ``a/x`` comes after ``a-b`` exactly as the keys compare."""
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return
    named = sorted(
        (entry.name + ("/" if entry.is_dir(follow_symlinks=False) else ""), entry)
        for entry in entries
    )
    for name, entry in named:
        key = key_prefix + name
        if name.endswith("/"):
            if key.startswith(prefix) or prefix.startswith(key):
                yield from _walk(Path(entry.path), key, prefix)
        elif key.startswith(prefix) and entry.is_file() and not name.endswith(PARTIAL_SUFFIX):
            stat = entry.stat()
            yield StoredObject(key=key, size=stat.st_size, modified_at=stat.st_mtime)


def _copy(source: Path, target: Path) -> int:
    shutil.copyfile(source, target)
    return target.stat().st_size


def _take(items: Iterator[StoredObject], count: int) -> list[StoredObject]:
    page: list[StoredObject] = []
    for item in items:
        page.append(item)
        if len(page) == count:
            break
    return page
