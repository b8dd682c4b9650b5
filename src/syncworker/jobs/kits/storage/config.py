"""Where a kit keeps its objects: ``{type: local, path}`` or ``{type: s3, bucket, ...}``.

pydantic only: importing this loads no driver (aioboto3 is imported by ``build_storage``
when an S3 store is built).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Discriminator, Field, SecretStr, Tag, field_validator

from syncworker.core.fields import StrictModel

if TYPE_CHECKING:
    from syncworker.jobs.kits.storage.base import Storage


def _empty_is_none(value: Any) -> Any:
    # ``${AWS_ACCESS_KEY_ID:-}`` with the variable unset is "", which means "not given".
    if isinstance(value, str) and not value.strip():
        return None
    return value


class LocalStorageConfig(StrictModel):
    type: Literal["local"] = Field(description="objects are files under a local directory")
    path: Path = Field(
        description="the directory holding the objects (created on open); a key is a path "
        "relative to it and may never leave it"
    )
    public_base_url: str | None = Field(
        None,
        description="URL prefix the messages row stores for a key (base + key); default a "
        "file:// URL of the file",
    )

    _blank = field_validator("public_base_url", mode="before")(_empty_is_none)


class S3StorageConfig(StrictModel):
    type: Literal["s3"] = Field(description="objects in an S3 bucket (or an S3-compatible store)")
    bucket: str = Field(min_length=1, description="the bucket (the seed's AWS_S3_BUCKET)")
    region: str | None = Field(
        None, description="the bucket's region (the seed's AWS_REGION); default boto's own"
    )
    access_key_id: SecretStr | None = Field(
        None,
        description="access key id (the seed's AWS_ACCESS_KEY_ID); unset: boto's default "
        "credential chain (environment, profile, instance role)",
    )
    secret_access_key: SecretStr | None = Field(
        None, description="secret access key (the seed's AWS_SECRET_ACCESS_KEY); never logged"
    )
    endpoint_url: str | None = Field(
        None,
        description="endpoint of an S3-compatible store (MinIO, Ceph, R2, a test server); "
        "unset: AWS",
    )
    prefix: str = Field(
        "", description="prepended to every key in the bucket (e.g. 'messenger/'); lists strip it"
    )
    public_base_url: str | None = Field(
        None,
        description="URL prefix the messages row stores for a key (base + key, e.g. a CDN); "
        "default s3://bucket/prefix+key",
    )
    part_size_bytes: int = Field(
        8 * 1024 * 1024,
        ge=5 * 1024 * 1024,
        description="multipart chunk size of streamed transfers (S3's minimum part is 5 MiB)",
    )
    max_concurrency: int = Field(
        4, ge=1, le=64, description="parts transferred at once for one large object"
    )

    max_attempts: int = Field(
        3,
        ge=1,
        le=10,
        description="tries of one S3 request by the client (botocore's standard retry mode) "
        "before the job's own retry takes over",
    )

    _blank = field_validator(
        "region",
        "access_key_id",
        "secret_access_key",
        "endpoint_url",
        "public_base_url",
        mode="before",
    )(_empty_is_none)


def _store_type(value: Any) -> str | None:
    # A callable discriminator: StrictModel's before-validators on every field rule out
    # pydantic's field-name discriminator.
    found = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return found if found in ("local", "s3") else None


StorageConfig = Annotated[
    Annotated[LocalStorageConfig, Tag("local")] | Annotated[S3StorageConfig, Tag("s3")],
    Discriminator(
        _store_type,
        custom_error_type="storage_type",
        custom_error_message="expected type 'local' or 's3'",
    ),
]
"""A pydantic field type: the store picked by its ``type``."""


def build_storage(config: LocalStorageConfig | S3StorageConfig) -> Storage:
    """The store ``config`` describes; nothing is connected until ``open``."""
    if isinstance(config, LocalStorageConfig):
        from syncworker.jobs.kits.storage.local import LocalStorage

        return LocalStorage(config)
    from syncworker.jobs.kits.storage.s3 import S3Storage

    return S3Storage(config)
