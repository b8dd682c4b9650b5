"""The notifications kit end to end: real PostgreSQL (the seed's notifications table), the
fake FCM (OAuth token endpoint + messages:send) and fake Vonage in tests/fakes/, a real SMTP
server (aiosmtpd) in this process, and jobs run by a real JobsService on the memory backend
so RetryableError goes through the runtime's retries and backoff."""

from __future__ import annotations

import re
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import psycopg
import pydantic
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from structlog.testing import capture_logs

from syncworker.config import config_from_dict
from syncworker.errors import ConfigError, ConnectionFailed, PermanentError, RetryableError
from syncworker.jobs.kits.notifications.config import NotificationsKitConfig
from syncworker.jobs.kits.notifications.kit import NotificationsKit
from syncworker.jobs.kits.notifications.models import NotificationJob
from syncworker.jobs.service import JobsService
from syncworker.queue.base import Job, JobState
from tests.fakes.fcm import FcmServer
from tests.fakes.sms import VonageServer
from tests.waiting import eventually

SCHEMA = Path(__file__).parents[2] / "examples" / "messenger_worker" / "schema.sql"


def notifications_ddl() -> str:
    found = re.search(
        r"CREATE TABLE IF NOT EXISTS notifications \(.*?\);", SCHEMA.read_text(), re.S
    )
    assert found is not None, "the seed's notifications table is in schema.sql"
    return found.group(0)


@pytest.fixture
def db(pg_url: str) -> str:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(notifications_ddl())
    return pg_url


def rows(db: str) -> list[tuple[Any, ...]]:
    """(user_id, type, title, body, success) of every notifications row, oldest first."""
    with psycopg.connect(db) as conn:
        found = conn.execute(
            "SELECT user_id::text, type, title, body, success FROM notifications "
            "WHERE id IS NOT NULL AND created_at IS NOT NULL ORDER BY created_at, id"
        ).fetchall()
    return [tuple(r) for r in found]


@pytest.fixture
async def fcm() -> AsyncIterator[FcmServer]:
    async with FcmServer() as server:
        yield server


@pytest.fixture
async def vonage() -> AsyncIterator[VonageServer]:
    async with VonageServer() as server:
        yield server


# -- SMTP: a real server (aiosmtpd) in this process -----------------------------------------


class Mailbox:
    """An aiosmtpd handler: refuses RCPT with 451 for the first ``defer`` attempts, with 550
    for addresses in ``unknown``; keeps what it accepted."""

    def __init__(self) -> None:
        self.defer = 0
        self.unknown: set[str] = set()
        self.received: list[tuple[list[str], bytes]] = []
        self.logged_in: list[bool] = []
        self.rcpt_replies: list[str] = []
        self._lock = threading.Lock()

    async def handle_RCPT(  # aiosmtpd's hook names
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        with self._lock:
            if address in self.unknown:
                reply = f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
            elif self.defer > 0:
                self.defer -= 1
                reply = "451 4.7.1 Greylisted, please try again later"
            else:
                envelope.rcpt_tos.append(address)
                reply = "250 OK"
            self.rcpt_replies.append(reply[:3])
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        with self._lock:
            self.received.append((list(envelope.rcpt_tos), content))
            self.logged_in.append(bool(session.authenticated))
        return "250 2.0.0 Ok: queued as TEST1"

    def messages(self) -> list[Message]:
        return [message_from_bytes(content) for _, content in self.received]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SMTP_USER, SMTP_PASSWORD = "worker@sup.example", "smtp-pass-7d1c"


def _authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535


def _controller(mailbox: Mailbox, **extra: Any) -> Controller:
    return Controller(mailbox, hostname="127.0.0.1", port=_free_port(), **extra)


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    controller = _controller(mailbox)
    controller.start()
    try:
        yield mailbox, controller.port
    finally:
        controller.stop()


@pytest.fixture
def smtp_auth() -> Iterator[tuple[Mailbox, int]]:
    """AUTH offered over plain text (a test server only: there is no TLS here)."""
    mailbox = Mailbox()
    controller = _controller(mailbox, authenticator=_authenticator, auth_require_tls=False)
    controller.start()
    try:
        yield mailbox, controller.port
    finally:
        controller.stop()


def email_settings(port: int, **extra: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "starttls": "auto", "timeout": "5s",
            "from_address": "no-reply@sup.example", "from_name": "SUP", **extra}  # fmt: skip


# -- the job system -------------------------------------------------------------------------


def service_for(kit: dict[str, Any], *, concurrency: int = 20) -> JobsService:
    backoff = {"base": "10ms", "max": "50ms"}
    raw = {
        "jobs": {
            "backend": {"type": "memory"},
            "queues": {"notification": {"concurrency": concurrency, "timeout": "30s"}},
            "tasks": {
                name: {
                    "handler": f"kit:notifications.{name}",
                    "queue": "notification",
                    "retries": 3,
                    "backoff": backoff,
                }
                for name in ("send", "push", "email", "sms")
            },
            "kits": {"notifications": kit},
        }
    }
    config = config_from_dict(raw)
    assert config.app.jobs is not None
    return JobsService.from_config(config.app.jobs)


async def finished(service: JobsService, ids: list[str], timeout_s: float = 60) -> list[Job]:
    async def done() -> list[Job] | None:
        jobs = [await service.backend.get(job_id) for job_id in ids]
        states = (JobState.COMPLETED, JobState.DEAD)
        if all(job is not None and job.state in states for job in jobs):
            return [job for job in jobs if job is not None]
        return None

    found = await eventually(done, f"{len(ids)} jobs finished", timeout_s=timeout_s)
    return list(found)


def push(user: str, *tokens: str, **extra: Any) -> dict[str, Any]:
    first, *more = tokens
    payload = {"type": "push", "userId": user, "title": "New message", "body": "Hi",
               "fcmToken": first, "data": {"chatId": "c1"}, **extra}  # fmt: skip
    if more:
        payload["fcmTokens"] = more
    return payload


# -- acceptance -----------------------------------------------------------------------------


async def test_a_thousand_push_jobs_multicast_unregistered_not_retried_every_attempt_logged(
    fcm: FcmServer, db: str
) -> None:
    users = [str(uuid.uuid4()) for _ in range(1000)]
    gone = "token-unregistered"
    fcm.unregistered.add(gone)
    payloads = []
    for index, user in enumerate(users):
        if index % 5 == 0:  # every fifth job is a multicast to three devices
            tokens = [f"t{index}-a", f"t{index}-b", f"t{index}-c"]
            if index % 50 == 0:
                tokens.append(gone)  # a multicast with a dead device among live ones
            payloads.append(push(user, *tokens))
        elif index % 97 == 1:
            payloads.append(push(user, gone))  # only a dead device: nothing to deliver
        else:
            payloads.append(push(user, f"t{index}"))
    # Failures that pass: 503 twice for one device of a multicast (its job runs 3 times,
    # the job's other devices are not sent to again), 429 once for a single-device job.
    fcm.flaky.update({"t50-b": [503, 503], "t7": [429]})
    expected = {t for p in payloads for t in [p["fcmToken"], *p.get("fcmTokens", [])]} - {gone}
    only_gone = sum(1 for p in payloads if p["fcmToken"] == gone)
    with_gone = sum(1 for p in payloads if gone in [p["fcmToken"], *p.get("fcmTokens", [])])

    service = service_for({"database": db, "push": fcm.push_settings()}, concurrency=50)
    await service.start()
    try:
        ids = await service.jobs.enqueue_many([("send", payload) for payload in payloads])
        jobs = await finished(service, ids)
    finally:
        await service.stop()

    dead = [job for job in jobs if job.state is JobState.DEAD]
    assert len(dead) == only_gone > 0
    assert all(job.attempts == 1 and "unregistered" in (job.error or "") for job in dead)
    # Every live token got the notification exactly once, retries included.
    assert sorted(fcm.delivered_to()) == sorted(expected)
    # The dead token was tried once per job carrying it, never again.
    assert sum(1 for a in fcm.attempts if a.token == gone) == with_gone
    flaky = next(job for job in jobs if job.id == ids[50])
    assert flaky.state is JobState.COMPLETED and flaky.attempts == 3
    assert flaky.result["delivered"] == 3 and flaky.result["invalid_tokens"] == [gone]
    assert [a.status for a in fcm.attempts if a.token == "t7"] == [429, 200]
    assert [a.status for a in fcm.attempts if a.token == "t50-a"] == [200]
    assert fcm.token_requests == 1  # minted once, cached for all of them
    logged = rows(db)
    assert len(logged) == sum(job.attempts for job in jobs)
    assert sum(1 for r in logged if r[4]) == len(jobs) - len(dead)
    assert sum(1 for r in logged if not r[4]) == sum(job.attempts - 1 for job in jobs) + len(dead)
    assert {r[1] for r in logged} == {"push"} and {r[0] for r in logged} == set(users)


async def test_an_smtp_server_that_refuses_for_a_while_then_a_bad_address(
    smtp: tuple[Mailbox, int], db: str
) -> None:
    mailbox, port = smtp
    mailbox.defer = 2
    mailbox.unknown.add("nobody@sup.example")
    user = str(uuid.uuid4())
    service = service_for({"database": db, "email": email_settings(port)})
    await service.start()
    try:
        title = "Your <b>code</b>"
        good = await service.jobs.enqueue(
            "send",
            {"type": "email", "userId": user, "title": title, "body": "1234 & more",
             "email": "ann@sup.example", "data": {"url": "https://sup.example/x?a=1&b=2"}},
        )  # fmt: skip
        [done] = await finished(service, [good])
        bad = await service.jobs.enqueue(
            "email", {"type": "email", "userId": user, "title": "t", "body": "b",
                      "email": "nobody@sup.example"})  # fmt: skip
        malformed = await service.jobs.enqueue(
            "email", {"type": "email", "userId": user, "title": "t", "body": "b",
                      "email": "not an address"})  # fmt: skip
        refused, invalid = await finished(service, [bad, malformed])
    finally:
        await service.stop()

    assert done.state is JobState.COMPLETED, done.error
    assert done.attempts == 3  # 451, 451, accepted
    assert mailbox.rcpt_replies[:3] == ["451", "451", "250"]
    assert done.result["to"] == "ann@sup.example"
    [message] = mailbox.messages()
    assert message.get_content_type() == "multipart/alternative"
    assert message["Subject"] == title and message["To"] == "ann@sup.example"
    parts = {part.get_content_type(): part for part in message.get_payload()}  # type: ignore[union-attr]
    html = parts["text/html"].get_payload(decode=True).decode()  # type: ignore[union-attr]
    text = parts["text/plain"].get_payload(decode=True).decode().replace("\r\n", "\n")  # type: ignore[union-attr]
    assert "Your &lt;b&gt;code&lt;/b&gt;" in html and "1234 &amp; more" in html  # autoescaped
    assert 'href="https://sup.example/x?a=1&amp;b=2"' in html
    assert text.startswith("Your <b>code</b>\n\n1234 & more")
    assert (refused.state, refused.attempts) == (JobState.DEAD, 1)
    assert "550" in (refused.error or "")
    assert (invalid.state, invalid.attempts) == (JobState.DEAD, 1)
    assert "not an e-mail address" in (invalid.error or "")
    assert mailbox.rcpt_replies.count("550") == 1  # the malformed address never reached SMTP
    logged = rows(db)
    assert [r[4] for r in logged] == [False, False, True, False, False]
    assert {r[1] for r in logged} == {"email"} and logged[2][2:4] == (title, "1234 & more")


# -- push details ---------------------------------------------------------------------------


def kit_for(**settings: Any) -> NotificationsKit:
    return NotificationsKit(NotificationsKitConfig.model_validate(settings))


def job(**fields: Any) -> NotificationJob:
    base = {"type": "push", "userId": str(uuid.uuid4()), "title": "T", "body": "B"}
    return NotificationJob.model_validate(base | fields)


async def test_an_expired_access_token_is_refreshed_once_and_the_send_retried(
    fcm: FcmServer,
) -> None:
    async with kit_for(push=fcm.push_settings()) as kit:
        first = await kit.push(job(fcmToken="dev-1"))
        fcm.expire_tokens()
        second = await kit.push(job(fcmToken="dev-2", fcmTokens=["dev-3"]))
    assert first["delivered"] == 1 and second["delivered"] == 2
    assert fcm.token_requests == 2
    assert [a.status for a in fcm.attempts].count(401) == 2  # both sends of the second job
    assert sorted(fcm.delivered_to()) == ["dev-1", "dev-2", "dev-3"]
    assert fcm.messages[0] == {"token": "dev-1", "notification": {"title": "T", "body": "B"}}


async def test_all_tokens_invalid_is_permanent_and_logged_as_a_failed_attempt(
    fcm: FcmServer, db: str
) -> None:
    fcm.unregistered.add("gone")
    fcm.malformed.add("garbage")
    async with kit_for(database=db, push=fcm.push_settings()) as kit:
        with pytest.raises(PermanentError, match="all 2 token"):
            await kit.push(job(fcmToken="gone", fcmTokens=["garbage"]))
    assert [r[4] for r in rows(db)] == [False]
    assert len(fcm.attempts) == 2


async def test_429_and_503_are_retryable_with_retry_after(fcm: FcmServer) -> None:
    fcm.retry_after = "7"
    fcm.fail_next(429)
    async with kit_for(push=fcm.push_settings(), max_retry_after="5s") as kit:
        with pytest.raises(RetryableError) as caught:
            await kit.push(job(fcmToken="dev-1"))
    assert caught.value.delay_s == 5.0  # Retry-After 7 cut to max_retry_after
    assert "429" in str(caught.value)


async def test_refused_credentials_say_why_without_the_key(fcm: FcmServer) -> None:
    settings = fcm.push_settings(project_id="someone-else-entirely")
    with capture_logs() as logs:
        async with kit_for(push=settings) as kit:
            with pytest.raises(ConnectionFailed) as caught:
                await kit.push(job(fcmToken="dev-1"))
        bad_issuer = fcm.push_settings(client_email="intruder@evil.example")
        async with kit_for(push=bad_issuer) as kit:
            with pytest.raises(ConnectionFailed) as refused:
                await kit.push(job(fcmToken="dev-1"))
    assert "403" in str(caught.value) and "PERMISSION_DENIED" in str(caught.value)
    assert "refused the service account 'intruder@evil.example'" in str(refused.value)
    assert fcm.refused_assertions == ["invalid_grant: Invalid JWT: InvalidIssuerError"]
    secret_line = fcm.private_key_pem.splitlines()[1]
    for text in [str(caught.value), str(refused.value), repr(logs)]:
        assert secret_line not in text


async def test_a_user_id_that_is_no_uuid_is_refused_before_sending(fcm: FcmServer, db: str) -> None:
    async with kit_for(database=db, push=fcm.push_settings()) as kit:
        with pytest.raises(PermanentError, match="userId 'u1' is not a UUID"):
            await kit.send(job(userId="u1", fcmToken="dev-1"))
    assert fcm.attempts == [] and rows(db) == []


# -- SMS ------------------------------------------------------------------------------------


async def test_sms_throttled_is_retried_by_the_runtime_invalid_is_dead(
    vonage: VonageServer, db: str
) -> None:
    vonage.number_next["447700900000"] = ["1"]  # throttled once
    vonage.number_status["447700900666"] = "6"  # unroutable
    user = str(uuid.uuid4())
    service = service_for({"database": db, "sms": vonage.sms_settings()})
    await service.start()
    try:
        sms = {"type": "sms", "userId": user, "title": "OTP", "body": "Your code: 123456"}
        ids = [
            await service.jobs.enqueue("sms", sms | {"phoneNumber": "+44 7700 900000"}),
            await service.jobs.enqueue("send", sms | {"phoneNumber": "+447700900666"}),
            await service.jobs.enqueue("send", sms | {"phoneNumber": "12"}),
        ]
        ok, unroutable, malformed = await finished(service, ids)
    finally:
        await service.stop()
    assert ok.state is JobState.COMPLETED and ok.attempts == 2, ok.error
    assert ok.result["to"] == "447700900000" and ok.result["message_ids"]
    [sent] = vonage.messages
    assert (sent["to"], sent["from"], sent["text"]) == ("447700900000", "SupMsg", sms["body"])
    assert (unroutable.state, unroutable.attempts) == (JobState.DEAD, 1)
    assert "status 6" in (unroutable.error or "")
    assert (malformed.state, malformed.attempts) == (JobState.DEAD, 1)
    assert len(vonage.requests) == 3  # the malformed number was never sent
    # Throttled, then accepted; unroutable and malformed: one failed attempt each.
    assert sorted(r[4] for r in rows(db)) == [False, False, False, True]


async def test_sms_bad_credentials_and_http_errors(vonage: VonageServer) -> None:
    settings = vonage.sms_settings(api_secret="wrong-secret-123")
    with capture_logs() as logs:
        async with kit_for(sms=settings) as kit:
            with pytest.raises(ConnectionFailed, match="status 4") as caught:
                await kit.sms(job(type="sms", phoneNumber="+15555550100"))
    assert "wrong-secret-123" not in str(caught.value) + repr(logs)
    assert vonage.requests[-1]["api_secret"] == "wrong-secret-123"  # it was sent, not shown
    vonage.http_next(503)
    async with kit_for(sms=vonage.sms_settings()) as kit:
        with pytest.raises(RetryableError, match="HTTP 503"):
            await kit.sms(job(type="sms", phoneNumber="+15555550100"))
        result = await kit.sms(job(type="sms", phoneNumber="+15555550100", body="héllo"))
    assert result["parts"] == 1 and vonage.messages[-1]["type"] == "unicode"


async def test_an_unconfigured_channel_is_permanent_and_names_the_setting(
    fcm: FcmServer,
) -> None:
    async with kit_for(push=fcm.push_settings()) as kit:
        with pytest.raises(PermanentError, match=r"add jobs\.kits\.notifications\.sms"):
            await kit.send(job(type="sms", phoneNumber="+15555550100"))
        with pytest.raises(PermanentError, match=r"got a job of type 'push'"):
            await kit.email(job(email="a@b.example"))
        with pytest.raises(PermanentError, match="no fcmToken"):
            await kit.push(job(fcmToken=""))
    assert fcm.attempts == []


# -- more e-mail and push failures ------------------------------------------------------------


async def test_smtp_auth_logs_in_and_a_wrong_password_is_refused_without_echoing_it(
    smtp_auth: tuple[Mailbox, int],
) -> None:
    mailbox, port = smtp_auth
    login = {"username": SMTP_USER, "password": SMTP_PASSWORD}
    mail = job(type="email", email="ann@sup.example")
    async with kit_for(email=email_settings(port, **login)) as kit:
        sent = await kit.email(mail)
    assert "queued as TEST1" in sent["reply"]
    assert mailbox.logged_in == [True]
    wrong = {"username": SMTP_USER, "password": "not-the-password-42"}
    with capture_logs() as logs:
        async with kit_for(email=email_settings(port, **wrong)) as kit:
            with pytest.raises(ConnectionFailed, match="login refused: 535") as caught:
                await kit.email(mail)
    assert "not-the-password-42" not in str(caught.value) + repr(logs)
    assert len(mailbox.received) == 1


async def test_a_template_that_does_not_compile_fails_open_with_its_name(tmp_path: Path) -> None:
    (tmp_path / "broken.html").write_text("<p>{{ title </p>")
    settings = email_settings(25, templates_dir=str(tmp_path), template="broken.html")
    with pytest.raises(ConfigError, match=r"email\.template 'broken\.html'"):
        async with kit_for(email=settings):
            pass
    with pytest.raises(pydantic.ValidationError, match=r"template 'nope\.html' not found"):
        kit_for(email=email_settings(25, template="nope.html"))


async def test_a_slow_fcm_is_a_retryable_timeout_and_no_device_gets_it_twice(
    fcm: FcmServer,
) -> None:
    fcm.delay_s = 5.0
    async with kit_for(push=fcm.push_settings(timeout="200ms")) as kit:
        with pytest.raises(RetryableError, match="timed out"):
            await kit.push(job(fcmToken="dev-1"))
        fcm.delay_s = 0.0
        assert (await kit.push(job(fcmToken="dev-1")))["delivered"] == 1


async def test_smtp_down_is_retryable_and_starttls_required_but_missing_is_refused(
    smtp: tuple[Mailbox, int],
) -> None:
    mailbox, port = smtp
    mail = job(type="email", email="ann@sup.example")
    async with kit_for(email=email_settings(_free_port())) as kit:
        with pytest.raises(RetryableError, match=r"email: smtp 127\.0\.0\.1"):
            await kit.email(mail)
    async with kit_for(email=email_settings(port, starttls="required")) as kit:
        with pytest.raises(ConnectionFailed, match="STARTTLS"):
            await kit.email(mail)
    assert mailbox.received == []
