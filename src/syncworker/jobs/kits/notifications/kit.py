"""The notifications kit: ``kit:notifications.push``, ``.email``, ``.sms`` and ``.send`` (by
the payload's ``type``), seed 003's notification queue (see docs/notifications.md).

Every attempt (each run of a handler, retries included) writes one row to the seed's
``notifications`` table: success true when the handler returns, false when it raises, the
row written before the error goes up. A row that cannot be written is logged and does not
change the outcome: a delivered notification is never sent again because the log failed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import structlog

from syncworker.errors import ConnectionFailed, PermanentError, RetryableError
from syncworker.jobs.context import JobContext
from syncworker.jobs.kits.base import Kit
from syncworker.jobs.kits.database import open_kit_pool
from syncworker.jobs.kits.notifications.config import NotificationsKitConfig
from syncworker.jobs.kits.notifications.models import NotificationJob

if TYPE_CHECKING:
    from syncworker.jobs.kits.notifications.email import EmailSender
    from syncworker.jobs.kits.notifications.push import FcmSender
    from syncworker.jobs.kits.notifications.sms import SmsProvider

S = TypeVar("S")
log = structlog.get_logger("syncworker.jobs.kits.notifications")

_INSERT_ROW = (
    "INSERT INTO notifications (id, user_id, type, title, body, success, created_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, now())"
)
Channel = Callable[[NotificationJob, JobContext | None], Awaitable[dict[str, Any]]]


class NotificationsKit(Kit):
    name = "notifications"

    def __init__(self, config: NotificationsKitConfig) -> None:
        self.config = config
        self._pool: Any = None
        self._http: httpx.AsyncClient | None = None
        self._push: FcmSender | None = None
        self._email: EmailSender | None = None
        self._sms: SmsProvider | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        config = self.config
        if config.email is not None and self._email is None:
            from syncworker.jobs.kits.notifications.email import EmailSender

            self._email = EmailSender(config.email)
        if (config.push is not None or config.sms is not None) and self._http is None:
            self._http = self._http_client()
        if config.push is not None and self._push is None:
            from syncworker.jobs.kits.notifications.push import FcmSender

            assert self._http is not None
            self._push = FcmSender(
                config.push, self._http, max_retry_after_s=config.max_retry_after
            )
        if config.sms is not None and self._sms is None:
            from syncworker.jobs.kits.notifications.sms import build_provider

            assert self._http is not None
            self._sms = build_provider(
                config.sms, self._http, max_retry_after_s=config.max_retry_after
            )
        if config.database is not None and self._pool is None:
            self._pool = await open_kit_pool(
                "notifications",
                config.database.get_secret_value(),
                pool_size=self.config.pool_size,
                connect_timeout_s=self.config.connect_timeout,
            )

    def _http_client(self) -> httpx.AsyncClient:
        push = self.config.push
        connections = max(push.max_concurrency if push else 0, 10)
        limits = httpx.Limits(
            max_connections=connections,
            max_keepalive_connections=connections,
            keepalive_expiry=30.0,
        )
        return httpx.AsyncClient(limits=limits, timeout=10.0, follow_redirects=False)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        http, self._http = self._http, None
        self._push = self._sms = self._email = None
        if pool is not None:
            await pool.close()
        if http is not None:
            await http.aclose()

    def handlers(self) -> Mapping[str, Callable[..., Awaitable[Any]]]:
        return {"push": self.push, "email": self.email, "sms": self.sms, "send": self.send}

    # -- handlers -------------------------------------------------------------------------

    async def send(self, job: NotificationJob, ctx: JobContext | None = None) -> dict[str, Any]:
        """The seed's one notification queue: the payload's ``type`` picks the channel."""
        handler = {"push": self.push, "email": self.email, "sms": self.sms}[job.type]
        return await handler(job, ctx)

    async def push(self, job: NotificationJob, ctx: JobContext | None = None) -> dict[str, Any]:
        return await self._attempt("push", job, ctx, self._send_push)

    async def email(self, job: NotificationJob, ctx: JobContext | None = None) -> dict[str, Any]:
        return await self._attempt("email", job, ctx, self._send_email)

    async def sms(self, job: NotificationJob, ctx: JobContext | None = None) -> dict[str, Any]:
        return await self._attempt("sms", job, ctx, self._send_sms)

    # -- one attempt ----------------------------------------------------------------------

    async def _attempt(
        self, kind: str, job: NotificationJob, ctx: JobContext | None, channel: Channel
    ) -> dict[str, Any]:
        if job.type != kind:
            raise PermanentError(f"kit:notifications.{kind} got a job of type {job.type!r}")
        user_id = self._user_uuid(job)
        started = time.monotonic()
        try:
            result = await channel(job, ctx)
        except BaseException as exc:
            await self._record(kind, job, user_id, success=False)
            log.info(
                "notification_failed",
                channel=kind,
                user_id=job.userId,
                error_class=type(exc).__name__,
                error=str(exc)[:300],
            )
            raise
        await self._record(kind, job, user_id, success=True)
        log.info(
            "notification_sent",
            channel=kind,
            user_id=job.userId,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return result

    def _user_uuid(self, job: NotificationJob) -> uuid.UUID | None:
        """The row's user_id; with a database a userId that is no UUID can never be logged
        (notifications.user_id is UUID NOT NULL), so it is refused before sending."""
        if self._pool is None:
            return None
        found = job.user_uuid()
        if found is None:
            raise PermanentError(
                f"notifications: userId {job.userId!r} is not a UUID (notifications.user_id)"
            )
        return found

    async def _record(
        self, kind: str, job: NotificationJob, user_id: uuid.UUID | None, *, success: bool
    ) -> None:
        if user_id is None or self._pool is None:
            return
        params = (uuid.uuid4(), user_id, kind, job.title, job.body, success)
        try:
            async with self._pool.connection() as conn:
                await conn.execute(_INSERT_ROW, params)
        except Exception as exc:  # the log row must not decide the outcome
            log.warning(
                "notification_row_failed",
                channel=kind,
                user_id=job.userId,
                success=success,
                error=f"{type(exc).__name__}: {str(exc)[:200]}",
            )

    def _channel(self, name: str, sender: S | None) -> S:
        if sender is not None:
            return sender
        if getattr(self.config, name) is None:
            raise PermanentError(
                f"notifications: {name} is not configured; add jobs.kits.notifications.{name}"
            )
        raise ConnectionFailed(f"notifications: the kit is not open ({name})")

    # -- channels -------------------------------------------------------------------------

    async def _send_push(self, job: NotificationJob, ctx: JobContext | None) -> dict[str, Any]:
        sender = self._channel("push", self._push)
        if not job.tokens():
            raise PermanentError("push: the job has no fcmToken (nor fcmTokens)")
        done = _previous_push(ctx)
        settled = done["delivered"].keys() | done["invalid"].keys()
        pending = [token for token in job.tokens() if token not in settled]
        outcomes = await sender.send_all(pending, job.title, job.body, job.data) if pending else []
        for outcome in outcomes:
            if outcome.status in ("delivered", "invalid"):
                done[outcome.status][outcome.token] = outcome.message_id or outcome.reason
        auth = [o for o in outcomes if o.status == "auth"]
        retry = [o for o in outcomes if o.status == "retry"]
        if auth or retry:
            await _save_push(ctx, done)
        if auth:
            raise ConnectionFailed(f"push: credentials refused: {auth[0].reason}")
        if retry:
            delays = [o.retry_after_s for o in retry if o.retry_after_s is not None]
            raise RetryableError(
                f"push: {len(retry)} of {len(pending)} token(s) to retry: {retry[0].reason}",
                delay_s=max(delays) if delays else None,
            )
        if not done["delivered"]:
            first = next(iter(done["invalid"].values()), "")
            raise PermanentError(
                f"push: all {len(done['invalid'])} token(s) invalid or unregistered: {first}"
            )
        return {
            "channel": "push",
            "delivered": len(done["delivered"]),
            "message_ids": [m for m in done["delivered"].values() if m],
            "invalid_tokens": sorted(done["invalid"]),
        }

    async def _send_email(self, job: NotificationJob, ctx: JobContext | None) -> dict[str, Any]:
        sender = self._channel("email", self._email)
        from syncworker.jobs.kits.notifications.email import check_address

        to = check_address(job.email)
        variables = {"title": job.title, "body": job.body, "data": job.data, "user_id": job.userId}
        html, text = sender.render(variables)
        reply = await sender.send(sender.compose(to, job.title, html, text))
        return {"channel": "email", "to": to, "reply": reply}

    async def _send_sms(self, job: NotificationJob, ctx: JobContext | None) -> dict[str, Any]:
        provider = self._channel("sms", self._sms)
        from syncworker.jobs.kits.notifications.sms import normalize_number

        to = normalize_number(job.phoneNumber)
        if not job.body:
            raise PermanentError("sms: the job's body is empty")
        receipt = await provider.send(to, job.body)
        return {
            "channel": "sms",
            "to": to,
            "message_ids": receipt.message_ids,
            "parts": receipt.parts,
        }


def _previous_push(ctx: JobContext | None) -> dict[str, dict[str, str | None]]:
    """Tokens an earlier attempt of this job settled (delivered or invalid): a retry sends
    only the rest, so a device never gets the same notification twice."""
    previous = ctx.job.progress if ctx is not None else None
    done: dict[str, dict[str, str | None]] = {"delivered": {}, "invalid": {}}
    if isinstance(previous, dict):
        for key in done:
            value = previous.get(key)
            if isinstance(value, dict):
                done[key] = {str(k): (str(v) if v is not None else None) for k, v in value.items()}
    return done


async def _save_push(ctx: JobContext | None, done: dict[str, dict[str, str | None]]) -> None:
    if ctx is None or ctx.backend is None:
        return
    await ctx.progress({"delivered": done["delivered"], "invalid": done["invalid"]})
