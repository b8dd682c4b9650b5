"""``zoho_creator``: the ``http`` source preset for Zoho Creator's v2.1 data API (seed 002).

- records: ``GET {creator}/api/v2.1/{owner}/{app}/report/{report}`` with ``max_records``
  (200, 500 or 1000) and ``field_config=all``; the answer is ``{"code": 3000, "data": [...]}``
  and, while more records follow, a ``record_cursor`` response header that the next request
  sends back as a header; ``{"code": 3100}`` means no records;
- filters: ``criteria``, e.g. ``(Event == 4433256000013547003) && (Modified_Time >=
  "02-Dec-2026 04:00:00")``; times as Zoho writes them (``dd-MMM-yyyy HH:mm:ss``);
- counts: ``GET .../report/{report}/count`` (``result.records_count``);
- auth: OAuth 2.0 refresh-token grant at ``{accounts}/oauth/v2/token``, sent as
  ``Authorization: Zoho-oauthtoken <token>``; a 401 (code 1030) renews it once;
- limits: 50 requests a minute per endpoint (client side, configurable; 0 lifts it); 429
  (and Zoho's 2945) and 5xx are retried with a capped ``Retry-After``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from syncworker.connectors.http.client import Verdict, default_verdict
from syncworker.connectors.http.config import (
    FilterSettings,
    GroupSettings,
    HttpSourceConfig,
    OAuthSettings,
    PaginationSettings,
    RateLimitSettings,
    _Section,
    count_check_flag,
)
from syncworker.connectors.http.source_rest import HttpSource
from syncworker.core.durations import DurationS
from syncworker.core.protocols import ConnectorConfig

ZOHO_TIME_FORMAT = "%d-%b-%Y %H:%M:%S"
CODE_OK = 3000
CODE_NO_RECORDS = 3100
CODE_TOKEN = 1030
CODE_RATE_LIMIT = 2945
CODE_DAILY_LIMIT = 4000
_REFUSED_CODES = frozenset({1000, 1040, 1130})
"""Invalid URL, no such owner, no API permission: the settings are wrong."""


class ZohoEvents(_Section):
    """The parent report whose records are the groups (the seed's events)."""

    report: str = Field(description="Link name of the events report (e.g. All_Events).")
    lookup_field: str = Field(
        "Event", description="Lookup field of a registration naming its event."
    )
    name: str = Field("event_id", description="Group variable name for sinks' templates.")
    stale_after: DurationS = Field(
        600.0, ge=0, description="An incremental run re-reads an event older than this (10 min)."
    )
    count_check: Literal["sink", "source", "off"] = Field(
        "sink",
        description="'sink': an event whose count in the sink differs from its last full "
        "read is re-read; 'source': Zoho's count endpoint is asked too (one request per "
        "event per run); 'off' (true and false mean 'sink' and 'off': the seed's "
        "ENABLE_DISCREPANCY_DETECTION).",
    )

    _count_check_flag = field_validator("count_check", mode="before")(count_check_flag)


class ZohoCreatorSourceConfig(ConnectorConfig):
    """Settings of the ``zoho_creator`` source (the ``http`` source with Zoho's shapes)."""

    type: Literal["zoho_creator"] = Field(
        "zoho_creator", description="Connector type: Zoho Creator v2.1 reports."
    )
    domain: str = Field(
        "zoho.com", description="Zoho data centre domain (zoho.com, zoho.eu, zoho.in, ...)."
    )
    creator_url: str | None = Field(
        None, description="Creator API address (default https://creator.<domain>)."
    )
    accounts_url: str | None = Field(
        None, description="Zoho Accounts address (default https://accounts.<domain>)."
    )
    owner: str = Field(description="Account owner name (in the app's URL).")
    app: str = Field(description="Application link name.")
    report: str = Field(description="Link name of the report to read (the registrations).")
    client_id: str = Field(description="OAuth client id (Zoho API console).")
    client_secret: str = Field(repr=False, description="OAuth client secret (never logged).")
    refresh_token: str = Field(repr=False, description="OAuth refresh token (never logged).")
    max_records: Literal[200, 500, 1000] = Field(
        1000, description="Records per request (Zoho allows 200, 500 or 1000)."
    )
    stream: str | None = Field(None, description="Stream name (default: the report's name).")
    events: ZohoEvents | None = Field(None, description="Group the records by event.")
    time_zone: str = Field(
        "UTC",
        description="The app's time zone (Zoho writes Modified_Time in it, without an offset), "
        "an IANA name such as Asia/Ho_Chi_Minh.",
    )
    overlap: DurationS = Field(
        120.0,
        ge=0,
        description="Incremental reads start this long before the newest "
        "Modified_Time already read (a clock skew loses nothing).",
    )
    poll_interval: DurationS = Field(
        5.0, ge=0, description="How often a streaming source reads again."
    )
    requests_per_minute: int = Field(
        50, ge=0, description="Client-side limit per endpoint (Zoho: 50); 0 lifts it."
    )
    timeout: DurationS = Field(30.0, gt=0, description="Timeout of each request.")
    max_attempts: int = Field(
        5, ge=1, description="Attempts of one request on 429, 5xx or a timeout."
    )
    backoff: DurationS = Field(0.5, ge=0, description="First retry delay (doubled per attempt).")
    max_backoff: DurationS = Field(30.0, ge=0, description="Largest retry delay.")
    max_retry_after: DurationS = Field(
        60.0, ge=0, description="Retry-After obeyed up to this long."
    )

    @field_validator("max_records", mode="before")
    @classmethod
    def _number_text(cls, value: Any) -> Any:
        # "${ZOHO_MAX_RECORDS:-1000}" arrives as text; a Literal of ints would refuse it
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        return value

    @model_validator(mode="after")
    def _names(self) -> ZohoCreatorSourceConfig:
        for name in ("owner", "app", "report"):
            value = getattr(self, name)
            if not value or "/" in value:
                raise ValueError(f"{name}: expected a link name without '/'")
        return self

    def to_http(self) -> HttpSourceConfig:
        """The ``http`` config this preset stands for."""
        creator = (self.creator_url or f"https://creator.{self.domain}").rstrip("/")
        accounts = (self.accounts_url or f"https://accounts.{self.domain}").rstrip("/")
        base = f"{creator}/api/v2.1/{self.owner}/{self.app}"
        groups = None
        if self.events is not None:
            e = self.events
            groups = GroupSettings(
                path=f"report/{e.report}",
                id_field="ID",
                modified_field="Modified_Time",
                name=e.name,
                child_field=e.lookup_field,
                child_value_path="ID",
                stale_after=_s(e.stale_after),
                count_check=e.count_check,
            )
        return HttpSourceConfig(
            type="http",
            name=self.name,
            base_url=base,
            path=f"report/{self.report}",
            params={"field_config": "all"},
            oauth=OAuthSettings(
                token_url=f"{accounts}/oauth/v2/token",
                client_id=self.client_id,
                client_secret=self.client_secret,
                refresh_token=self.refresh_token,
                scheme="Zoho-oauthtoken",
            ),
            records_path="data",
            id_field="ID",
            stream=self.stream or self.report,
            page_size=self.max_records,
            pagination=PaginationSettings(
                kind="header_cursor",
                size_param="max_records",
                cursor_header="record_cursor",
                cursor_request_header="record_cursor",
            ),
            modified_field="Modified_Time",
            modified_format=ZOHO_TIME_FORMAT,
            time_zone=self.time_zone,
            overlap=_s(self.overlap),
            filters=FilterSettings(
                param="criteria",
                modified='{field} >= "{since}"',
                group="{field} == {value}",
                id="{field} == {value}",
                and_join=" && ",
                or_join=" || ",
                ids_per_request=50,
            ),
            groups=groups,
            count_path=f"report/{self.report}/count",
            count_value_path="result.records_count",
            poll_interval=_s(self.poll_interval),
            timeout=_s(self.timeout),
            max_attempts=self.max_attempts,
            backoff=_s(self.backoff),
            max_backoff=_s(self.max_backoff),
            max_retry_after=_s(self.max_retry_after),
            rate_limit=RateLimitSettings(requests=self.requests_per_minute, per="60s"),
        )


def _s(seconds: float) -> str:
    """A duration for a model field that reads a bare number as milliseconds."""
    return f"{seconds!r}s"


def zoho_verdict(status: int, body: Any) -> Verdict:
    """Zoho says more in the body's ``code`` than in the status (some errors come as 200)."""
    code = body.get("code") if isinstance(body, dict) else None
    if code == CODE_NO_RECORDS:
        return "empty"
    if code == CODE_TOKEN:
        return "auth"
    if code == CODE_RATE_LIMIT or status == 429:
        return "retry"
    if code == CODE_DAILY_LIMIT:
        return "retry"
    if code in _REFUSED_CODES:
        return "refuse"
    if 200 <= status < 300 and code not in (None, CODE_OK):
        return "permanent"
    return default_verdict(status, body)


class ZohoCreatorSource(HttpSource):
    """The ``http`` source over a Zoho Creator report (module docstring)."""

    config_model: ClassVar[type[ConnectorConfig]] = ZohoCreatorSourceConfig  # type: ignore[assignment]

    def __init__(self, config: ZohoCreatorSourceConfig | dict[str, Any], *, name: str) -> None:
        if not isinstance(config, ZohoCreatorSourceConfig):
            config = ZohoCreatorSourceConfig.model_validate(config)
        self.zoho = config
        super().__init__(config.to_http(), name=name)

    def verdict(self, status: int, body: Any) -> Verdict:
        return zoho_verdict(status, body)
