"""The clean-up kit without services: settings, payloads, handlers, file removal rules,
prekey generation and the JSONL archive."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pydantic
import pytest

from syncworker.config import config_from_dict
from syncworker.errors import ConnectionClosed, ConnectionFailed, PermanentError
from syncworker.jobs.config import build_registry
from syncworker.jobs.kits.cleanup.archive import JsonlArchive
from syncworker.jobs.kits.cleanup.config import SEED_TABLES, CleanupKitConfig
from syncworker.jobs.kits.cleanup.kit import CleanupKit
from syncworker.jobs.kits.cleanup.models import CleanupJob, CleanupOptions
from syncworker.jobs.kits.cleanup.prekeys import public_keys
from syncworker.jobs.kits.cleanup.rows import remove_files

URL = "postgresql://postgres:s3cret@127.0.0.1:5432/messenger"
HANDLERS = [
    "health",
    "maintenance",
    "messages",
    "orphaned_media",
    "prekeys",
    "run",
    "sessions",
    "stories",
    "temp_files",
    "user_stats",
    "websockets",
]


def config(**settings: Any) -> CleanupKitConfig:
    return CleanupKitConfig.model_validate({"database": URL, **settings})


def test_defaults_follow_the_seed() -> None:
    settings = config()
    assert settings.stories_max_age == 86400
    assert settings.sessions_max_inactive == 30 * 86400
    assert settings.messages_max_age == 365 * 86400
    assert settings.temp_files_max_age == 86400
    assert settings.websocket_stale_after == 900
    assert settings.batch_size == 5000
    assert settings.prekeys_action == "off"
    assert settings.maintenance_tables == list(SEED_TABLES)
    assert "s3cret" not in repr(settings)


def test_durations_read_as_durations() -> None:
    settings = config(stories_max_age="12h", orphan_grace="2d", websocket_stale_after=60000)
    assert (settings.stories_max_age, settings.orphan_grace) == (43200, 172800)
    assert settings.websocket_stale_after == 60


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"messages_action": "archive_jsonl"}, "needs archive_dir"),
        ({"database": "mysql://x/y"}, "postgresql://"),
        ({"batch_size": True}, "expected a number"),
        ({"batch_size": 0}, "greater than or equal to 1"),
        ({"bath_size": 10}, "bath_size"),
        ({"archive_table": ""}, "table name"),
        ({"messages_action": "shred"}, "archive_table"),
        ({"storage": {"type": "ftp"}}, "expected type 'local' or 's3'"),
    ],
)
def test_invalid_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        config(**settings)


def test_the_kit_is_built_from_jobs_kits_and_binds_its_payload_models(tmp_path: Path) -> None:
    raw = {
        "jobs": {
            "backend": {"type": "memory"},
            "kits": {"cleanup": {"database": URL, "storage": {"type": "local", "path": "x"}}},
            "tasks": {
                "cleanup": {"handler": "kit:cleanup.run"},
                "stories": {"handler": "kit:cleanup.stories"},
            },
        }
    }
    loaded = config_from_dict(raw)
    assert loaded.app.jobs is not None
    kits = loaded.app.jobs.kits.build()
    assert isinstance(kits["cleanup"], CleanupKit)
    assert sorted(kits["cleanup"].handlers()) == HANDLERS
    registry = build_registry(loaded.app.jobs, kits)
    run, stories = registry.get("cleanup"), registry.get("stories")
    assert run is not None and stories is not None
    assert (run.model, stories.model) == (CleanupJob, CleanupOptions)
    with pytest.raises(ValueError, match="type"):
        run.validate({"data": {}})
    assert stories.validate({}) == {}


def test_payloads_take_dry_run_from_data_too() -> None:
    assert CleanupJob.model_validate({"type": "stories"}).dry_run is False
    assert CleanupJob.model_validate({"type": "stories", "dry_run": True}).dry_run is True
    job = CleanupJob.model_validate({"type": "messages", "data": {"dry_run": True, "x": 1}})
    assert job.dry_run is True
    with pytest.raises(pydantic.ValidationError, match=r"data\.dry_run"):
        CleanupJob.model_validate({"type": "stories", "data": {"dry_run": "yes"}})
    with pytest.raises(pydantic.ValidationError, match="dryrun"):
        CleanupJob.model_validate({"type": "stories", "dryrun": True})
    with pytest.raises(pydantic.ValidationError, match="type"):
        CleanupJob.model_validate({"type": "users"})


async def test_a_named_handler_refuses_another_type_and_a_closed_kit_says_so() -> None:
    kit = CleanupKit(config())
    stories = kit.handlers()["stories"]
    with pytest.raises(PermanentError, match="type 'sessions'"):
        await stories(CleanupOptions(type="sessions"))
    with pytest.raises(ConnectionClosed, match="not open"):
        await stories(CleanupOptions())
    with pytest.raises(ConnectionClosed, match="not open") as caught:
        await kit.run(CleanupJob(type="health"))
    assert "s3cret" not in str(caught.value)


async def test_an_unknown_type_is_permanent() -> None:
    with pytest.raises(PermanentError, match="unknown clean-up type 'everything'"):
        await CleanupKit(config()).execute("everything")


async def test_open_without_a_database_fails_with_the_reason_and_no_password() -> None:
    kit = CleanupKit(
        config(database="postgresql://postgres:s3cret@127.0.0.1:1/none", connect_timeout="1s")
    )
    with pytest.raises(ConnectionFailed) as caught:
        async with kit:
            pass
    assert "127.0.0.1:1/none" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_temp_files_outside_the_root_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "tmp"
    root.mkdir()
    (root / "a.part").write_bytes(b"x")
    (root / "sub").mkdir()
    (tmp_path / "outside").write_bytes(b"x")
    rows = [
        ("a", str(root / "a.part")),
        ("b", str(root / "gone.part")),
        ("c", str(root / ".." / "outside")),
        ("d", str(tmp_path / "outside")),
        ("e", "relative.part"),  # relative to the root
        ("f", str(root / "sub")),  # a directory is never removed
        ("g", str(root)),
    ]
    (root / "relative.part").write_bytes(b"x")
    expected = [
        ("a", "deleted"),
        ("b", "missing"),
        ("c", "refused"),
        ("d", "refused"),
        ("e", "deleted"),
        ("f", "failed"),
        ("g", "refused"),
    ]
    assert remove_files(rows, root, dry_run=True) == expected
    assert (root / "a.part").exists() and (root / "relative.part").exists()
    assert remove_files(rows, root, dry_run=False) == expected
    assert not (root / "a.part").exists() and (tmp_path / "outside").exists()
    assert (root / "sub").is_dir()


def test_without_a_root_any_absolute_path_goes(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"x")
    assert remove_files([("a", str(tmp_path / "x"))], None, dry_run=False) == [("a", "deleted")]


def test_public_keys_are_fresh_x25519_keys() -> None:
    keys = public_keys(50)
    assert len(set(keys)) == 50
    assert all(len(base64.b64decode(key, validate=True)) == 32 for key in keys)


async def test_jsonl_archive_appends_lines_to_one_file_per_run(tmp_path: Path) -> None:
    archive = JsonlArchive(tmp_path / "archive", "messages", "cleanup:42")
    assert not archive.path.exists()
    await archive.write(['{"id": 1}', '{"id": 2}'])
    await archive.write(['{"id": 3, "text": "a\\nb"}'])
    lines = archive.path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [1, 2, 3]
    assert archive.lines == 3
    assert archive.path.name.startswith("messages-") and "cleanup-42" in archive.path.name
    other = JsonlArchive(tmp_path / "archive", "messages", None)
    assert other.path != archive.path
