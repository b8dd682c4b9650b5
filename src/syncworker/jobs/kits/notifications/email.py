"""E-mail over SMTP with aiosmtplib: an HTML part from a Jinja2 template (autoescaped) and a
plain-text part, as ``multipart/alternative``. One SMTP conversation per message.

Which failures pass (``RetryableError``): no connection, a timeout, a dropped connection,
any 4xx reply (421 service not available, 450/451/452 greylisting, busy, full). Which do not
(``PermanentError``): a malformed address, and any 5xx reply to the message (550 no such
user, 554 rejected). Refused credentials or a missing STARTTLS are ``ConnectionFailed``:
the operator's to fix, the message is not at fault.
"""

from __future__ import annotations

import re
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
import jinja2

from syncworker.errors import ConfigError, ConnectionFailed, PermanentError, RetryableError
from syncworker.jobs.kits.notifications.config import DEFAULT_TEMPLATES, EmailSettings

_ADDRESS = re.compile(
    r"^[^@\s<>,;\"()\[\]\\]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
_AUTH_CODES = {530, 534, 535, 538}


def check_address(value: str | None) -> str:
    """``value`` when it is one plain address (local@domain.tld), else ``PermanentError``."""
    if not value or len(value) > 254 or not _ADDRESS.fullmatch(value):
        raise PermanentError(f"email: {value!r} is not an e-mail address")
    return value


class EmailSender:
    def __init__(self, settings: EmailSettings) -> None:
        self.settings = settings
        folders = [str(DEFAULT_TEMPLATES)]
        if settings.templates_dir is not None:
            folders.insert(0, str(settings.templates_dir))
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(folders),
            autoescape=jinja2.select_autoescape(("html", "htm", "xml"), default=False),
            undefined=jinja2.ChainableUndefined,
            auto_reload=False,
        )
        try:  # a template that does not compile fails open(), not each job
            self.templates.get_template(settings.template)
        except jinja2.TemplateError as exc:
            raise ConfigError(
                f"notifications: email.template {settings.template!r}: {exc}"
            ) from None

    def render(self, variables: dict[str, Any]) -> tuple[str, str]:
        """(html, text) for ``variables``; the text template is the HTML one's stem + .txt."""
        name = self.settings.template
        text_name = str(Path(name).with_suffix(".txt"))
        try:
            html = self.templates.get_template(name).render(variables)
            try:
                text = self.templates.get_template(text_name).render(variables)
            except jinja2.TemplateNotFound:
                text = f"{variables['title']}\n\n{variables['body']}\n"
        except jinja2.TemplateError as exc:
            # The template's fault, the same on every retry: this job cannot be sent.
            raise PermanentError(f"email: template {name!r} failed: {exc}") from None
        return html, text

    def compose(self, to: str, subject: str, html: str, text: str) -> EmailMessage:
        message = EmailMessage()
        settings = self.settings
        message["From"] = formataddr((settings.from_name or "", settings.from_address))
        try:
            message["To"] = Address(addr_spec=to)
        except (ValueError, IndexError, HeaderParseError):
            raise PermanentError(f"email: {to!r} is not an e-mail address") from None
        message["Subject"] = subject.replace("\r", " ").replace("\n", " ")
        message["Message-ID"] = make_msgid(domain=settings.from_address.rpartition("@")[2])
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        return message

    async def send(self, message: EmailMessage) -> str:
        """Sends ``message``; returns the server's reply to DATA. Raises as the module says."""
        settings = self.settings
        start_tls = {"auto": None, "required": True, "off": False}[settings.starttls]
        password = settings.password.get_secret_value() if settings.password else None
        where = f"email: smtp {settings.host}:{settings.port}"
        try:
            _, reply = await aiosmtplib.send(
                message,
                hostname=settings.host,
                port=settings.port,
                username=settings.username,
                password=password,
                use_tls=settings.use_tls,
                start_tls=None if settings.use_tls else start_tls,
                validate_certs=settings.validate_certs,
                timeout=settings.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise _classify_refusals(where, exc) from None
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise ConnectionFailed(f"{where}: login refused: {exc.code} {exc.message}") from None
        except aiosmtplib.SMTPTimeoutError as exc:
            raise RetryableError(f"{where}: timed out: {exc}") from None
        except aiosmtplib.SMTPResponseException as exc:
            raise _classify_reply(where, exc.code, exc.message) from None
        except aiosmtplib.SMTPException as exc:
            # Connect errors, a dropped connection, STARTTLS not offered while required.
            if "STARTTLS" in str(exc) or isinstance(exc, aiosmtplib.SMTPNotSupported):
                raise ConnectionFailed(f"{where}: {exc}") from None
            raise RetryableError(f"{where}: {type(exc).__name__}: {exc}") from None
        except (OSError, TimeoutError) as exc:
            raise RetryableError(f"{where}: {type(exc).__name__}: {exc}") from None
        return reply


def _classify_reply(where: str, code: int, text: str) -> Exception:
    reason = f"{where}: {code} {text}".strip()
    if code in _AUTH_CODES:
        return ConnectionFailed(reason)
    if 400 <= code < 500:
        return RetryableError(reason)
    if code >= 500:
        return PermanentError(reason)
    return RetryableError(reason)  # -1 and the like: aiosmtplib's own "connection lost"


def _classify_refusals(where: str, exc: aiosmtplib.SMTPRecipientsRefused) -> Exception:
    refused = exc.recipients
    if refused and all(400 <= r.code < 500 for r in refused):
        deferred = refused[0]
        return RetryableError(f"{where}: recipient deferred: {deferred.code} {deferred.message}")
    first = next((r for r in refused if r.code >= 500), refused[0] if refused else None)
    if first is None:
        return PermanentError(f"{where}: recipient refused")
    return PermanentError(f"{where}: recipient refused: {first.code} {first.message}")
