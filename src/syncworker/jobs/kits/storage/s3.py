"""S3 (or an S3-compatible store) through aioboto3.

Downloads stream the object's body to the file chunk by chunk; uploads are one PUT up to
``part_size_bytes`` and a multipart upload above, reading the file part by part with at
most ``max_concurrency`` parts in flight, so no large object is ever held whole in memory.
(aioboto3's ``upload_file`` hands aiohttp raw bytes, which it warns may block the loop.)
Deletes go 1,000 keys per ``DeleteObjects`` request (S3's limit); lists follow the
``ListObjectsV2`` paginator.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, BinaryIO

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from syncworker.errors import ConnectionFailed, PermanentError
from syncworker.jobs.kits.storage.base import Storage, StoredObject
from syncworker.jobs.kits.storage.config import S3StorageConfig

DELETE_BATCH = 1000
"""Keys per DeleteObjects request: S3's maximum."""
_READ_CHUNK_BYTES = 1024 * 1024
_MISSING = {"404", "NoSuchKey", "NotFound"}


class S3Storage(Storage):
    def __init__(self, config: S3StorageConfig) -> None:
        self.config = config
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("S3 storage is not open")
        return self._client

    def where(self) -> str:
        """The store for messages: bucket and endpoint, never the credentials."""
        endpoint = f" at {self.config.endpoint_url}" if self.config.endpoint_url else ""
        return f"s3 bucket {self.config.bucket!r}{endpoint}"

    async def open(self) -> None:
        if self._client is not None:
            return
        stack = contextlib.AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(self._session_client())
            await self._client.head_bucket(Bucket=self.config.bucket)
        except (ClientError, BotoCoreError) as exc:
            await stack.aclose()
            self._client = None
            raise ConnectionFailed(f"{self.where()}: {describe(exc)}") from None
        except BaseException:
            await stack.aclose()
            self._client = None
            raise
        self._stack = stack

    def _session_client(self) -> Any:
        config = self.config
        key_id = config.access_key_id.get_secret_value() if config.access_key_id else None
        secret = config.secret_access_key.get_secret_value() if config.secret_access_key else None
        session = aioboto3.Session()
        return session.client(
            "s3",
            region_name=config.region,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            endpoint_url=config.endpoint_url,
            config=AioConfig(
                connect_timeout=10,
                read_timeout=60,
                retries={"max_attempts": config.max_attempts, "mode": "standard"},
                max_pool_connections=max(10, config.max_concurrency * 2),
            ),
        )

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    def object_key(self, key: str) -> str:
        if not key:
            raise PermanentError("invalid storage key '': expected a key like 'a/b.jpg'")
        return self.config.prefix + key

    async def download(self, key: str, path: Path) -> int:
        try:
            response = await self.client.get_object(
                Bucket=self.config.bucket, Key=self.object_key(key)
            )
        except ClientError as exc:
            if error_code(exc) in _MISSING:
                raise FileNotFoundError(f"{self.where()}: no object {key!r}") from None
            raise
        body = response["Body"]
        size = 0
        try:
            with await asyncio.to_thread(path.open, "wb") as file:
                async for chunk in body.iter_chunks(_READ_CHUNK_BYTES):
                    await asyncio.to_thread(file.write, chunk)
                    size += len(chunk)
        finally:
            body.close()
        return size

    async def upload(self, path: Path, key: str, content_type: str) -> None:
        size = (await asyncio.to_thread(path.stat)).st_size
        with await asyncio.to_thread(path.open, "rb") as file:
            if size <= self.config.part_size_bytes:
                body = io.BytesIO(await asyncio.to_thread(file.read))
                await self.client.put_object(
                    Bucket=self.config.bucket,
                    Key=self.object_key(key),
                    Body=body,
                    ContentType=content_type,
                )
            else:
                await self._upload_parts(file, self.object_key(key), content_type)

    async def _upload_parts(self, file: BinaryIO, object_key: str, content_type: str) -> None:
        """A multipart upload holding at most ``max_concurrency`` parts in memory; aborted
        on any failure or cancel so no half upload is left billed in the bucket."""
        bucket = self.config.bucket
        started = await self.client.create_multipart_upload(
            Bucket=bucket, Key=object_key, ContentType=content_type
        )
        upload_id = started["UploadId"]
        try:
            parts = await self._send_parts(file, object_key, upload_id)
            await self.client.complete_multipart_upload(
                Bucket=bucket,
                Key=object_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    self.client.abort_multipart_upload(
                        Bucket=bucket, Key=object_key, UploadId=upload_id
                    )
                )
            raise

    async def _send_parts(
        self, file: BinaryIO, object_key: str, upload_id: str
    ) -> list[dict[str, Any]]:
        window = asyncio.Semaphore(self.config.max_concurrency)
        parts: dict[int, str] = {}

        async def send(number: int, chunk: bytes) -> None:
            try:
                answer = await self.client.upload_part(
                    Bucket=self.config.bucket,
                    Key=object_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=io.BytesIO(chunk),
                )
                parts[number] = answer["ETag"]
            finally:
                window.release()

        try:
            async with asyncio.TaskGroup() as group:
                number = 0
                while True:
                    await window.acquire()
                    chunk = await asyncio.to_thread(file.read, self.config.part_size_bytes)
                    if not chunk:
                        window.release()
                        break
                    number += 1
                    group.create_task(send(number, chunk), name=f"s3-part-{number}")
        except ExceptionGroup as group_error:
            # The caller classifies one failure (the first part that failed), not a group.
            raise group_error.exceptions[0] from None
        return [{"PartNumber": n, "ETag": parts[n]} for n in sorted(parts)]

    async def delete(self, keys: Iterable[str]) -> int:
        """S3 does not say whether a key existed: the count is the keys it confirmed gone,
        missing ones included."""
        unique = list(dict.fromkeys(self.object_key(key) for key in keys))
        removed = 0
        for start in range(0, len(unique), DELETE_BATCH):
            batch = unique[start : start + DELETE_BATCH]
            response = await self.client.delete_objects(
                Bucket=self.config.bucket,
                Delete={"Objects": [{"Key": key} for key in batch], "Quiet": False},
            )
            errors = response.get("Errors") or []
            removed += len(response.get("Deleted") or [])
            if errors:
                first = errors[0]
                raise RuntimeError(
                    f"{self.where()}: {len(errors)} of {len(batch)} deletes failed, first "
                    f"{first.get('Key')!r}: {first.get('Code')} {first.get('Message')}"
                )
        return removed

    async def list(self, prefix: str = "") -> AsyncIterator[StoredObject]:
        paginator = self.client.get_paginator("list_objects_v2")
        strip = len(self.config.prefix)
        pages = paginator.paginate(
            Bucket=self.config.bucket, Prefix=self.config.prefix + prefix, PaginationConfig={}
        )
        async for page in pages:
            for item in page.get("Contents") or []:
                yield StoredObject(
                    key=item["Key"][strip:],
                    size=int(item["Size"]),
                    modified_at=item["LastModified"].timestamp(),
                )

    def url(self, key: str) -> str:
        if self.config.public_base_url:
            return self.config.public_base_url + key
        return f"s3://{self.config.bucket}/{self.object_key(key)}"

    def key_of(self, url: str) -> str | None:
        base = self.config.public_base_url
        if base and url.startswith(base):
            key = url[len(base) :]
        else:
            own = f"s3://{self.config.bucket}/{self.config.prefix}"
            if not url.startswith(own):
                return None
            key = url[len(own) :]
        return key or None


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def describe(exc: BaseException) -> str:
    """One line for an S3 failure, credentials left out (botocore's messages hold none)."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code in ("404", "NoSuchBucket", "NotFound"):
            return "the bucket does not exist"
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return f"access refused ({code}): check the access key and its permissions"
        return f"{code}: {exc.response.get('Error', {}).get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"
