"""The config file: YAML, ``${VAR}`` / ``${VAR:-default}`` from the environment, validated.

Every mistake becomes one line naming the file (and line), the setting and what was expected:

    syncworker.yaml:12: pipelines.chat.batch.bath_size: unknown setting; did you mean 'size'?

Connector sections are validated by the model each connector owns (``config_model``).
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from croniter import croniter
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from syncworker.coord import make_lock
from syncworker.coord.base import Lock
from syncworker.core import registry
from syncworker.core.durations import DurationS
from syncworker.core.pipeline import Pipeline, PipelineSettings
from syncworker.core.policies import BreakerPolicy, RetryPolicy
from syncworker.core.protocols import ConnectorConfig
from syncworker.core.schedule import Schedule
from syncworker.errors import ConfigError
from syncworker.observe.logging import redact_url
from syncworker.state import DEFAULT_STATE_URL, StateStore, sqlite_path

Loc = tuple[str | int, ...]
# ${VAR}, ${VAR:-default} (default when unset or empty), ${VAR:+word} (word when set and
# non-empty, else empty). Defaults may hold further references: innermost are read first.
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^{}]*))?\}")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class _Strict(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}


class BatchConfig(_Strict):
    size: int = Field(100, ge=1, le=100_000, description="records per batch at most")
    max_wait: DurationS = Field(1.0, ge=0, description="how long to wait to fill a batch")
    max_in_flight: int = Field(2, ge=1, le=64, description="batches claimed and unfinished")


class RetryConfig(_Strict):
    attempts: int = Field(3, ge=1, le=100, description="tries per batch before giving up")
    delay: DurationS = Field(1.0, ge=0, description="wait before the first retry")
    factor: float = Field(2.0, ge=1, description="each retry waits this much longer")
    max_delay: DurationS = Field(30.0, ge=0, description="longest wait between retries")
    jitter: float = Field(0.1, ge=0, le=1, description="random spread of waits, a fraction")


class BreakerConfig(_Strict):
    delay: DurationS = Field(1.0, ge=0, description="first pause after a whole-batch failure")
    factor: float = Field(2.0, ge=1, description="each further failure pauses this much longer")
    max_delay: DurationS = Field(60.0, ge=0, description="longest pause")


class ScheduleConfig(_Strict):
    stream: bool | None = Field(None, description="run continuously")
    every: DurationS | None = Field(
        None, gt=0, description="interval from end of one run to the start of the next"
    )
    cron: str | None = Field(None, description="a cron expression (UTC)")
    manual: bool | None = Field(None, description="run only when asked (API, sync_now)")
    run_at_start: bool | None = Field(
        None, description="'every': run once at start-up (default true)"
    )

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None and not croniter.is_valid(value):
            raise ValueError(f"expected a cron expression like '*/5 * * * *', got {value!r}")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> ScheduleConfig:
        chosen = [k for k in ("stream", "every", "cron", "manual") if getattr(self, k)]
        if len(chosen) != 1:
            raise ValueError(
                "expected exactly one of stream: true, every: DURATION, "
                "cron: EXPRESSION, manual: true"
            )
        return self

    def build(self) -> Schedule:
        if self.every is not None:
            return Schedule.every(self.every, run_at_start=self.run_at_start is not False)
        if self.cron is not None:
            return Schedule.at(self.cron)
        return Schedule.manual() if self.manual else Schedule.stream()


class LockConfig(_Strict):
    url: str = Field(description="redis://... (SET NX PX lock) or postgresql://... (advisory)")
    key: str = Field(min_length=1, description="the lock's name, e.g. whatsapp:syncLock")
    ttl: DurationS = Field(300.0, gt=0, description="lease length; renewed every third of it")

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in ("redis", "rediss", "unix", "postgresql", "postgres"):
            raise ValueError(f"expected a redis:// or postgresql:// URL, got {redact_url(value)!r}")
        return value


class DeadLetterConfig(_Strict):
    store: Literal["state", "source"] = Field(
        "state",
        description="where refused records are kept: 'state' (the state store's dead "
        "letters, requeued with `syncworker dlq`) or 'source' (back to a source that keeps "
        "failures itself and retries them, e.g. pg_outbox: after max_retries the row is "
        "'failed' with last_error, and `syncworker outbox retry-failed` puts it back)",
    )


class PipelineConfig(_Strict):
    source: dict[str, Any] = Field(description="the source connector, by type")
    processors: list[dict[str, Any]] = Field(default_factory=list)
    sinks: list[dict[str, Any]] = Field(min_length=1, description="one or more sinks")
    batch: BatchConfig = Field(default_factory=BatchConfig)
    schedule: ScheduleConfig = Field(default_factory=lambda: ScheduleConfig(stream=True))
    retry: RetryConfig = Field(default_factory=RetryConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    dead_letter: DeadLetterConfig = Field(default_factory=DeadLetterConfig)
    lock: LockConfig | None = Field(None, description="one worker at a time runs this pipeline")
    enabled: bool = Field(True, description="false: validated but not run")


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8080`` for IPv6) as a pair; ValueError naming the form."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT like 127.0.0.1:8080, got {value!r}")
    return host, int(port)


class ApiConfig(_Strict):
    listen: str = Field("127.0.0.1:8080", description="HOST:PORT the control API listens on")
    token: str | None = Field(
        None,
        description="bearer token every endpoint but /health and /ready requires; empty or "
        "unset: no auth, and the API binds to loopback only",
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("token")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None


class AppConfig(_Strict):
    state: str = Field(DEFAULT_STATE_URL, description="state store URL (sqlite:///PATH)")
    shutdown_timeout: DurationS = Field(
        30.0, ge=0, description="how long in-flight batches get to finish at shutdown"
    )
    pipelines: dict[str, PipelineConfig] = Field(min_length=1)
    api: ApiConfig | None = Field(None, description="the HTTP control API and dashboard")

    @field_validator("state")
    @classmethod
    def _state_url(cls, value: str) -> str:
        try:
            sqlite_path(value)
        except ConfigError as exc:
            raise ValueError(exc.reason) from None
        return value

    @field_validator("pipelines")
    @classmethod
    def _names(cls, value: dict[str, PipelineConfig]) -> dict[str, PipelineConfig]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"pipeline name {name!r}: use letters, digits, '_', '-', '.'")
        return value


@dataclass(slots=True)
class PipelineSpec:
    """A pipeline's validated config with each connector's own typed model."""

    name: str
    config: PipelineConfig
    source: ConnectorConfig
    sinks: list[ConnectorConfig]
    processors: list[ConnectorConfig] = field(default_factory=list)

    def settings(self, shutdown_timeout_s: float) -> PipelineSettings:
        c = self.config
        return PipelineSettings(
            batch_size=c.batch.size,
            max_wait_s=c.batch.max_wait,
            max_in_flight=c.batch.max_in_flight,
            retry=RetryPolicy(
                c.retry.attempts, c.retry.delay, c.retry.factor, c.retry.max_delay, c.retry.jitter
            ),
            breaker=BreakerPolicy(c.breaker.delay, c.breaker.factor, c.breaker.max_delay),
            schedule=c.schedule.build(),
            shutdown_timeout_s=shutdown_timeout_s,
            dead_letter_store=c.dead_letter.store,
        )


@dataclass(slots=True)
class Config:
    """A loaded, validated config file."""

    path: Path | None
    app: AppConfig
    pipelines: dict[str, PipelineSpec]

    def build(self, state: StateStore, only: list[str] | None = None) -> list[Pipeline]:
        """Pipelines with connectors constructed (not yet opened)."""
        names = only or [n for n, spec in self.pipelines.items() if spec.config.enabled]
        unknown = [n for n in names if n not in self.pipelines]
        if unknown:
            raise ConfigError(
                f"no pipeline named {unknown[0]!r}; the config has {', '.join(self.pipelines)}",
                file=self._file(),
            )
        return [build_pipeline(self.pipelines[n], state, self.app.shutdown_timeout) for n in names]

    def _file(self) -> str | None:
        return str(self.path) if self.path else None


def build_pipeline(spec: PipelineSpec, state: StateStore, shutdown_timeout_s: float) -> Pipeline:
    return Pipeline(
        spec.name,
        _construct("source", spec.source, f"{spec.name}.source", spec.name),
        [
            _construct("sink", c, _connector_name(c, i, spec.sinks), spec.name)
            for i, c in enumerate(spec.sinks)
        ],
        [_construct("processor", c, c.name or c.type, spec.name) for c in spec.processors],
        spec.settings(shutdown_timeout_s),
        state,
        _lock(spec.config.lock),
    )


def _lock(config: LockConfig | None) -> Lock | None:
    if config is None:
        return None
    return make_lock(config.url, config.key, config.ttl)


def _connector_name(config: ConnectorConfig, index: int, siblings: list[ConnectorConfig]) -> str:
    if config.name:
        return config.name
    same_type = [c for c in siblings if c.type == config.type]
    return config.type if len(same_type) == 1 else f"{config.type}[{index}]"


def _construct(kind: registry.Kind, config: ConnectorConfig, name: str, pipeline: str) -> Any:
    """``cls(config, name=...)``, plus ``pipeline=`` for connectors whose constructor takes it
    (e.g. to fill a ``{pipeline}`` placeholder); the rest need not know their pipeline."""
    cls = registry.lookup(kind, config.type)
    if "pipeline" in inspect.signature(cls).parameters:
        return cls(config, name=name, pipeline=pipeline)
    return cls(config, name=name)


# -- loading ------------------------------------------------------------------------------


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    """Read, substitute and validate a config file; ``ConfigError`` (one line) if wrong."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", file=str(path)) from None
    # Python modules beside the config (a transform's 'module:function') import as they
    # would from that directory, wherever syncworker is started from.
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.append(folder)
    return parse_config(text, path, environ)


def parse_config(
    text: str, path: Path | None = None, environ: dict[str, str] | None = None
) -> Config:
    file = str(path) if path else "<config>"
    try:
        root = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"not valid YAML: {problem}", file=file, line=mark.line + 1 if mark else None
        ) from None
    lines = _line_map(root) if root is not None else {}
    return config_from_dict(raw, path, environ, lines)


def config_from_dict(
    raw: Any,
    path: Path | None = None,
    environ: dict[str, str] | None = None,
    lines: dict[Loc, int] | None = None,
) -> Config:
    """The same validation for a config built in Python (a dict shaped like the file)."""
    file = str(path) if path else "<config>"
    lines = lines or {}
    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping with a 'pipelines' section", file=file)
    data = _substitute(raw, (), environ if environ is not None else dict(os.environ), file, lines)
    try:
        app = AppConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, AppConfig, (), file, lines) from None
    pipelines = {name: _spec(name, pc, file, lines) for name, pc in app.pipelines.items()}
    return Config(path, app, pipelines)


def _spec(name: str, pc: PipelineConfig, file: str, lines: dict[Loc, int]) -> PipelineSpec:
    base: Loc = ("pipelines", name)
    source = _connector("source", pc.source, (*base, "source"), file, lines)
    if pc.dead_letter.store == "source":
        _check_keeps_failures(source, (*base, "dead_letter", "store"), file, lines)
    return PipelineSpec(
        name=name,
        config=pc,
        source=source,
        sinks=_enabled(
            [
                _connector("sink", c, (*base, "sinks", i), file, lines)
                for i, c in enumerate(pc.sinks)
            ],
            (*base, "sinks"),
            file,
            lines,
        ),
        processors=[
            c
            for c in (
                _connector("processor", raw, (*base, "processors", i), file, lines)
                for i, raw in enumerate(pc.processors)
            )
            if c.enabled
        ],
    )


def _check_keeps_failures(
    source: ConnectorConfig, loc: Loc, file: str, lines: dict[Loc, int]
) -> None:
    cls = registry.lookup("source", source.type)
    if not callable(getattr(cls, "ack_except", None)):
        keepers = [
            n
            for n in registry.names("source")
            if callable(getattr(registry.lookup("source", n), "ack_except", None))
        ]
        raise ConfigError(
            f"store 'source' needs a source that keeps failed records itself "
            f"({', '.join(keepers) or 'none installed'}); {source.type} does not: use 'state'",
            file=file,
            path=_dotted(loc),
            line=_line(lines, loc),
        )


def _enabled(
    sinks: list[ConnectorConfig], loc: Loc, file: str, lines: dict[Loc, int]
) -> list[ConnectorConfig]:
    kept = [s for s in sinks if s.enabled]
    if not kept:
        raise ConfigError(
            "every sink is disabled (enabled: false); keep at least one",
            file=file,
            path=_dotted(loc),
            line=_line(lines, loc),
        )
    return kept


def _connector(
    kind: registry.Kind, data: dict[str, Any], loc: Loc, file: str, lines: dict[Loc, int]
) -> ConnectorConfig:
    type_name = data.get("type")
    if not isinstance(type_name, str):
        known = ", ".join(registry.names(kind))
        raise ConfigError(
            f"missing 'type'; expected one of: {known}",
            file=file,
            path=_dotted(loc),
            line=_line(lines, loc),
        )
    try:
        model: type[ConnectorConfig] = registry.lookup(kind, type_name).config_model
    except ConfigError as exc:
        raise ConfigError(
            exc.reason, file=file, path=_dotted((*loc, "type")), line=_line(lines, (*loc, "type"))
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, model, loc, file, lines, label=type_name) from None


# -- environment --------------------------------------------------------------------------


def _substitute(
    value: Any, loc: Loc, environ: dict[str, str], file: str, lines: dict[Loc, int]
) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, (*loc, k), environ, file, lines) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, (*loc, i), environ, file, lines) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, operator, word = match.group(1), match.group(2), match.group(3)
        found = environ.get(name)
        if operator == "+":
            return word if found else ""
        if found is not None and (found != "" or operator is None):
            return found
        if operator == "-":
            return word
        raise ConfigError(
            f"environment variable {name} is not set (write ${{{name}:-DEFAULT}} "
            "to give a default)",
            file=file,
            path=_dotted(loc),
            line=_line(lines, loc),
        )

    # Substituted values are placeholders-free markers so an env value with "${" in it is
    # never expanded again; each pass resolves the innermost references.
    parts: list[str] = []
    remaining = value
    while True:
        expanded = _ENV.sub(lambda m: _protect(replace(m), parts), remaining)
        if expanded == remaining:
            break
        remaining = expanded
    return _unprotect(remaining, parts)


def _protect(text: str, parts: list[str]) -> str:
    parts.append(text)
    return f"\x00{len(parts) - 1}\x00"


def _unprotect(text: str, parts: list[str]) -> str:
    while "\x00" in text:
        text = re.sub(r"\x00(\d+)\x00", lambda m: parts[int(m.group(1))], text)
    return text


# -- error lines --------------------------------------------------------------------------


def _config_error(
    exc: ValidationError,
    model: type[BaseModel],
    base: Loc,
    file: str,
    lines: dict[Loc, int],
    label: str | None = None,
) -> ConfigError:
    """The first validation error as one line (the rest follow once that one is fixed)."""
    error = exc.errors(include_url=False)[0]
    loc: Loc = tuple(p for p in error["loc"] if not str(p).startswith("function-"))
    full = (*base, *loc)
    message = _describe(error, model, loc, label)
    return ConfigError(message, file=file, path=_dotted(full) or None, line=_line(lines, full))


def _describe(error: Any, model: type[BaseModel], loc: Loc, label: str | None) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        allowed = list(owner.model_fields) if owner else []
        where = f" for {label}" if label and len(loc) == 1 else ""
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        suggestion = (
            f"; did you mean {hint[0]!r}?"
            if hint
            else f"; expected one of: {', '.join(allowed)}"
            if allowed
            else ""
        )
        return f"unknown setting {str(loc[-1])!r}{where}{suggestion}"
    if kind == "missing":
        return "required setting is missing"
    got = error.get("input")
    shown = "" if isinstance(got, dict | list) or got is None else f", got {got!r}"
    shown = redact_url(shown)  # a refused URL may carry its password
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{message[0].lower()}{message[1:]}{shown}" if message else f"invalid{shown}"


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model class that validates the value at ``loc`` under ``model``."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            if info is None:
                return None
            current = info.annotation
            continue
        args = [a for a in typing.get_args(current) if a is not type(None)]
        if not args:
            return None
        current = args[-1]  # dict[str, X] -> X; list[X] -> X
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line(lines: dict[Loc, int], loc: Loc) -> int | None:
    """The line of ``loc`` in the file, or of its nearest parent that is there."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _line_map(node: yaml.Node) -> dict[Loc, int]:
    out: dict[Loc, int] = {}
    for loc, line in _walk(node, ()):
        out.setdefault(loc, line)
    return out


def _walk(node: yaml.Node, loc: Loc) -> Iterator[tuple[Loc, int]]:
    yield loc, node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*loc, key_node.value)
            yield child, key_node.start_mark.line + 1
            yield from _walk(value_node, child)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _walk(item, (*loc, index))
