"""The error hierarchy. The runtime decides from the class what to do next.

- ``RetryableError``: transient; retry after ``delay_s`` (if given) with the retry policy.
- ``ConnectorError`` / ``ConnectionFailed`` / ``ConnectionClosed``: the dependency itself is
  unavailable; the whole batch is rolled back and the pipeline pauses (circuit breaker).
- ``PermanentError``: this data will never be accepted; isolate it and dead-letter it.
- ``ConfigError``: a user mistake in the configuration; one line, nothing starts.
- ``ConfigRefused`` (a ``ConfigError``): the dependency answers but refuses us for a reason
  retrying will not fix (wrong password, unknown role, missing database or table, no grant):
  the pipeline stops with this error instead of retrying it as an outage.
"""

from __future__ import annotations


class SyncWorkerError(Exception):
    """Root of every error syncworker raises on purpose."""


class ConfigError(SyncWorkerError):
    """A configuration mistake. ``str(err)`` is one line naming file, setting and expectation."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        path: str | None = None,
        line: int | None = None,
    ) -> None:
        self.file = file
        self.path = path
        self.line = line
        self.reason = message
        # The connector that refused (a sink's name), when the runtime knows it: set by the
        # delivery step, read when the pipeline says who stopped it.
        self.connector: str | None = None
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        setting = f"{path}: " if path else ""
        super().__init__(f"{where}{setting}{message}")


class ConfigRefused(ConfigError):
    """The dependency answered and refuses our settings: wrong credentials, an unknown role
    or user, a missing database, table, column or grant. Only the operator can fix it, so the
    pipeline that met it stops (its batch goes back to the source untouched) and says why."""


class ConnectorError(SyncWorkerError):
    """A connector could not do its work because its dependency failed."""


class ConnectionFailed(ConnectorError):
    """Connecting (or reconnecting) to the dependency failed."""


class ConnectionClosed(ConnectorError):
    """The connection was lost while in use."""


class RetryableError(SyncWorkerError):
    """A transient failure: try again, after ``delay_s`` seconds when given (e.g. Retry-After)."""

    def __init__(self, message: str, *, delay_s: float | None = None) -> None:
        super().__init__(message)
        self.delay_s = delay_s


class PermanentError(SyncWorkerError):
    """The input will never be accepted as it is: dead-letter it, do not retry."""


class LockLost(SyncWorkerError):
    """The pipeline's lock was lost; in-flight work must be rolled back."""


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` means "the dependency is unavailable", not "this data is bad"."""
    # OSError covers a full disk or a lost mount: the sink is at fault, not the record.
    return isinstance(exc, RetryableError | ConnectorError | OSError | TimeoutError)


def stops_pipeline(exc: BaseException) -> bool:
    """True when ``exc`` is the configuration's or the credentials' fault: retrying cannot fix
    it and no record is to blame, so the pipeline stops with it (batch handed back)."""
    return isinstance(exc, ConfigError)


class UnsupportedOperation(SyncWorkerError):
    """The pipeline's connectors cannot do what was asked (e.g. a full sync without ``scan``)."""


class SinkUnavailable(ConnectorError):
    """A sink kept failing as a whole after the retries: roll the batch back and pause."""

    def __init__(self, sink: str, cause: BaseException) -> None:
        super().__init__(f"sink {sink!r} unavailable: {type(cause).__name__}: {cause}")
        self.sink = sink
        self.cause = cause
