"""The JSONL archive of old messages: one file per run, each line one row as PostgreSQL's
``to_jsonb`` wrote it (exact values: no number or timestamp passes through Python)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import uuid
from pathlib import Path


class JsonlArchive:
    """``{dir}/{stream}-{UTC time}-{job id or random}.jsonl``, created on the first write.
    ``write`` returns once the lines (and, the first time, the file's directory entry) are
    on disk, so the caller may delete the rows they came from."""

    def __init__(self, directory: Path, stream: str, job_id: str | None) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        tag = "".join(c if c.isalnum() else "-" for c in job_id) if job_id else uuid.uuid4().hex
        self.path = directory / f"{stream}-{stamp}-{tag[:40]}.jsonl"
        self.lines = 0

    async def write(self, lines: list[str]) -> None:
        await asyncio.to_thread(self._write, lines)
        self.lines += len(lines)

    def _write(self, lines: list[str]) -> None:
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as out:
            out.write("".join(line + "\n" for line in lines))
            out.flush()
            os.fsync(out.fileno())
        if created:
            _fsync_dir(self.path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
