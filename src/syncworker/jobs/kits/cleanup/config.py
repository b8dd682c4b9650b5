"""The settings of ``jobs.kits.cleanup`` (pydantic only: importing this loads no driver)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from syncworker.core.durations import DurationS
from syncworker.core.fields import StrictModel
from syncworker.jobs.kits.storage.config import StorageConfig

if TYPE_CHECKING:
    from syncworker.jobs.kits.base import Kit

SEED_TABLES = (
    "messages",
    "stories",
    "user_sessions",
    "user_prekeys",
    "notifications",
    "temporary_files",
)
_HOUR_S = 3600.0
_DAY_S = 86400.0


def _check_database_url(value: SecretStr) -> SecretStr:
    text = value.get_secret_value()
    if "://" not in text or urlsplit(text).scheme.lower() not in ("postgresql", "postgres"):
        raise ValueError("expected a postgresql:// URL")
    return value


def _check_identifier(value: str) -> str:
    if not value or "\x00" in value or len(value.encode()) > 63:
        raise ValueError("expected a table name of 1 to 63 bytes, without NUL")
    return value


class CleanupKitConfig(StrictModel):
    database: SecretStr = Field(
        description="PostgreSQL URL of the seed's tables (e.g. ${DATABASE_URL}); never logged"
    )
    storage: StorageConfig | None = Field(
        None,
        description="the media kit's store ({type: s3, ...} or {type: local, path}): the "
        "media of expired stories and old messages and the orphaned objects are deleted "
        "there; unset: no object is touched (orphaned_media is refused)",
    )
    pool_size: int = Field(2, ge=1, le=20, description="database connections at most")
    connect_timeout: DurationS = Field(
        10.0, gt=0, description="how long open waits for the database (10s)"
    )
    statement_timeout: DurationS = Field(
        60.0,
        ge=0,
        description="longest one batch statement may run (0: no limit); VACUUM has none",
    )
    batch_size: int = Field(
        5000,
        ge=1,
        le=100_000,
        description="rows per batch; each batch is its own short transaction, so no lock is "
        "held longer than one batch",
    )
    stories_max_age: DurationS = Field(
        24 * _HOUR_S, gt=0, description="stories created longer ago than this expire (24h)"
    )
    sessions_max_inactive: DurationS = Field(
        30 * _DAY_S,
        gt=0,
        description="sessions whose last_active_at (created_at when null) is older than "
        "this are deleted (30d)",
    )
    messages_max_age: DurationS = Field(
        365 * _DAY_S,
        gt=0,
        description="messages created longer ago than this are archived or deleted (365d)",
    )
    messages_action: Literal["archive_table", "archive_jsonl", "delete"] = Field(
        "archive_table",
        description="what becomes of old messages: copied to archive_table in the same "
        "transaction as the delete, written to a JSONL file under archive_dir (fsynced "
        "before the delete), or only deleted",
    )
    archive_dir: Path | None = Field(
        None,
        description="directory of the JSONL archives (one file per run); required with "
        "messages_action: archive_jsonl",
    )
    archive_table: str = Field(
        "messages_archive",
        description="table old messages are moved to (created like messages, plus "
        "archived_at, when missing)",
    )
    messages_delete_media: bool = Field(
        True, description="delete the media objects of the messages removed from messages"
    )
    temp_files_max_age: DurationS = Field(
        24 * _HOUR_S,
        gt=0,
        description="temporary_files rows older than this go, with their file (24h)",
    )
    temp_files_root: Path | None = Field(
        None,
        description="only files under this directory are deleted; a row naming a file "
        "elsewhere is left alone and counted as refused (unset: any path)",
    )
    prekeys_action: Literal["off", "delete_used", "replace"] = Field(
        "off",
        description="used prekeys (used_at set): left alone (off), deleted, or replaced by "
        "fresh X25519 public keys with new prekey_ids (see docs/cleanup.md for what a "
        "server-side rotation means)",
    )
    orphan_prefixes: list[str] = Field(
        default_factory=lambda: ["media/"],
        min_length=1,
        description="storage prefixes searched for objects no messages or stories row refers to",
    )
    orphan_grace: DurationS = Field(
        24 * _HOUR_S,
        gt=0,
        description="an unreferenced object younger than this is kept (an upload whose row "
        "is not written yet) (24h)",
    )
    websocket_stale_after: DurationS = Field(
        15 * 60.0,
        gt=0,
        description="active sessions whose last_active_at (created_at when null) is older "
        "than this are marked is_active = false (15m)",
    )
    maintenance_tables: list[str] = Field(
        default_factory=lambda: list(SEED_TABLES),
        description="tables VACUUM (ANALYZE) runs on; missing ones are reported and skipped",
    )
    user_stats_table: str = Field(
        "user_stats", description="table the per-user counts are upserted into (created)"
    )

    @field_validator("database")
    @classmethod
    def _database_url(cls, value: SecretStr) -> SecretStr:
        return _check_database_url(value)

    @field_validator("archive_table", "user_stats_table")
    @classmethod
    def _table_name(cls, value: str) -> str:
        return _check_identifier(value)

    @field_validator("maintenance_tables")
    @classmethod
    def _table_names(cls, value: list[str]) -> list[str]:
        return [_check_identifier(name) for name in value]

    @model_validator(mode="after")
    def _archive_dir_given(self) -> CleanupKitConfig:
        if self.messages_action == "archive_jsonl" and self.archive_dir is None:
            raise ValueError("messages_action 'archive_jsonl' needs archive_dir")
        return self

    def build(self) -> Kit:
        from syncworker.jobs.kits.cleanup.kit import CleanupKit

        return CleanupKit(self)
