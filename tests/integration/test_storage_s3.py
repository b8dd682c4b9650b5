"""What only the S3 store does: open's errors, the bucket prefix, deletes 1,000 keys per
request, lists across pages, multipart uploads aborted on failure (the contract cases shared
with the local store are in test_storage.py)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from syncworker.errors import ConnectionFailed
from syncworker.jobs.kits.storage.config import S3StorageConfig
from syncworker.jobs.kits.storage.s3 import S3Storage
from tests.fakes.s3 import S3Server, s3_server  # noqa: F401 - the fixture


def s3_store(server: S3Server, bucket: str, **extra: Any) -> S3Storage:
    return S3Storage(S3StorageConfig.model_validate(server.storage_settings(bucket, **extra)))


@pytest.fixture
async def store(s3_server: S3Server) -> AsyncIterator[S3Storage]:  # noqa: F811
    storage = s3_store(s3_server, s3_server.new_bucket())
    await storage.open()
    try:
        yield storage
    finally:
        await storage.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_open_fails_clearly_without_leaking_the_secret(s3_server: S3Server) -> None:  # noqa: F811
    missing = s3_store(s3_server, "no-such-bucket-here")
    with pytest.raises(ConnectionFailed, match="does not exist") as caught:
        await missing.open()
    assert "testing-secret-key" not in str(caught.value)
    await missing.close()
    unreachable = s3_store(
        s3_server,
        "bucket",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region="eu-west-1",
        max_attempts=1,
    )
    with pytest.raises(ConnectionFailed, match=r"bucket 'bucket' at http://127\.0\.0\.1") as caught:
        await unreachable.open()
    assert "testing-secret-key" not in str(caught.value)


async def test_prefix_is_inside_the_bucket_and_hidden_from_keys(
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    bucket = s3_server.new_bucket()
    (tmp_path / "f").write_bytes(b"data")
    store = s3_store(s3_server, bucket, prefix="messenger/")
    await store.open()
    try:
        await store.upload(tmp_path / "f", "media/u1/a.jpg", "image/jpeg")
        assert [obj.key async for obj in store.list()] == ["media/u1/a.jpg"]
        assert store.url("media/u1/a.jpg") == f"s3://{bucket}/messenger/media/u1/a.jpg"
        assert store.key_of(f"s3://{bucket}/messenger/media/u1/a.jpg") == "media/u1/a.jpg"
        assert store.key_of(f"s3://{bucket}/other/media/u1/a.jpg") is None
        head = s3_server.client().head_object(Bucket=bucket, Key="messenger/media/u1/a.jpg")
        assert head["ContentType"] == "image/jpeg"
        assert await store.delete(["media/u1/a.jpg"]) == 1
        assert s3_server.client().list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    finally:
        await store.close()


async def test_delete_in_batches_of_a_thousand_and_list_across_pages(
    store: S3Storage,
    s3_server: S3Server,  # noqa: F811
) -> None:
    keys = [f"orphans/{number:05d}" for number in range(2100)]
    s3_server.seed_empty_objects(store.config.bucket, keys)
    pages: list[int] = []
    store.client.meta.events.register(
        "after-call.s3.ListObjectsV2", lambda parsed, **_: pages.append(parsed.get("KeyCount"))
    )
    requests: list[int] = []
    store.client.meta.events.register(
        "before-call.s3.DeleteObjects",
        lambda params, **_: requests.append(params["body"].count(b"<Key>")),
    )
    assert [obj.key async for obj in store.list("orphans/")] == keys
    assert pages == [1000, 1000, 100]
    assert await store.delete(keys) == 2100
    assert requests == [1000, 1000, 100]
    assert [obj.key async for obj in store.list()] == []


async def test_a_failed_multipart_upload_is_aborted(
    store: S3Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * (store.config.part_size_bytes * 2 + 1))
    calls = 0
    real_upload_part = store.client.upload_part

    async def flaky_upload_part(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if kwargs["PartNumber"] == 2:
            raise ConnectionResetError("network dropped")
        return await real_upload_part(**kwargs)

    monkeypatch.setattr(store.client, "upload_part", flaky_upload_part)
    with pytest.raises(ConnectionResetError, match="network dropped"):
        await store.upload(big, "big.bin", "application/octet-stream")
    assert calls >= 2
    uploads = await store.client.list_multipart_uploads(Bucket=store.config.bucket)
    assert uploads.get("Uploads", []) == []
    assert [obj.key async for obj in store.list()] == []
