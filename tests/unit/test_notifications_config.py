"""The notifications kit's settings and payload: one-line errors naming the setting, the
seed's variables as they arrive (a private key with literal \\n, blanks from ${VAR:-}),
secrets never echoed; the payload's camelCase fields and tokens."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from tests.fakes.fcm import service_account_key

from syncworker.config import config_from_dict
from syncworker.errors import ConfigError
from syncworker.jobs.config import build_registry
from syncworker.jobs.kits.notifications.config import NotificationsKitConfig, PushSettings
from syncworker.jobs.kits.notifications.kit import NotificationsKit
from syncworker.jobs.kits.notifications.models import NotificationJob

PEM = service_account_key()[0]


def load(kit: dict[str, Any], tasks: dict[str, Any] | None = None) -> Any:
    raw = {"jobs": {"backend": {"type": "memory"}, "tasks": tasks or {},
                    "kits": {"notifications": kit}}}  # fmt: skip
    config = config_from_dict(raw)
    assert config.app.jobs is not None
    return config.app.jobs


def push(**extra: Any) -> dict[str, Any]:
    return {"project_id": "p", "client_email": "svc@p.iam.gserviceaccount.com",
            "private_key": PEM.replace("\n", "\\n"), **extra}  # fmt: skip


def test_a_private_key_with_literal_newlines_is_read_as_pem() -> None:
    settings = PushSettings.model_validate(push())
    text = settings.private_key.get_secret_value()
    assert text.startswith("-----BEGIN PRIVATE KEY-----\n") and "\\n" not in text
    assert "BEGIN" not in repr(settings) and "BEGIN" not in str(settings.model_dump())


@pytest.mark.parametrize(
    ("kit", "expected"),
    [
        (
            {"push": push(private_key="hunter2-not-a-key")},
            "jobs.kits.notifications.push.private_key: expected a PEM private key",
        ),
        (
            {"push": push(token_uri="oauth2.googleapis.com/token")},
            "jobs.kits.notifications.push.token_uri: expected an http:// or https:// URL",
        ),
        (
            {"push": push(max_concurrency=0)},
            "jobs.kits.notifications.push.max_concurrency",
        ),
        (
            {
                "email": {
                    "host": "h",
                    "from_address": "x@y.example",
                    "use_tls": True,
                    "starttls": "required",
                }
            },
            "use_tls (implicit TLS) and starttls: required exclude each other",
        ),
        (
            {"email": {"host": "h", "from_address": "x@y.example", "password": "pw-123"}},
            "password is set but username is not",
        ),
        (
            {"email": {"host": "h", "from_address": "nobody"}},
            "jobs.kits.notifications.email.from_address",
        ),
        (
            {
                "sms": {
                    "api_key": "k",
                    "api_secret": "s3cr3t",
                    "from_number": "1",
                    "provider": "twilio",
                }
            },
            "jobs.kits.notifications.sms.provider",
        ),
        ({"database": "mysql://u:pw-123@h/db"}, "expected a postgresql:// URL"),
        ({"emial": {}}, "did you mean 'email'?"),
    ],
)
def test_invalid_settings_are_one_line_naming_the_setting(
    kit: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(kit)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    for secret in ("hunter2", "pw-123", "s3cr3t"):
        assert secret not in message


def test_blank_variables_are_unset() -> None:
    config = NotificationsKitConfig.model_validate(
        {"database": "", "sms": "",
         "email": {"host": "h", "from_address": "x@y.example", "username": "", "password": ""}}
    )  # fmt: skip
    assert config.database is None and config.sms is None
    assert config.email is not None
    assert (config.email.username, config.email.password) == (None, None)


def test_a_channel_whose_key_setting_is_blank_is_off() -> None:
    # As the example writes them: each channel from its variables, SMS optional.
    config = NotificationsKitConfig.model_validate(
        {"push": push(project_id="", private_key=""),
         "email": {"host": " ", "port": "587", "from_address": ""},
         "sms": {"api_key": "", "api_secret": "", "from_number": "+15550100"}}
    )  # fmt: skip
    assert (config.push, config.email, config.sms) == (None, None, None)
    # Its key set, the channel is on, and a blank required setting is an error again.
    with pytest.raises(pydantic.ValidationError, match="api_secret"):
        NotificationsKitConfig.model_validate(
            {"sms": {"api_key": "k", "api_secret": "", "from_number": "+15550100"}}
        )


def test_the_kit_is_built_from_jobs_kits_and_binds_its_payload_model() -> None:
    jobs = load({"push": push()}, tasks={"notify": {"handler": "kit:notifications.send"}})
    kits = jobs.kits.build()
    assert isinstance(kits["notifications"], NotificationsKit)
    assert sorted(kits["notifications"].handlers()) == ["email", "push", "send", "sms"]
    task = build_registry(jobs, kits).get("notify")
    assert task.model is NotificationJob
    with pytest.raises(ValueError, match="type"):
        task.validate({"type": "pigeon", "userId": "u", "title": "t", "body": "b"})


def test_the_payload_takes_the_seeds_fields_and_tokens_once_in_order() -> None:
    job = NotificationJob.model_validate(
        {"type": "push", "userId": "2b0e8c4e-3a57-4f6b-9a43-8c1f1a0f9d10", "title": "t",
         "body": "b", "fcmToken": "a", "fcmTokens": ["b", "a", "c"],
         "data": {"chatId": "1"}, "priority": "high"}
    )  # fmt: skip
    assert job.tokens() == ["a", "b", "c"]
    blank = NotificationJob(type="push", userId="u", title="t", body="b", fcmToken="")
    assert blank.tokens() == []  # the kit refuses it as "no fcmToken", permanently
    assert job.user_uuid() is not None
    assert NotificationJob(type="sms", userId="u1", title="", body="x").user_uuid() is None
    with pytest.raises(pydantic.ValidationError, match=r"data\.chatId"):
        NotificationJob.model_validate(
            {"type": "push", "userId": "u", "title": "t", "body": "b", "data": {"chatId": 1}}
        )
    with pytest.raises(pydantic.ValidationError, match="userId"):
        NotificationJob.model_validate({"type": "push", "title": "t", "body": "b"})
