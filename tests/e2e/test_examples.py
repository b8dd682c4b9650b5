"""Every example config validates, and the quickstart runs as its README says."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.fakes.fcm import service_account_key

EXAMPLES = Path(__file__).parents[2] / "examples"


# What an example needs set, as its README says (seed 001 has no defaults for these).
REQUIRED_ENV = {
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres",
    "ALGOLIA_APP_ID": "TESTAPP",
    "ALGOLIA_ADMIN_KEY": "not-a-real-key",
    # seed 002 (examples/zoho_to_redis)
    "ZOHO_OWNER": "acme",
    "ZOHO_APP": "events",
    "ZOHO_CLIENT_ID": "1000.TESTCLIENT",
    "ZOHO_CLIENT_SECRET": "not-a-real-secret",
    "ZOHO_REFRESH_TOKEN": "1000.not-a-real-token",
    # seed 003 (examples/messenger_worker)
    "AWS_S3_BUCKET": "sup-messenger-media",
    "FIREBASE_PROJECT_ID": "sup-test",
    "FIREBASE_CLIENT_EMAIL": "worker@sup-test.iam.gserviceaccount.com",
    "FIREBASE_PRIVATE_KEY": service_account_key()[0].replace("\n", "\\n"),
    "SMTP_HOST": "127.0.0.1",
}


@pytest.mark.parametrize("config", sorted(EXAMPLES.glob("*/syncworker.yaml")), ids=str)
def test_example_config_validates(config: Path) -> None:
    env = {**os.environ, **REQUIRED_ENV}
    result = subprocess.run(
        [sys.executable, "-m", "syncworker.cli", "validate", str(config)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr


def test_quickstart_runs_as_documented(tmp_path: Path) -> None:
    work = tmp_path / "quickstart"
    shutil.copytree(EXAMPLES / "quickstart", work)

    def cli(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "syncworker.cli", *args],
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    cli(
        "enqueue",
        "--config",
        "syncworker.yaml",
        "--stream",
        "in",
        '{"id": "1", "text": "hello"}',
        "not json",
    )
    cli("run", "--once", "syncworker.yaml")
    [day_file] = (work / "out").glob("messages_in_*.jsonl")
    lines = [orjson.loads(line) for line in day_file.read_bytes().splitlines()]
    assert lines[0] == {"id": "1", "text": "hello"}
    assert lines[1]["raw"] == "not json" and lines[1]["wrapped"] is True
    assert "quickstart" in cli("status", "--config", "syncworker.yaml")


@pytest.mark.parametrize("config", sorted(EXAMPLES.glob("*/syncworker.yaml")), ids=str)
def test_example_readme_names_every_variable_its_config_reads(config: Path) -> None:
    import re

    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", config.read_text()))
    readme = (config.parent / "README.md").read_text()
    assert sorted(n for n in names if f"`{n}`" not in readme) == []


def _bash_block_after(text: str, marker: str) -> list[str]:
    block = text.split(marker, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_demo_commands_work_as_written(tmp_path: Path) -> None:
    """After the demo, the README's next commands run as written, with the venv's bin on
    the PATH as its activation puts it (issue 9, point 5)."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    assert ". .venv/bin/activate" in readme and ".venv/bin/syncworker" in readme
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def bash(command: str) -> str:
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert result.returncode == 0, (command, result.stderr)
        return result.stdout

    bash("syncworker demo --messages 200 --no-progress")
    outputs = [bash(line) for line in _bash_block_after(readme, "Then look around")]
    assert len(outputs) == 3
    assert "1 dead letter(s)" in outputs[0]
    letter = orjson.loads(outputs[1])
    assert letter["id"] == 1 and letter["error"] and letter["stack"]
    assert "chat" in outputs[2]
    jobs = [bash(line) for line in _bash_block_after(readme, "The demo then runs")]
    assert len(jobs) == 3
    assert "10 job(s)" in jobs[0] and "orphaned_tables" in jobs[0]
    assert "requeued 10 job(s)" in jobs[1]
    assert "expired_stories" in jobs[2]


def test_readme_python_example_runs_as_written(tmp_path: Path) -> None:
    readme = (EXAMPLES.parent / "README.md").read_text()
    section = readme[readme.index("## In Python") :]
    code = section[section.index("```python\n") + len("```python\n") :]
    code = code[: code.index("```\n")]
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == ["synced 1 {'in': 1}", "success 1"]
    [written] = (tmp_path / "out").glob("messages_in_*.jsonl")
    assert orjson.loads(written.read_text())["id"] == 1
