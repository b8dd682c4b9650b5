"""ffmpeg and ffprobe as subprocesses, each in its own process group.

ffmpeg may start helpers, and a cancelled job (the task's timeout, shutdown) must leave no
encoder behind: whatever ends the run, ``run`` kills the whole group (``os.killpg``) and
reaps it before returning or re-raising.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncworker.jobs.kits.media.image import BadMedia

_STDERR_TAIL_BYTES = 4000
ProgressLine = Callable[[str, str], Awaitable[None]]


@dataclass(slots=True)
class Finished:
    returncode: int
    stderr_tail: str


async def run(
    args: list[str],
    *,
    on_progress: ProgressLine | None = None,
    on_stdout: Callable[[bytes], None] | None = None,
) -> Finished:
    """Runs ``args``; ``on_progress(key, value)`` gets ffmpeg's ``-progress pipe:1`` lines,
    or ``on_stdout(chunk)`` the raw output (decoded samples). The stderr tail is kept for the
    error message. Cancelling kills the process group."""
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        stderr_task = asyncio.create_task(_tail(process.stderr), name="ffmpeg-stderr")
        try:
            if on_stdout is not None:
                while chunk := await process.stdout.read(64 * 1024):
                    on_stdout(chunk)
            else:
                await _progress_lines(process.stdout, on_progress)
            returncode = await process.wait()
        finally:
            tail = await _finish(stderr_task)
        return Finished(returncode=returncode, stderr_tail=tail)
    finally:
        await _kill_group(process)


async def _progress_lines(stream: asyncio.StreamReader, on_progress: ProgressLine | None) -> None:
    async for raw in stream:
        key, sep, value = raw.decode("utf-8", "replace").strip().partition("=")
        if sep and on_progress is not None:
            await on_progress(key, value)


async def _tail(stream: asyncio.StreamReader) -> str:
    kept = b""
    while chunk := await stream.read(8192):
        kept = (kept + chunk)[-_STDERR_TAIL_BYTES:]
    return kept.decode("utf-8", "replace")


async def _finish(task: asyncio.Task[str]) -> str:
    if not task.done():
        # Cancelled mid-run: the group is killed next, so stderr will end.
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        return await task
    return ""


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        # Reaped even when this task is being cancelled: no zombie left behind.
        await asyncio.shield(process.wait())
    else:
        # ffmpeg itself exited; a helper it left in the group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


async def probe(ffprobe: str, path: Path, kind: str) -> dict[str, Any]:
    """ffprobe's JSON (format and streams); ``BadMedia`` when it cannot read the file."""
    args = [ffprobe, "-v", "error", "-print_format", "json", "-show_format", "-show_streams"]
    done = await run_collecting([*args, str(path)])
    if done.returncode != 0:
        reason = last_line(done.stderr_tail) or f"ffprobe exited {done.returncode}"
        raise BadMedia(f"{kind}: not a media file ffprobe can read: {reason}")
    try:
        return dict(json.loads(done.stdout))
    except ValueError:
        raise BadMedia(f"{kind}: ffprobe gave no readable description") from None


@dataclass(slots=True)
class Collected:
    returncode: int
    stdout: bytes
    stderr_tail: str


async def run_collecting(args: list[str]) -> Collected:
    """A short command whose (small) output is kept: ffprobe's JSON."""
    parts: list[bytes] = []
    done = await run(args, on_stdout=parts.append)
    return Collected(done.returncode, b"".join(parts), done.stderr_tail)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def failure(kind: str, step: str, done: Finished) -> Exception:
    """A failed ffmpeg run: the disk or memory is worth a retry, anything else is the
    media's fault (ffprobe read it, ffmpeg could not decode it)."""
    reason = last_line(done.stderr_tail) or f"exit status {done.returncode}"
    lowered = done.stderr_tail.lower()
    if done.returncode < 0 or "no space left" in lowered or "cannot allocate" in lowered:
        return RuntimeError(f"{kind}: {step} failed: {reason}")
    return BadMedia(f"{kind}: {step} failed: {reason}")


def streams(info: dict[str, Any], codec_type: str) -> list[dict[str, Any]]:
    """The streams of a type; cover art in an audio file (attached_pic) is not a video."""
    found = []
    for stream in info.get("streams") or []:
        if stream.get("codec_type") != codec_type:
            continue
        if (stream.get("disposition") or {}).get("attached_pic"):
            continue
        found.append(stream)
    return found


def duration_s(info: dict[str, Any]) -> float | None:
    for source in [info.get("format") or {}, *(info.get("streams") or [])]:
        try:
            value = float(source.get("duration"))
        except (TypeError, ValueError):
            continue
        if value > 0:
            return value
    return None
