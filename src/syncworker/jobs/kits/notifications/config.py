"""The settings of ``jobs.kits.notifications`` (pydantic only: importing this loads no driver).

Each channel (push, email, sms) is optional; a job for a channel left unset fails at once
(permanent) naming the setting to add. Secrets are ``SecretStr``: never logged or echoed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from syncworker.core.durations import DurationS
from syncworker.core.fields import StrictModel

if TYPE_CHECKING:
    from syncworker.jobs.kits.base import Kit

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
DEFAULT_TEMPLATES = Path(__file__).with_name("templates")


# The setting whose blank value turns a channel off (see NotificationsKitConfig._blank).
_CHANNEL_KEY = {"push": "project_id", "email": "host", "sms": "api_key"}


def _blank_is_unset(value: Any) -> Any:
    # ``${SMTP_USER:-}`` with the variable unset is "": not set, not an empty user name.
    return None if isinstance(value, str) and not value.strip() else value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http:// or https:// URL")
    return value.rstrip("/")


class PushSettings(StrictModel):
    project_id: str = Field(min_length=1, description="Firebase project id (FIREBASE_PROJECT_ID)")
    client_email: str = Field(
        min_length=3,
        pattern=r"^[^@\s]+@[^@\s]+$",
        description="the service account's e-mail address (FIREBASE_CLIENT_EMAIL): the "
        "JWT's issuer",
    )
    private_key: SecretStr = Field(
        description="the service account's PEM RSA private key (FIREBASE_PRIVATE_KEY); "
        "literal \\n sequences (as .env files carry it) are read as line breaks; never logged"
    )
    token_uri: str = Field(
        "https://oauth2.googleapis.com/token",
        description="OAuth 2.0 token endpoint the signed JWT is exchanged at (the JWT's aud)",
    )
    base_url: str = Field(
        "https://fcm.googleapis.com",
        description="FCM HTTP v1 API root; messages go to "
        "{base_url}/v1/projects/{project_id}/messages:send",
    )
    timeout: DurationS = Field(10.0, gt=0, description="one HTTP request at most (10s)")
    max_concurrency: int = Field(
        50,
        ge=1,
        le=1000,
        description="requests in flight at once over the shared HTTP/1.1 keep-alive "
        "connections (a multicast is one request per token)",
    )
    token_refresh_margin: DurationS = Field(
        300.0,
        ge=0,
        description="an access token is renewed this long before it expires (5m)",
    )

    @field_validator("private_key")
    @classmethod
    def _pem(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value().replace("\\n", "\n").strip()
        if not text.startswith("-----BEGIN") or "PRIVATE KEY-----" not in text:
            raise ValueError("expected a PEM private key (-----BEGIN PRIVATE KEY-----...)")
        return SecretStr(text + "\n")

    @field_validator("token_uri", "base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


class EmailSettings(StrictModel):
    host: str = Field(min_length=1, description="SMTP server (SMTP_HOST)")
    port: int = Field(587, ge=1, le=65535, description="SMTP port (SMTP_PORT): 587, 465, 25")
    username: str | None = Field(None, description="SMTP user (SMTP_USER); unset: no AUTH")
    password: SecretStr | None = Field(
        None, description="SMTP password (SMTP_PASSWORD); never logged"
    )
    starttls: Literal["auto", "required", "off"] = Field(
        "auto",
        description="STARTTLS after EHLO: when the server offers it (auto), always (required: "
        "a server without it is an error), or never (off)",
    )
    use_tls: bool = Field(
        False, description="TLS from the first byte (implicit TLS, port 465) instead of STARTTLS"
    )
    validate_certs: bool = Field(True, description="check the server's TLS certificate")
    from_address: str = Field(
        pattern=r"^[^@\s<>]+@[^@\s<>]+$", description="the From address (no-reply@example.com)"
    )
    from_name: str | None = Field(None, description="the From display name")
    timeout: DurationS = Field(30.0, gt=0, description="one SMTP conversation at most (30s)")
    templates_dir: Path | None = Field(
        None,
        description="directory of Jinja2 templates (autoescaped); a template there shadows "
        "the kit's own; unset: the kit's default template only",
    )
    template: str = Field(
        "notification.html",
        min_length=1,
        description="HTML template rendered with title, body, data and user_id; the plain-text "
        "part is {template stem}.txt when it exists, else title and body",
    )

    @field_validator("username", "password", "templates_dir", "from_name", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _blank_is_unset(value)

    @model_validator(mode="after")
    def _tls_modes(self) -> EmailSettings:
        if self.use_tls and self.starttls == "required":
            raise ValueError("use_tls (implicit TLS) and starttls: required exclude each other")
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not")
        folders = [DEFAULT_TEMPLATES] if self.templates_dir is None else [self.templates_dir]
        folders += [DEFAULT_TEMPLATES]
        if not any((folder / self.template).is_file() for folder in folders):
            where = "templates_dir" if self.templates_dir is not None else "the kit's templates"
            raise ValueError(f"template {self.template!r} not found in {where}")
        return self


class SmsSettings(StrictModel):
    provider: Literal["vonage"] = Field(
        "vonage", description="the SMS provider's API (vonage: the Vonage/Nexmo SMS API)"
    )
    api_key: str = Field(min_length=1, description="provider API key (SMS_API_KEY)")
    api_secret: SecretStr = Field(description="provider API secret (SMS_API_SECRET); never logged")
    from_number: str = Field(
        min_length=1,
        description="sender (SMS_FROM_NUMBER): a number in E.164 or an alphanumeric sender id",
    )
    base_url: str = Field(
        "https://rest.nexmo.com", description="API root; messages go to {base_url}/sms/json"
    )
    timeout: DurationS = Field(10.0, gt=0, description="one HTTP request at most (10s)")

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("api_secret")
    @classmethod
    def _secret(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("expected a non-empty secret")
        return value


class NotificationsKitConfig(StrictModel):
    database: SecretStr | None = Field(
        None,
        description="PostgreSQL URL of the seed's notifications table (e.g. ${DATABASE_URL}): "
        "one row per attempt; unset: attempts are only logged; never logged itself",
    )
    pool_size: int = Field(4, ge=1, le=100, description="database connections at most")
    connect_timeout: DurationS = Field(
        10.0, gt=0, description="how long open waits for the database (10s)"
    )
    max_retry_after: DurationS = Field(
        300.0,
        ge=0,
        description="a provider's Retry-After longer than this is cut to it (5m)",
    )
    push: PushSettings | None = Field(
        None, description="FCM HTTP v1 push; unset, or project_id blank: no push"
    )
    email: EmailSettings | None = Field(
        None, description="SMTP e-mail; unset, or host blank: no e-mail"
    )
    sms: SmsSettings | None = Field(
        None, description="SMS provider; unset, or api_key blank: no SMS"
    )

    @field_validator("database", "push", "email", "sms", mode="before")
    @classmethod
    def _blank(cls, value: Any, info: ValidationInfo) -> Any:
        # A channel written with its variables (``sms: {api_key: "${SMS_API_KEY:-}", ...}``)
        # is off while its key setting is blank, so one config serves with and without it.
        key = _CHANNEL_KEY.get(info.field_name or "")
        if key is not None and isinstance(value, dict) and _blank_is_unset(value.get(key)) is None:
            return None
        return _blank_is_unset(value)

    @field_validator("database")
    @classmethod
    def _database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value()
        if "://" not in text or urlsplit(text).scheme.lower() not in ("postgresql", "postgres"):
            raise ValueError("expected a postgresql:// URL")
        return value

    def build(self) -> Kit:
        from syncworker.jobs.kits.notifications.kit import NotificationsKit

        return NotificationsKit(self)
