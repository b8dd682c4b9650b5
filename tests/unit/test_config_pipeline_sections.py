"""The pipeline sections added for seed 004: ``verify`` and ``sync_errors``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from syncworker.config import config_from_dict
from syncworker.errors import ConfigError
from syncworker.reconcile.config import VerifyConfig


def pipeline(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    return {
        "state": f"sqlite:///{tmp_path}/state.db",
        "pipelines": {
            "users": {
                "source": {"type": "sqlite_queue", "path": f"{tmp_path}/queue.db"},
                "sinks": [{"type": "jsonl", "path": f"{tmp_path}/out"}],
                **sections,
            }
        },
    }


def test_verify_is_read_into_the_pipeline_config(tmp_path: Path) -> None:
    config = config_from_dict(
        pipeline(tmp_path, verify={"every": "30m", "ignore_recent": "2m", "repair": True}),
        environ={},
    )
    verify = config.pipelines["users"].config.verify
    assert verify is not None
    assert (verify.every, verify.ignore_recent, verify.repair) == (1800.0, 120.0, True)
    assert verify.segments == VerifyConfig().segments
    assert config_from_dict(pipeline(tmp_path), environ={}).pipelines["users"].config.verify is None


def test_a_misspelled_verify_setting_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(pipeline(tmp_path, verify={"evry": "30m"}), environ={})
    assert str(caught.value) == (
        "<config>: pipelines.users.verify.evry: unknown setting 'evry'; did you mean 'every'?"
    )


def test_a_wrong_sync_errors_setting_is_one_line_naming_it(tmp_path: Path) -> None:
    raw = pipeline(tmp_path, sync_errors={"url": "${TARGET_DB}", "tabel": "x"})
    with pytest.raises(ConfigError) as caught:
        config_from_dict(raw, environ={"TARGET_DB": "mysql://u:s3cret@h/chat"})
    lines = str(caught.value).splitlines()
    assert "pipelines.users.sync_errors.url: expected a postgresql:// URL" in lines[0]
    assert "s3cret" not in str(caught.value)
    assert lines[1].endswith(
        "pipelines.users.sync_errors.tabel: unknown setting 'tabel'; did you mean 'table'?"
    )
