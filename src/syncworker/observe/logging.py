"""Structured logging, with secrets masked before anything is written.

Every event goes through `redact_event` just before it is rendered, so a password in a
URL, a token in a query string or the value of a ``password`` key never reaches a log line
(design guarantee 7). `redact_value` and `redact_url` apply the same masking to status
payloads and error messages.

Libraries that log through the standard library (httpx, aio-pika, asyncio) are routed
through the same chain, so their lines are redacted and formatted like ours.

A program that embeds syncworker and never configures logging gets `configure_default_logging`
on import: info and up (``SYNCWORKER_LOG_LEVEL`` changes it), redacted, to stderr, where
structlog's own default would print every debug line (one per batch) to stdout.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import json
import logging
import logging.handlers
import os
import re
import sys
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = [
    "IDENTITY_KEY_NAMES",
    "LEVELS",
    "MASK",
    "Identifiers",
    "LogFormat",
    "configure_default_logging",
    "configure_logging",
    "env_levels",
    "is_secret_name",
    "parse_level",
    "redact_event",
    "redact_url",
    "redact_value",
    "reset_logging",
]

LogFormat = Literal["json", "console"]

MASK = "***"

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# Names that end in "_key" but identify data instead of unlocking anything. Masking them
# would hide exactly the value an operator needs to find a stuck record, a held lock or a
# routed message, and none of them ever carries a credential.
IDENTITY_KEY_NAMES = frozenset(
    {
        "record_key",
        "lock_key",
        "idempotency_key",
        "partition_key",
        "sort_key",
        "key_field",
        "key_column",
        "primary_key",
        "foreign_key",
        "routing_key",
        "object_key",
        "cache_key",
        # a job's dedupe key (jobs: unique_key), which names the job it keeps single
        "unique_key",
        # positions in a key range (pg_table's snapshot, verify's segments): where a
        # snapshot resumed is what an operator needs to see
        "after_key",
        "last_key",
        "until_key",
        "first_key",
        "source_key",
        "target_key",
    }
)

# Matched against the name with case, "_", "-" and "." removed, so that "apiKey",
# "x-api-key" and "API_KEY" are all caught by "apikey".
_SECRET_WORDS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "credential",
    "authorization",
    "apikey",
    "privatekey",
    "accesskey",
    "cookie",
)
_SECRET_NAMES = frozenset({"key", "pwd", "pass", "auth"})

# Deeper than this is a cycle or a pathological structure: it is flattened to redacted
# text instead of recursing until RecursionError escapes from a log call.
_MAX_DEPTH = 32

# Values that render the same in every format and cannot hide a URL or a token.
_PLAIN_TYPES = (type(None), bool, int, float, dt.date, dt.time, uuid.UUID, enum.Enum)

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

# scheme://user:password@host; the user part may itself contain "@" (an e-mail address)
# and the password is taken up to the last "@" before the path, as URL parsers do.
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.\-]*://[^\s:/?#]*:)[^\s/?#]*@", re.IGNORECASE)

# name=value (query strings, libpq DSNs, reprs) and "name": value (JSON, dict reprs).
_ASSIGNMENT_HEAD = re.compile(r"(?<![\w.\-])(?P<name>[a-z_][\w.\-]*)=", re.IGNORECASE)
# An unquoted value ends where a token cannot go on: at a separator of URLs and DSNs, and at
# the punctuation of the text around it ("(token=abc), retrying" keeps "), retrying").
_ASSIGNMENT_VALUE = re.compile(r"\"[^\"]*\"|'[^']*'|[^\s&#\"'<>,;|()\[\]{}]*")
# Sentence punctuation right after a value ("token=abc." or "token=abc...") is the text's.
_TRAILING_PUNCTUATION = ".:!?"
_QUOTED_HEAD = re.compile(r"(?P<q>[\"'])(?P<name>[\w.\-]{1,64})(?P=q)\s*:\s*")
_QUOTED_VALUE = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[^\s,}\]{\[\"']*")

_BEARER = re.compile(r"\b(?P<scheme>bearer)\s+[\w\-.~+/]+=*", re.IGNORECASE)
# "Authorization: Basic dXNlcjpwYXNz" carries user:password in base64, not only Bearer.
_AUTH_HEADER = re.compile(
    r"(?P<head>\bauthorization[\"']?\s*:\s*[\"']?(?:[a-z]+\s+)?)[^\s\"',;]+", re.IGNORECASE
)


def configure_logging(
    fmt: LogFormat = "console",
    level: str = "info",
    stream: TextIO | None = None,
    *,
    levels: Mapping[str, str] | None = None,
    log_dir: str | Path | None = None,
) -> None:
    """Send structured, redacted events to ``stream`` (``sys.stderr`` when None).

    With ``log_dir`` (seed 003's ``logs/``), every event also goes as a JSON line to
    ``combined.log`` there, and those at error and above to ``error.log`` too, whatever
    ``fmt`` the stream gets (`LogFiles`). ``OSError`` when the directory cannot be made or
    a file cannot be opened.

    ``levels`` gives some loggers a level of their own, by name prefix (the module names
    of ``structlog.get_logger(__name__)``): ``{"syncworker.connectors.redis": "warning"}``
    (seed 002's ``REDIS_LOG_LEVEL``, see `env_levels`); the longest matching prefix wins,
    the others log at ``level``.

    Safe to call again: the new format, level and stream replace the old ones, also for
    loggers obtained before. Raises ValueError for an unknown format or level, leaving the
    previous configuration in place.
    """
    min_level = parse_level(level)
    own = {name: parse_level(value) for name, value in (levels or {}).items()}
    target = sys.stderr if stream is None else stream
    renderer = _renderer(fmt, target)
    files = LogFiles(Path(log_dir)) if log_dir is not None else None
    _close_log_files(keep=files)
    processors: list[Processor] = [*_shared_processors(), renderer]
    if files is not None:
        processors.insert(-1, files)
    factory: Callable[..., Any] = structlog.WriteLoggerFactory(file=target)
    if own:  # the loggers' names are needed to filter by them: only then is it paid for
        processors.insert(0, _LevelByName(min_level, own))
        factory = _NamedLoggerFactory(target)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(min([min_level, *own.values()])),
        logger_factory=factory,
        # Caching would pin loggers to the first configuration and break reconfiguring.
        cache_logger_on_first_use=False,
    )
    _install_stdlib_bridge(min_level)


LOG_FILE_MAX_BYTES = 50 * 1024 * 1024
"""A log file is rotated at this size (``combined.log`` -> ``combined.log.1``...)."""
LOG_FILE_BACKUPS = 5
"""Rotated files kept per log file; the oldest is deleted."""


class LogFiles:
    """structlog processor writing each event as a JSON line to ``combined.log`` in
    ``directory``, and to ``error.log`` too for error and above (seed 003's log files).

    It runs after redaction and level filtering, just before the stream's renderer, and
    hands the event on unchanged. The files are the standard library's
    ``RotatingFileHandler``s (``LOG_FILE_MAX_BYTES``, ``LOG_FILE_BACKUPS``), kept off the
    root logger: records of other libraries reach them through the stdlib bridge, once.
    """

    ERROR_LEVELS = frozenset({"error", "critical", "exception", "fatal"})

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.combined = self._handler(directory / "combined.log")
        try:
            self.errors = self._handler(directory / "error.log")
        except OSError:
            self.combined.close()
            raise
        _open_log_files.append(self)

    @staticmethod
    def _handler(path: Path) -> logging.Handler:
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=LOG_FILE_MAX_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
        return handler

    def __call__(self, _logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        line = _dumps(event_dict)
        level = str(event_dict.get("level", method)).lower()
        record = logging.LogRecord("syncworker", logging.INFO, "", 0, line, None, None)
        self.combined.handle(record)
        if level in self.ERROR_LEVELS:
            self.errors.handle(record)
        return event_dict

    def close(self) -> None:
        self.combined.close()
        self.errors.close()


_open_log_files: list[LogFiles] = []


def _close_log_files(keep: LogFiles | None = None) -> None:
    """Close the files of earlier configurations, all but ``keep``."""
    for files in _open_log_files:
        if files is not keep:
            files.close()
    _open_log_files[:] = [keep] if keep is not None else []


REDIS_LOGGERS = "syncworker.connectors.redis"
"""The loggers of the Redis connectors (``REDIS_LOG_LEVEL``)."""

LEVEL_VARIABLES = {"REDIS_LOG_LEVEL": REDIS_LOGGERS}
"""Environment variables that set the level of a family of loggers (seed 002's)."""


def env_levels(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``levels`` of `configure_logging` the environment asks for: ``REDIS_LOG_LEVEL``
    for the Redis connectors' loggers. Unset or empty variables are left out; a value
    `parse_level` refuses makes `configure_logging` raise ValueError."""
    return {
        prefix: environ[name].strip()
        for name, prefix in LEVEL_VARIABLES.items()
        if environ.get(name, "").strip()
    }


_METHOD_LEVELS = {**LEVELS, "exception": logging.ERROR, "fatal": logging.CRITICAL}


class _LevelByName:
    """Drops an event below the level of its logger's name (longest matching prefix)."""

    def __init__(self, default: int, levels: Mapping[str, int]) -> None:
        self.default = default
        self.levels = sorted(levels.items(), key=lambda item: -len(item[0]))

    def level_of(self, name: str) -> int:
        for prefix, level in self.levels:
            if name == prefix or name.startswith(prefix + "."):
                return level
        return self.default

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        name = getattr(logger, "name", "")
        if _METHOD_LEVELS.get(method, logging.INFO) < self.level_of(name):
            raise structlog.DropEvent
        return event_dict


class _NamedWriteLogger(structlog.WriteLogger):
    name = ""


class _NamedLoggerFactory:
    """``WriteLoggerFactory`` whose loggers keep the name they were asked for."""

    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedWriteLogger:
        logger = _NamedWriteLogger(self._file)
        logger.name = str(args[0]) if args else ""
        return logger


def configure_default_logging() -> None:
    """Info and up (or ``SYNCWORKER_LOG_LEVEL``), redacted, to stderr, when nothing else set
    up structlog: what the Python API logs until its program configures logging. Leaves an
    existing structlog configuration and the standard library's logging alone."""
    if structlog.is_configured():
        return
    try:
        min_level = parse_level(os.environ.get("SYNCWORKER_LOG_LEVEL", "info"))
    except ValueError:
        min_level = logging.INFO
    structlog.configure(
        processors=[*_shared_processors(), _renderer("console", sys.stderr)],
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        # sys.stderr looked up per logger: a program (or pytest) may swap it after import.
        logger_factory=lambda *_: structlog.WriteLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )


def reset_logging() -> None:
    """Undo `configure_logging`: the default of `configure_default_logging`, stdlib logging
    as it was."""
    structlog.reset_defaults()
    _remove_stdlib_bridge()
    _close_log_files()
    configure_default_logging()


def parse_level(level: str) -> int:
    """Return the numeric level for a name such as ``"info"`` or ``"WARNING"``."""
    number = LEVELS.get(level.strip().lower()) if isinstance(level, str) else None
    if number is None:
        choices = ", ".join(name for name in LEVELS if name != "warn")
        raise ValueError(f"invalid log level {level!r}; expected one of {choices}")
    return number


class Identifiers(dict[str, Any]):
    """A mapping whose names identify things and never hold a credential, such as a lock's
    description (``key`` is the lock's name, ``token`` its fencing counter): its values are
    not masked by name. Text in them still goes through `redact_url`."""


def redact_value(obj: Any) -> Any:
    """Return a copy of ``obj`` with every secret masked; ``obj`` itself is not modified.

    Dicts, lists, tuples and sets are copied recursively; strings go through `redact_url`;
    the value of a key named like a secret (`is_secret_name`) becomes ``"***"``. Other
    objects are returned as they are.
    """
    return _redact(obj, depth=0, for_log=False)


def redact_event(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secrets in every value of the event, nested or not.

    Objects a renderer would turn into text through ``str``/``repr`` (dataclasses, models,
    exceptions) are turned into text here, so that text is redacted too.
    """
    return _redact_mapping(event_dict, depth=0, for_log=True)


def redact_url(text: str) -> str:
    """Mask URL passwords, secret query/DSN parameters and bearer tokens in ``text``."""
    # Every event runs through here; the substring checks skip the regexes for the
    # ordinary text (names, numbers, timestamps) that cannot match them.
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\g<head>{MASK}@", text)
    if "=" in text:
        text = _mask_assignments(text, _ASSIGNMENT_HEAD, _ASSIGNMENT_VALUE)
    if ":" in text and ('"' in text or "'" in text):
        text = _mask_assignments(text, _QUOTED_HEAD, _QUOTED_VALUE)
    lowered = text.lower()
    if "bearer" in lowered:
        text = _BEARER.sub(rf"\g<scheme> {MASK}", text)
    if "authorization" in lowered:
        text = _AUTH_HEADER.sub(rf"\g<head>{MASK}", text)
    return text


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Whether a dict key or parameter called ``name`` holds a secret."""
    snake = _CAMEL_BOUNDARY.sub("_", name).lower().replace("-", "_")
    leaf = snake.rsplit(".", 1)[-1]
    compact = re.sub(r"[_.]", "", snake)
    if any(word in compact for word in _SECRET_WORDS) or leaf in _SECRET_NAMES:
        return True
    return leaf.endswith("_key") and leaf not in IDENTITY_KEY_NAMES


def _renderer(fmt: str, stream: TextIO) -> Processor:
    if fmt == "json":
        return structlog.processors.JSONRenderer(serializer=_dumps)
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(
            colors=_wants_colors(stream),
            # Rich tracebacks would print local variables, which may hold secrets, and
            # would bypass redaction; the traceback is already text by now.
            exception_formatter=structlog.dev.plain_traceback,
        )
    raise ValueError(f"invalid log format {fmt!r}; expected 'json' or 'console'")


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.StackInfoRenderer(),
        # Tracebacks become text before redaction: exception messages often quote URLs.
        structlog.processors.format_exc_info,
        redact_event,
        # Level and timestamp are ours and hold no secrets, so they skip redaction.
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _dumps(obj: Any, default: Callable[[Any], Any] | None = None, **_: Any) -> str:
    try:
        return orjson.dumps(obj, default=default, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        # orjson refuses integers wider than 64 bits; a log line must still be written.
        return json.dumps(obj, default=repr)


def _wants_colors(stream: TextIO) -> bool:
    if "NO_COLOR" in os.environ:
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _redact(obj: Any, depth: int, for_log: bool) -> Any:
    if isinstance(obj, str):
        return redact_url(obj)
    if isinstance(obj, _PLAIN_TYPES):
        return obj
    if depth >= _MAX_DEPTH:
        return redact_url(_describe(obj))
    if isinstance(obj, Mapping):
        return _redact_mapping(obj, depth + 1, for_log)
    if isinstance(obj, list | tuple | set | frozenset):
        return _redact_collection(obj, depth + 1, for_log)
    return redact_url(_describe(obj)) if for_log else obj


def _redact_mapping(mapping: Mapping[Any, Any], depth: int, for_log: bool) -> dict[Any, Any]:
    by_name = not isinstance(mapping, Identifiers)
    return {
        _redact_key(name, for_log): (
            MASK if by_name and _must_mask(name, value) else _redact(value, depth, for_log)
        )
        for name, value in mapping.items()
    }


def _redact_collection(items: Any, depth: int, for_log: bool) -> Any:
    redacted = [_redact(item, depth, for_log) for item in items]
    if isinstance(items, list) or (for_log and isinstance(items, set | frozenset)):
        # Renderers cannot serialize sets; a list keeps the content readable.
        return redacted
    if hasattr(items, "_fields"):
        return type(items)(*redacted)
    return type(items)(redacted)


def _redact_key(name: Any, for_log: bool) -> Any:
    if isinstance(name, str):
        # Keyword-argument names are identifiers, which can hold no URL or assignment.
        return name if name.isidentifier() else redact_url(name)
    if for_log and not isinstance(name, _PLAIN_TYPES):
        return redact_url(_describe(name))
    return name


def _must_mask(name: Any, value: Any) -> bool:
    # An unset secret leaks nothing, and "not set" is what an operator needs to see.
    if value is None or isinstance(value, bool) or (isinstance(value, str) and not value):
        return False
    return isinstance(name, str) and is_secret_name(name)


def _describe(obj: Any) -> str:
    try:
        if isinstance(obj, BaseException):
            message = str(obj)
            return f"{type(obj).__name__}: {message}" if message else type(obj).__name__
        return str(obj)
    except Exception:
        return f"<unprintable {type(obj).__name__}>"


def _mask_assignments(text: str, head: re.Pattern[str], value: re.Pattern[str]) -> str:
    # Walks the heads without consuming values it keeps: a non-secret value such as
    # "url=https://h/?token=x" must still be searched for the secret inside it.
    parts: list[str] = []
    position = 0
    for match in head.finditer(text):
        if match.start() < position or not is_secret_name(match["name"]):
            continue
        found = value.match(text, match.end())
        if found is None or not found.group():
            continue
        parts += [text[position : match.end()], _masked_like(found.group())]
        position = found.end()
    return "".join(parts) + text[position:] if parts else text


def _masked_like(value: str) -> str:
    quote = value[0]
    if quote in "\"'":
        return f"{quote}{MASK}{quote}"
    kept = value.rstrip(_TRAILING_PUNCTUATION)
    return MASK + value[len(kept) :] if kept else MASK


class _StdlibBridge(logging.Handler):
    """Forwards stdlib log records into the structlog chain (format + redaction)."""

    root_level_before: int = logging.WARNING

    def emit(self, record: logging.LogRecord) -> None:
        try:
            extra: dict[str, Any] = {"logger": record.name}
            if record.exc_info:
                extra["exc_info"] = record.exc_info
            structlog.get_logger().log(
                _standard_level(record.levelno), record.getMessage(), **extra
            )
        except Exception:
            self.handleError(record)


def _standard_level(number: int) -> int:
    # structlog only knows the five standard levels; custom ones (TRACE=5) round down.
    known = [value for value in LEVELS.values() if value <= number]
    return max(known, default=logging.DEBUG)


CHATTY_LOGGERS = (
    "httpx",
    "httpcore",
    "uvicorn.error",
    "uvicorn.access",
    "aiormq",
    "aio_pika",
    "psycopg",
    "psycopg.pool",
)


def _install_stdlib_bridge(min_level: int) -> None:
    root = logging.getLogger()
    previous = _remove_stdlib_bridge()
    bridge = _StdlibBridge(level=min_level)
    bridge.root_level_before = root.level if previous is None else previous
    root.addHandler(bridge)
    root.setLevel(min_level)
    # Client libraries log every request at info; our own events already say what matters,
    # so theirs only come through from warning up (or at debug, when asked for).
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(
            max(min_level, logging.WARNING) if min_level > logging.DEBUG else logging.DEBUG
        )


def _remove_stdlib_bridge() -> int | None:
    """Remove the bridge, restore the root level it replaced and return that level."""
    root = logging.getLogger()
    previous: int | None = None
    for handler in [h for h in root.handlers if isinstance(h, _StdlibBridge)]:
        root.removeHandler(handler)
        previous = handler.root_level_before
    if previous is not None:
        root.setLevel(previous)
    return previous


configure_default_logging()
