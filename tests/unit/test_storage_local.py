"""The local directory store: keys stay inside the directory, uploads replace atomically,
lists come in key order, URLs round-trip. (The contract cases shared with S3 are in
tests/integration/test_storage.py.)"""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from syncworker.errors import ConnectionFailed, PermanentError
from syncworker.jobs.kits.storage.config import (
    LocalStorageConfig,
    S3StorageConfig,
    StorageConfig,
    build_storage,
)
from syncworker.jobs.kits.storage.local import LocalStorage

ADAPTER: pydantic.TypeAdapter[LocalStorageConfig | S3StorageConfig] = pydantic.TypeAdapter(
    StorageConfig
)


async def local_store(root: Path, **extra: str) -> LocalStorage:
    store = build_storage(ADAPTER.validate_python({"type": "local", "path": str(root), **extra}))
    assert isinstance(store, LocalStorage)
    await store.open()
    return store


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_config_picks_the_store_by_type_and_hides_secrets() -> None:
    s3 = ADAPTER.validate_python(
        {
            "type": "s3",
            "bucket": "media",
            "access_key_id": "AKIA123",
            "secret_access_key": "hush-hush",
            "endpoint_url": "",
        }
    )
    assert isinstance(s3, S3StorageConfig)
    assert s3.endpoint_url is None
    assert "hush-hush" not in repr(s3)
    assert s3.secret_access_key is not None
    assert s3.secret_access_key.get_secret_value() == "hush-hush"
    with pytest.raises(pydantic.ValidationError, match="path"):
        ADAPTER.validate_python({"type": "local"})
    with pytest.raises(pydantic.ValidationError):
        ADAPTER.validate_python({"type": "ftp", "path": "/tmp"})
    with pytest.raises(pydantic.ValidationError, match="bath"):
        ADAPTER.validate_python({"type": "local", "path": "/tmp", "bath": 1})


async def test_open_creates_the_directory_and_fails_clearly_when_it_cannot(
    tmp_path: Path,
) -> None:
    await local_store(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConnectionFailed, match="cannot create"):
        await local_store(tmp_path / "file" / "sub")


async def test_upload_download_overwrite(tmp_path: Path) -> None:
    store = await local_store(tmp_path / "store")
    await store.upload(write(tmp_path / "one", b"first"), "media/u1/m1/image.webp", "image/webp")
    await store.upload(write(tmp_path / "two", b"second!"), "media/u1/m1/image.webp", "image/webp")
    size = await store.download("media/u1/m1/image.webp", tmp_path / "out")
    assert size == 7
    assert (tmp_path / "out").read_bytes() == b"second!"
    leftovers = [p.name for p in (tmp_path / "store" / "media/u1/m1").iterdir()]
    assert leftovers == ["image.webp"]


async def test_download_of_a_missing_key_names_it(tmp_path: Path) -> None:
    store = await local_store(tmp_path / "store")
    with pytest.raises(FileNotFoundError, match=r"media/none\.jpg"):
        await store.download("media/none.jpg", tmp_path / "out")
    (tmp_path / "store" / "media" / "dir").mkdir(parents=True)
    with pytest.raises(FileNotFoundError):
        await store.download("media/dir", tmp_path / "out")


@pytest.mark.parametrize(
    "key", ["", "../escape", "a/../../b", "/etc/passwd", "a//b", "a\\b", "./a", "a/"]
)
async def test_keys_that_would_leave_the_directory_are_refused(tmp_path: Path, key: str) -> None:
    store = await local_store(tmp_path / "store")
    with pytest.raises(PermanentError, match="invalid storage key"):
        await store.download(key, tmp_path / "out")
    with pytest.raises(PermanentError):
        await store.upload(write(tmp_path / "f", b"x"), key, "text/plain")
    assert not (tmp_path / "escape").exists()


async def test_list_in_key_order_with_prefix_and_delete(tmp_path: Path) -> None:
    store = await local_store(tmp_path / "store")
    keys = ["a-b", "a/x", "a/y/z", "a0", "b", "media/u1/m1/t.jpg", "media/u10/m/t.jpg"]
    for key in reversed(keys):
        await store.upload(write(tmp_path / "f", key.encode()), key, "text/plain")
    listed = [obj async for obj in store.list()]
    assert [obj.key for obj in listed] == sorted(keys)
    assert listed[0].size == len(b"a-b")
    assert [obj.key async for obj in store.list("a/")] == ["a/x", "a/y/z"]
    assert [obj.key async for obj in store.list("media/u1")] == [
        "media/u1/m1/t.jpg",
        "media/u10/m/t.jpg",
    ]
    assert [obj.key async for obj in store.list("nothing/")] == []
    assert await store.delete(["a/y/z", "a/y/z", "missing", "media/u1/m1/t.jpg"]) == 2
    assert [obj.key async for obj in store.list("a/")] == ["a/x"]
    # the emptied directories go too, the store root stays
    assert not (tmp_path / "store" / "a" / "y").exists()
    assert not (tmp_path / "store" / "media" / "u1").exists()
    assert (tmp_path / "store").is_dir()


async def test_list_pages_through_many_objects(tmp_path: Path) -> None:
    store = await local_store(tmp_path / "store")
    folder = tmp_path / "store" / "many"
    folder.mkdir()
    for number in range(2500):
        (folder / f"{number:05d}").write_bytes(b"")
    keys = [obj.key async for obj in store.list()]
    assert keys == [f"many/{number:05d}" for number in range(2500)]


async def test_url_and_key_of_round_trip(tmp_path: Path) -> None:
    store = await local_store(tmp_path / "store")
    url = store.url("media/u1/m1/a b.jpg")
    assert url.startswith("file://")
    assert store.key_of(url) == "media/u1/m1/a b.jpg"
    assert store.key_of("file:///elsewhere/x.jpg") is None
    assert store.key_of("https://cdn.example/x.jpg") is None
    public = await local_store(tmp_path / "store", public_base_url="https://cdn.example/m/")
    assert public.url("u1/x.jpg") == "https://cdn.example/m/u1/x.jpg"
    assert public.key_of("https://cdn.example/m/u1/x.jpg") == "u1/x.jpg"
    assert public.key_of("https://cdn.example/m/../x.jpg") is None
