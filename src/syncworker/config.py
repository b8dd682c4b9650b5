"""The config file: YAML, ``${VAR}`` / ``${VAR:-default}`` from the environment, validated.

Every mistake becomes one line naming the file (and line), the setting and what was expected,
and every mistake of the file is reported at once, in file order:

    syncworker.yaml:12: pipelines.chat.batch.bath_size: unknown setting; did you mean 'size'?
    syncworker.yaml:13: pipelines.chat.schedule.every: expected a duration ..., got '1mms'
        (from SYNC_INTERVAL_MS='1m')

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
from urllib.parse import urlsplit

import yaml
from croniter import croniter
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from syncworker.coord import make_lock
from syncworker.coord.base import Lock
from syncworker.core import registry
from syncworker.core.durations import DurationS
from syncworker.core.fields import enabled_flag, refuse_bool_for_number
from syncworker.core.pipeline import Pipeline, PipelineSettings
from syncworker.core.policies import BreakerPolicy, RetryPolicy
from syncworker.core.protocols import ConnectorConfig
from syncworker.core.schedule import Schedule
from syncworker.errors import ConfigError
from syncworker.jobs.config import JobsConfig
from syncworker.observe.logging import is_secret_name, redact_url
from syncworker.observe.sync_errors import SyncErrorsConfig, SyncErrorsStore
from syncworker.reconcile.config import VerifyConfig
from syncworker.state import DEFAULT_STATE_URL, StateStore, sqlite_path

Loc = tuple[str | int, ...]
# ${VAR}, ${VAR:-default} (default when unset or empty), ${VAR:+word} (word when set and
# non-empty, else empty). Defaults may hold further references: innermost are read first.
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^{}]*))?\}")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class _Strict(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_bool_for_number(cls, value, info)


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
    """When a pipeline runs. Without a `schedule` it is `{stream: true}`: it runs continuously,
    claiming as records arrive."""

    stream: bool | None = Field(None, description="run continuously")
    every: DurationS | None = Field(
        None, gt=0, description="interval from end of one run to the start of the next"
    )
    cron: str | None = Field(None, description="a cron expression (UTC)")
    manual: bool | None = Field(None, description="run only when asked (API, sync_now)")
    run_at_start: bool | None = Field(
        None, description="'every': run once at start-up (default true)"
    )
    auto: bool = Field(
        True,
        description="false: never run by itself, only when asked (API, CLI), as 'manual' "
        '(seed 002\'s ENABLE_AUTO_SYNC: auto: "${ENABLE_AUTO_SYNC:-true}")',
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
        if not self.auto:
            return Schedule.manual()
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
        try:
            urlsplit(value).port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError as exc:
            raise ValueError(f"invalid URL {redact_url(value)!r}: {exc}") from None
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
    verify: VerifyConfig | None = Field(
        None, description="scheduled exact comparison of source and target (reconcile/)"
    )
    sync_errors: SyncErrorsConfig | None = Field(
        None,
        description="also write every error this pipeline records (dead letters, failed "
        "batches and runs, the source's reports) to a table, e.g. in the target database "
        "for seed 004's monitoring queries; the state store keeps them either way",
    )
    enabled: bool = Field(
        True,
        description="false, or empty, validates the pipeline but does not run it; with "
        '"${RABBITMQ_URL:+true}" it runs when the variable is set',
    )

    @field_validator("enabled", mode="before")
    @classmethod
    def _enabled_flag(cls, value: Any) -> Any:
        return enabled_flag(value)


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
        # A blank or whitespace-only token (an unset "${VAR:-}") is no token, as the server
        # treats it: loopback only, not a password anyone could send.
        return (value or "").strip() or None


class AppConfig(_Strict):
    state: str = Field(DEFAULT_STATE_URL, description="state store URL (sqlite:///PATH)")
    shutdown_timeout: DurationS = Field(
        30.0, ge=0, description="how long in-flight batches get to finish at shutdown"
    )
    pipelines: dict[str, PipelineConfig] = Field(
        default_factory=dict, description="the pipelines, by name"
    )
    jobs: JobsConfig | None = Field(
        None, description="the job queue: backend, queues, tasks, cron (see docs/jobs.md)"
    )
    api: ApiConfig | None = Field(None, description="the HTTP control API and dashboard")

    @model_validator(mode="after")
    def _something_to_run(self) -> AppConfig:
        if not self.pipelines and self.jobs is None:
            raise ValueError("expected a 'pipelines' section, a 'jobs' section or both")
        return self

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
    # Where each sink and processor is in the file (disabled ones are left out of the lists).
    sink_locs: list[Loc] = field(default_factory=list)
    processor_locs: list[Loc] = field(default_factory=list)

    def __post_init__(self) -> None:
        base: Loc = ("pipelines", self.name)
        self.sink_locs = self.sink_locs or [(*base, "sinks", i) for i in range(len(self.sinks))]
        self.processor_locs = self.processor_locs or [
            (*base, "processors", i) for i in range(len(self.processors))
        ]

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


class ConfigErrors(ConfigError):
    """Every mistake of a config file, in file order: ``errors`` holds one ``ConfigError`` per
    mistake and ``str()`` is one line per mistake. The first one's fields are this one's."""

    def __init__(self, errors: list[ConfigError]) -> None:
        first = errors[0]
        super().__init__(first.reason, file=first.file, path=first.path, line=first.line)
        self.errors = errors

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def every_error(exc: ConfigError) -> list[ConfigError]:
    """The mistakes ``exc`` stands for: itself, or each of a ``ConfigErrors``."""
    return list(exc.errors) if isinstance(exc, ConfigErrors) else [exc]


@dataclass(slots=True)
class _Check:
    """Collects a file's mistakes as they are found, so all of them are reported at once."""

    file: str
    lines: dict[Loc, int]
    environ: dict[str, str]
    # The variables read into each value (name, value), to say where a bad value came from.
    origins: dict[Loc, list[tuple[str, str]]] = field(default_factory=dict)
    # Values with a missing variable: that is their mistake; what follows from it is not.
    unresolved: set[Loc] = field(default_factory=set)
    errors: list[ConfigError] = field(default_factory=list)

    def add(self, message: str, loc: Loc) -> None:
        if any(loc[:end] in self.unresolved for end in range(len(loc) + 1)):
            return
        self.errors.append(
            ConfigError(
                message, file=self.file, path=_dotted(loc) or None, line=_line(self.lines, loc)
            )
        )

    def add_error(self, exc: ConfigError, base: Loc) -> None:
        """A ``ConfigError`` raised with a path relative to ``base`` (or none)."""
        self.add(exc.reason, (*base, *_parse_dotted(exc.path)) if exc.path else base)

    def raise_if_any(self) -> None:
        if not self.errors:
            return
        # In file order (sorted is stable: same line, found order); the same line once.
        by_text = {str(e): e for e in sorted(self.errors, key=lambda e: e.line or 0)}
        ordered = list(by_text.values())
        raise ordered[0] if len(ordered) == 1 else ConfigErrors(ordered)


@dataclass(slots=True)
class Config:
    """A loaded, validated config file."""

    path: Path | None
    app: AppConfig
    pipelines: dict[str, PipelineSpec]
    lines: dict[Loc, int] = field(default_factory=dict)

    def build(self, state: StateStore, only: list[str] | None = None) -> list[Pipeline]:
        """Pipelines with connectors constructed (not yet opened). What a connector refuses
        while it is built (a transform that cannot be imported...) is a ``ConfigError`` naming
        the file and line, every such mistake at once."""
        names = only or [n for n, spec in self.pipelines.items() if spec.config.enabled]
        unknown = [n for n in names if n not in self.pipelines]
        if unknown:
            raise ConfigError(
                f"no pipeline named {unknown[0]!r}; the config has {', '.join(self.pipelines)}",
                file=self._file(),
            )
        check = _Check(self._file() or "<config>", self.lines, {})
        built = [
            build_pipeline(self.pipelines[n], state, self.app.shutdown_timeout, check)
            for n in names
        ]
        check.raise_if_any()
        return [p for p in built if p is not None]

    def _file(self) -> str | None:
        return str(self.path) if self.path else None


def build_pipeline(
    spec: PipelineSpec, state: StateStore, shutdown_timeout_s: float, check: _Check | None = None
) -> Pipeline | None:
    """``spec``'s pipeline; with ``check``, a connector that refuses to be built is a mistake
    added to it (and ``None`` returned) instead of an exception."""
    own = check or _Check("<config>", {}, {})
    base: Loc = ("pipelines", spec.name)
    source = _build(own, (*base, "source"), "source", spec.source, f"{spec.name}.source", spec.name)
    sinks = [
        _build(own, spec.sink_locs[i], "sink", c, _connector_name(c, i, spec.sinks), spec.name)
        for i, c in enumerate(spec.sinks)
    ]
    processors = [
        _build(own, spec.processor_locs[i], "processor", c, c.name or c.type, spec.name)
        for i, c in enumerate(spec.processors)
    ]
    lock = None
    try:
        lock = _lock(spec.config.lock)
    except (ConfigError, ValueError) as exc:
        own.add(getattr(exc, "reason", str(exc)), (*base, "lock"))
    if check is None:
        own.raise_if_any()
    if any(c is None for c in (source, *sinks, *processors)):
        return None
    own_state: StateStore = state
    if spec.config.sync_errors is not None:
        own_state = SyncErrorsStore(state, spec.name, spec.config.sync_errors)
    return Pipeline(
        spec.name,
        source,
        sinks,
        processors,
        spec.settings(shutdown_timeout_s),
        own_state,
        lock,
    )


def _build(
    check: _Check, loc: Loc, kind: registry.Kind, config: ConnectorConfig, name: str, pipeline: str
) -> Any:
    try:
        return _construct(kind, config, name, pipeline)
    except ConfigError as exc:
        check.add_error(exc, loc)
    except ValueError as exc:  # a constructor (or its client library) refusing a value
        check.add(str(exc), loc)
    return None


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
    """Read, substitute and validate a config file; ``ConfigError`` (one line per mistake,
    ``ConfigErrors`` when there are several) if wrong."""
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
    raw, lines = _parse_yaml(text, str(path) if path else "<config>")
    return config_from_dict(raw, path, environ, lines)


def _parse_yaml(text: str, file: str) -> tuple[Any, dict[Loc, int]]:
    try:
        root = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"not valid YAML: {problem}", file=file, line=mark.line + 1 if mark else None
        ) from None
    return raw, _line_map(root) if root is not None else {}


# -- partial loading: a command reads only the settings it uses ----------------------------


@dataclass(slots=True)
class Outline:
    """What the state commands (status, dlq) need of a file: its state store and the names
    of its pipelines. Connector settings are not read, so their variables need not be set."""

    path: Path
    state: str
    pipelines: list[str]


def load_outline(path: str | Path, environ: dict[str, str] | None = None) -> Outline:
    """The state store URL (checked) and the pipeline names of a config file."""
    path = Path(path)
    raw, check = _read_for_part(path, environ)
    state = _substitute(raw.get("state", DEFAULT_STATE_URL), ("state",), check)
    if not isinstance(state, str):
        check.add("expected a state URL like sqlite:///PATH", ("state",))
    elif ("state",) not in check.unresolved:
        try:
            sqlite_path(state)
        except ConfigError as exc:
            check.add(exc.reason, ("state",))
    pipelines = raw.get("pipelines")
    check.raise_if_any()
    names = [str(n) for n in pipelines] if isinstance(pipelines, dict) else []
    return Outline(path, str(state), names)


def load_sources(
    path: str | Path, type_name: str, environ: dict[str, str] | None = None
) -> dict[str, ConnectorConfig]:
    """The validated sources of type ``type_name``, by pipeline name: only those sections
    are read, so a command on them (enqueue, outbox stats) needs no other setting."""
    path = Path(path)
    raw, check = _read_for_part(path, environ)
    pipelines = raw.get("pipelines")
    found: dict[str, ConnectorConfig] = {}
    for name, pipeline in (pipelines if isinstance(pipelines, dict) else {}).items():
        source = pipeline.get("source") if isinstance(pipeline, dict) else None
        if not isinstance(source, dict) or source.get("type") != type_name:
            continue
        loc: Loc = ("pipelines", name, "source")
        config = _connector("source", _substitute(source, loc, check), loc, check)
        if config is not None:
            found[str(name)] = config
    check.raise_if_any()
    return found


def _read_for_part(path: Path, environ: dict[str, str] | None) -> tuple[dict[str, Any], _Check]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", file=str(path)) from None
    raw, lines = _parse_yaml(text, str(path))
    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping with a 'pipelines' section", file=str(path))
    return raw, _Check(str(path), lines, environ if environ is not None else dict(os.environ))


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
        raise ConfigError("expected a mapping with a 'pipelines' or 'jobs' section", file=file)
    check = _Check(file, lines, environ if environ is not None else dict(os.environ))
    data = _substitute(raw, (), check)
    app: AppConfig | None = None
    try:
        app = AppConfig.model_validate(data)
    except ValidationError as exc:
        _collect(exc, AppConfig, (), check)
    # Connector sections are checked even when the file's own settings are wrong, so one
    # run of `validate` names every mistake.
    raw_pipelines = data.get("pipelines")
    specs: dict[str, PipelineSpec] = {}
    for name, raw_pipeline in (raw_pipelines if isinstance(raw_pipelines, dict) else {}).items():
        if not isinstance(raw_pipeline, dict):
            continue
        config = app.pipelines.get(name) if app is not None else None
        spec = _spec(str(name), raw_pipeline, config, check)
        if spec is not None:
            specs[str(name)] = spec
    check.raise_if_any()
    assert app is not None  # no mistake was found, so the app config validated
    return Config(path, app, specs, lines)


def _spec(
    name: str, raw: dict[str, Any], pc: PipelineConfig | None, check: _Check
) -> PipelineSpec | None:
    base: Loc = ("pipelines", name)
    source = _connector("source", raw.get("source"), (*base, "source"), check)
    sinks = [
        (i, _connector("sink", c, (*base, "sinks", i), check)) for i, c in _items(raw.get("sinks"))
    ]
    processors = [
        (i, _connector("processor", c, (*base, "processors", i), check))
        for i, c in _items(raw.get("processors"))
    ]
    if (
        pc is None
        or source is None
        or any(c is None for _, c in sinks)
        or any(c is None for _, c in processors)
    ):
        return None
    if pc.dead_letter.store == "source":
        _check_keeps_failures(source, (*base, "dead_letter", "store"), check)
    kept_sinks = [(i, c) for i, c in sinks if c is not None and c.enabled]
    if not kept_sinks:
        check.add("every sink is disabled (enabled: false); keep at least one", (*base, "sinks"))
        return None
    kept_processors = [(i, c) for i, c in processors if c is not None and c.enabled]
    return PipelineSpec(
        name=name,
        config=pc,
        source=source,
        sinks=[c for _, c in kept_sinks],
        processors=[c for _, c in kept_processors],
        sink_locs=[(*base, "sinks", i) for i, _ in kept_sinks],
        processor_locs=[(*base, "processors", i) for i, _ in kept_processors],
    )


def _items(value: Any) -> list[tuple[int, Any]]:
    return list(enumerate(value)) if isinstance(value, list) else []


def _check_keeps_failures(source: ConnectorConfig, loc: Loc, check: _Check) -> None:
    cls = registry.lookup("source", source.type)
    if not callable(getattr(cls, "ack_except", None)):
        keepers = [
            n
            for n in registry.names("source")
            if callable(getattr(registry.lookup("source", n), "ack_except", None))
        ]
        check.add(
            f"store 'source' needs a source that keeps failed records itself "
            f"({', '.join(keepers) or 'none installed'}); {source.type} does not: use 'state'",
            loc,
        )


def _connector(kind: registry.Kind, data: Any, loc: Loc, check: _Check) -> ConnectorConfig | None:
    """``data`` validated by its type's model; ``None`` (mistakes added) when it is wrong."""
    if not isinstance(data, dict):
        return None  # the pipeline's own model says what is wrong with it
    type_name = data.get("type")
    if not isinstance(type_name, str):
        known = ", ".join(registry.names(kind))
        check.add(f"missing 'type'; expected one of: {known}", loc)
        return None
    try:
        model: type[ConnectorConfig] = registry.lookup(kind, type_name).config_model
    except ConfigError as exc:
        check.add(exc.reason, (*loc, "type"))
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        _collect(exc, model, loc, check, label=type_name)
        return None


# -- environment --------------------------------------------------------------------------


def _substitute(value: Any, loc: Loc, check: _Check) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, (*loc, k), check) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, (*loc, i), check) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, operator, word = match.group(1), match.group(2), match.group(3)
        found = check.environ.get(name)
        if operator == "+":
            return word if found else ""
        if found is not None and (found != "" or operator is None):
            check.origins.setdefault(loc, []).append((name, found))
            return found
        if operator == "-":
            return word
        check.add(
            f"environment variable {name} is not set (write ${{{name}:-DEFAULT}} "
            "to give a default)",
            loc,
        )
        check.unresolved.add(loc)
        return ""

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


def _collect(
    exc: ValidationError,
    model: type[BaseModel],
    base: Loc,
    check: _Check,
    label: str | None = None,
) -> None:
    """Every validation error of ``exc`` as one line each. An unknown setting that is a
    misspelling of a missing one is reported once, as the misspelling."""
    errors = [
        (tuple(p for p in e["loc"] if not str(p).startswith("function-")), e)
        for e in exc.errors(include_url=False)
    ]
    missing = {loc: e for loc, e in errors if e["type"] == "missing"}
    unknown: dict[Loc, str] = {}
    for loc, error in errors:
        if error["type"] == "extra_forbidden":
            unknown[loc], meant = _unknown_setting(model, loc, label, missing)
            if meant is not None:
                missing.pop((*loc[:-1], meant), None)
    for loc, error in errors:
        if loc in unknown:
            check.add(unknown[loc], (*base, *loc))
        elif error["type"] != "missing" or loc in missing:
            check.add(_describe(error, (*base, *loc), check), (*base, *loc))


def _unknown_setting(
    model: type[BaseModel], loc: Loc, label: str | None, missing: dict[Loc, Any]
) -> tuple[str, str | None]:
    """The line for an unknown key, and the missing setting it misspells (if one)."""
    owner = _model_at(model, loc[:-1])
    allowed = list(owner.model_fields) if owner else []
    where = f" for {label}" if label and len(loc) == 1 else ""
    wanted = [str(m[-1]) for m in missing if m[:-1] == loc[:-1]]
    hint = difflib.get_close_matches(str(loc[-1]), wanted, n=1) or difflib.get_close_matches(
        str(loc[-1]), allowed, n=1
    )
    if hint:
        meant = hint[0] if hint[0] in wanted else None
        return f"unknown setting {str(loc[-1])!r}{where}; did you mean {hint[0]!r}?", meant
    listed = f"; expected one of: {', '.join(allowed)}" if allowed else ""
    return f"unknown setting {str(loc[-1])!r}{where}{listed}", None


def _describe(error: Any, full: Loc, check: _Check) -> str:
    if error["type"] == "missing":
        return "required setting is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    message = f"{message[0].lower()}{message[1:]}" if message else "invalid"
    got = error.get("input")
    secret = any(isinstance(p, str) and is_secret_name(p) for p in full)
    origins = check.origins.get(full, [])
    sources = ", ".join(
        f"{name}=***" if secret or is_secret_name(name) else redact_url(f"{name}={value!r}")
        for name, value in origins
    )
    origin = f" (from {sources})" if sources else ""
    shown = "true" if got is True else "false" if got is False else repr(got)
    # A validator that quotes the value already said it (short values like 0 are not
    # searched for: "greater than 0" does not quote the 0 it got).
    quoted = len(shown) > 2 and (shown in message or redact_url(shown) in message)
    said = ", got " in message or quoted
    if said or secret or isinstance(got, dict | list) or got is None:
        return f"{message}{origin}"  # the validator said what it got, or it is not shown
    if len(origins) == 1 and origins[0][1] == got:
        return f"{message}, got {sources}"  # the whole value is the variable's
    return f"{message}, got {redact_url(shown)}{origin}"  # a refused URL may hold a password


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


def _parse_dotted(path: str) -> Loc:
    """``indexes.products.transform`` or ``sinks[0].url`` as a location."""
    out: list[str | int] = []
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        out.append(int(part[1:-1]) if part.startswith("[") else part)
    return tuple(out)


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
