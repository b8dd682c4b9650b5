"""The storage contract, one set of cases for every store: a local directory and S3 (moto's
server, the real aioboto3 client)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pydantic
import pytest

from syncworker.jobs.kits.storage.base import Storage
from syncworker.jobs.kits.storage.config import StorageConfig, build_storage
from tests.fakes.s3 import S3Server, s3_server  # noqa: F401 - the fixture

ADAPTER: pydantic.TypeAdapter[object] = pydantic.TypeAdapter(StorageConfig)


@pytest.fixture(params=["local", "s3"])
async def store(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    s3_server: S3Server,  # noqa: F811
) -> AsyncIterator[Storage]:
    if request.param == "local":
        settings: dict[str, object] = {"type": "local", "path": str(tmp_path / "store")}
    else:
        settings = s3_server.storage_settings(s3_server.new_bucket())
    storage = build_storage(ADAPTER.validate_python(settings))
    await storage.open()
    try:
        yield storage
    finally:
        await storage.close()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


async def keys(store: Storage, prefix: str = "") -> list[str]:
    return [obj.key async for obj in store.list(prefix)]


async def test_round_trip_and_overwrite(store: Storage, tmp_path: Path) -> None:
    key = "media/u1/m1/image.webp"
    await store.upload(write(tmp_path / "a", b"first version"), key, "image/webp")
    await store.upload(write(tmp_path / "b", b"second"), key, "image/webp")
    assert await store.download(key, tmp_path / "out") == len(b"second")
    assert (tmp_path / "out").read_bytes() == b"second"
    assert await keys(store) == [key]


async def test_empty_object(store: Storage, tmp_path: Path) -> None:
    await store.upload(write(tmp_path / "empty", b""), "zero.bin", "application/octet-stream")
    assert await store.download("zero.bin", tmp_path / "out") == 0
    assert (tmp_path / "out").read_bytes() == b""


async def test_large_object_streams_both_ways(store: Storage, tmp_path: Path) -> None:
    # Past the 8 MiB part size: a multipart upload and a chunked download on S3.
    data = os.urandom(1024 * 1024) * 9 + b"tail"
    await store.upload(write(tmp_path / "big", data), "big/video.mp4", "video/mp4")
    assert await store.download("big/video.mp4", tmp_path / "out") == len(data)
    assert (tmp_path / "out").read_bytes() == data


async def test_missing_key_is_file_not_found(store: Storage, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="uploads/none"):
        await store.download("uploads/none", tmp_path / "out")


async def test_list_key_order_and_prefix(store: Storage, tmp_path: Path) -> None:
    names = ["a-b", "a/x", "a/y/z", "a0", "b", "media/u1/m1/t.jpg", "media/u10/m/t.jpg"]
    for name in reversed(names):
        await store.upload(write(tmp_path / "f", name.encode()), name, "text/plain")
    listed = [obj async for obj in store.list()]
    assert [obj.key for obj in listed] == sorted(names)
    assert {obj.key: obj.size for obj in listed}["media/u1/m1/t.jpg"] == len(b"media/u1/m1/t.jpg")
    assert all(obj.modified_at > 1.6e9 for obj in listed)
    assert await keys(store, "a/") == ["a/x", "a/y/z"]
    assert await keys(store, "media/u1") == ["media/u1/m1/t.jpg", "media/u10/m/t.jpg"]
    assert await keys(store, "none/") == []


async def test_delete_existing_and_missing(store: Storage, tmp_path: Path) -> None:
    for name in ["d/1", "d/2", "d/3"]:
        await store.upload(write(tmp_path / "f", b"x"), name, "text/plain")
    removed = await store.delete(["d/1", "d/3", "d/1"])
    assert removed == 2
    assert await keys(store) == ["d/2"]
    await store.delete(["d/never-there"])  # no error
    assert await keys(store) == ["d/2"]


async def test_url_round_trips_to_the_key(store: Storage) -> None:
    url = store.url("media/u1/m1/thumb 1.webp")
    assert store.key_of(url) == "media/u1/m1/thumb 1.webp"
    assert store.key_of("https://elsewhere.example/media/x.jpg") is None
