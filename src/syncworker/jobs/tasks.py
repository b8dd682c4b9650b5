"""Tasks: functions registered by name with the defaults their jobs get at enqueue."""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pydantic

from syncworker.errors import ConfigError
from syncworker.jobs.backoff import Backoff

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(slots=True)
class Task:
    """A handler and its defaults.

    ``fn(payload, ctx)`` or ``fn(payload)``, async or plain. ``retries`` counts the runs after
    the first (``max_attempts = retries + 1``). With ``model`` the payload is validated at
    enqueue (``ValueError`` to the caller) and again at run (dead at once), and the handler
    receives the model instance; without ``model``, a pydantic model annotating the handler's
    first parameter is the model. ``cpu=True``: a plain, module-level function run in the
    worker's process pool, so a CPU-heavy handler cannot starve the event loop (and the
    heartbeat); it gets ``ctx`` without ``progress``.
    """

    name: str
    fn: Callable[..., Any]
    queue: str = "default"
    priority: int = 0
    timeout_s: float | None = None
    retries: int = 0
    backoff: Backoff = field(default_factory=Backoff)
    model: type[pydantic.BaseModel] | None = None
    cpu: bool = False
    is_async: bool = field(init=False)
    takes_ctx: bool = field(init=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("task name is empty")
        if not callable(self.fn):
            raise ConfigError(f"task {self.name!r}: handler {self.fn!r} is not callable")
        if self.retries < 0:
            raise ConfigError(f"task {self.name!r}: retries {self.retries} must be >= 0")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ConfigError(f"task {self.name!r}: timeout_s {self.timeout_s} must be > 0")
        if not -1000 <= self.priority <= 1000:
            raise ConfigError(f"task {self.name!r}: priority {self.priority} outside -1000..1000")
        self.is_async = inspect.iscoroutinefunction(self.fn)
        if self.cpu and self.is_async:
            raise ConfigError(f"task {self.name!r}: cpu=True needs a plain def, not async def")
        self.takes_ctx = _positional_count(self.fn) >= 2
        if self.model is None:
            self.model = _payload_model(self.fn)

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    @classmethod
    def from_path(cls, path: str, **defaults: Any) -> Task:
        """The task for ``"pkg.module:function"`` (a YAML ``handler:``); ``name`` defaults to
        the path. ``ConfigError`` when the module or attribute is missing."""
        module_name, sep, attr = path.partition(":")
        if not sep or not module_name or not attr:
            raise ConfigError(f"handler {path!r}: expected 'package.module:function'")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"handler {path!r}: cannot import {module_name}: {exc}") from exc
        fn: Any = module
        for part in attr.split("."):
            try:
                fn = getattr(fn, part)
            except AttributeError:
                raise ConfigError(f"handler {path!r}: {module_name} has no {attr!r}") from None
        if isinstance(fn, Task):
            return fn
        defaults.setdefault("name", path)
        return cls(fn=fn, **defaults)

    def validate(self, payload: Any) -> Any:
        """The payload to store: a model instance dumped to JSON-able values, a mapping
        checked against ``model``. ``ValueError`` names the task and the fields."""
        if isinstance(payload, pydantic.BaseModel):
            if self.model is not None and not isinstance(payload, self.model):
                raise ValueError(
                    f"task {self.name!r}: payload is a {type(payload).__name__}, "
                    f"expected {self.model.__name__}"
                )
            return payload.model_dump(mode="json")
        if self.model is not None and not isinstance(payload, bytes):
            self.parse(payload)
        return payload

    def parse(self, payload: Any) -> Any:
        """What the handler receives: the model instance (``ValueError`` when the payload does
        not fit), or the payload itself."""
        if self.model is None:
            return payload
        try:
            return self.model.model_validate(payload)
        except pydantic.ValidationError as exc:
            reasons = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<payload>'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ValueError(f"task {self.name!r}: invalid payload: {reasons}") from None


def _payload_model(fn: Callable[..., Any]) -> type[pydantic.BaseModel] | None:
    """The pydantic model annotating ``fn``'s first parameter, if there is one."""
    try:
        first = next(iter(inspect.signature(fn).parameters), None)
        hints = typing.get_type_hints(fn) if first is not None else {}
    except (TypeError, ValueError, NameError):  # no signature, or an unresolvable hint
        return None
    hint = hints.get(first) if first is not None else None
    if isinstance(hint, type) and issubclass(hint, pydantic.BaseModel):
        return hint
    return None


def _positional_count(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 2
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 2
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in params if p.kind in kinds)


class TaskRegistry:
    """Tasks by name. ``task(...)`` registers a function and returns it unchanged (so a cpu
    task stays picklable by reference)."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    def task(self, name: str | None = None, **defaults: Any) -> Callable[[F], F]:
        def register(fn: F) -> F:
            self.add(Task(name=name or fn.__name__, fn=fn, **defaults))
            return fn

        return register

    def add(self, task: Task) -> Task:
        """Register ``task``; ``ConfigError`` when its name is taken by another handler."""
        known = self._tasks.get(task.name)
        if known is not None and known.fn is not task.fn:
            raise ConfigError(f"task {task.name!r} is registered twice")
        self._tasks[task.name] = task
        return task

    def get(self, name: str) -> Task | None:
        return self._tasks.get(name)

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(list(self._tasks.values()))

    def __len__(self) -> int:
        return len(self._tasks)
