"""Config models of the ``http`` REST source (the ``zoho_creator`` preset builds one)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator, model_validator

from syncworker.connectors.http.pagination import PaginationKind
from syncworker.core.durations import DurationS
from syncworker.core.protocols import ConnectorConfig


class _Section(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}


class PaginationSettings(_Section):
    """How the next page is asked for."""

    kind: PaginationKind = Field(
        "none",
        description="'page' (page number), 'offset', 'body_cursor' (a cursor in the answer's "
        "body at cursor_path), 'header_cursor' (a cursor in a response header, Zoho's "
        "record_cursor), 'link' (RFC 8288 Link: rel=\"next\") or 'none' (one page). A cursor "
        "or link that comes back twice stops the read with an error, never loops.",
    )
    size_param: str | None = Field(
        None,
        description="Query parameter carrying page_size (Zoho: max_records); none sent when unset.",
    )
    page_param: str = Field("page", description="page: the page-number query parameter.")
    first_page: int = Field(1, ge=0, description="page: the number of the first page.")
    offset_param: str = Field("offset", description="offset: the offset query parameter.")
    cursor_path: str = Field(
        "next_cursor", description="body_cursor: dotted path of the next cursor in the body."
    )
    cursor_param: str = Field(
        "cursor",
        description="body_cursor (and header_cursor without a request header): the "
        "query parameter that sends the cursor back.",
    )
    cursor_header: str = Field(
        "record_cursor", description="header_cursor: the response header holding the cursor."
    )
    cursor_request_header: str | None = Field(
        "record_cursor",
        description="header_cursor: the request header that sends the cursor back (Zoho: "
        "record_cursor); null sends it as cursor_param instead.",
    )


class OAuthSettings(_Section):
    """OAuth 2.0 refresh-token grant: the access token is fetched, cached until it expires
    and renewed once when the API answers 401."""

    token_url: str = Field(
        description="Token endpoint, e.g. https://accounts.zoho.com/oauth/v2/token."
    )
    client_id: str = Field(description="OAuth client id.")
    client_secret: str = Field(repr=False, description="OAuth client secret (never logged).")
    refresh_token: str = Field(repr=False, description="Refresh token (never logged).")
    scheme: str = Field(
        "Bearer", description="Authorization scheme before the token (Zoho: Zoho-oauthtoken)."
    )
    scope: str | None = Field(
        None, description="scope sent with the grant, when the server needs it."
    )


class FilterSettings(_Section):
    """How a filter is written: one query parameter holding a criteria expression (Zoho's
    ``criteria``), built from templates."""

    param: str | None = Field(
        None,
        description="Query parameter of the filter (Zoho: criteria); unset: no filters "
        "(incremental reads then read everything).",
    )
    modified: str = Field(
        '{field} >= "{since}"',
        description="Records modified since a time: {field} is modified_field, {since} the time "
        "in modified_format.",
    )
    group: str = Field(
        "{field} == {value}", description="Records of one group: {field} is groups.child_field."
    )
    id: str = Field("{field} == {value}", description="One record by id: {field} is id_field.")
    and_join: str = Field(" && ", description="Joins two conditions that must both hold.")
    or_join: str = Field(" || ", description="Joins conditions of which one must hold.")
    ids_per_request: int = Field(
        100, ge=1, description="Ids asked for in one request when records are re-read by id."
    )


class RateLimitSettings(_Section):
    """A client-side limit of requests per endpoint (Zoho: 50 a minute); 0 requests lifts it."""

    requests: int = Field(0, ge=0, description="Requests allowed per `per`; 0: no limit.")
    per: DurationS = Field(60.0, gt=0, description="The window of the limit.")


def count_check_flag(value: object) -> object:
    """``count_check`` also takes a flag, as the seed's ENABLE_DISCREPANCY_DETECTION is one:
    true means ``sink``, false ``off``."""
    flag = value.strip().lower() if isinstance(value, str) else value
    if flag in (True, "true"):
        return "sink"
    if flag in (False, "false"):
        return "off"
    return value


class GroupSettings(_Section):
    """Records in groups (the registrations of each event): a parent listing names the
    groups; each group's records are read from the child listing with a group filter."""

    path: str = Field(description="Path of the parent listing (the events), under base_url.")
    id_field: str = Field("id", description="Field of a parent record holding the group's value.")
    modified_field: str | None = Field(
        None,
        description="Field of a parent record with its modified time (a newer one "
        "triggers the group's full read in an incremental run).",
    )
    name: str = Field(
        "group",
        description="Name of the group variable for sinks (meta group_name, e.g. event_id).",
    )
    child_field: str = Field(
        description="Field of a child record naming its group (a lookup: Zoho's Event)."
    )
    child_value_path: str = Field(
        "ID",
        description="When child_field holds an object (a lookup), the key of the group's "
        "value in it.",
    )
    stale_after: DurationS = Field(
        600.0,
        ge=0,
        description="An incremental run re-reads a group fully when its last full "
        "read is older than this (the seed's 10 minutes).",
    )
    count_check: Literal["sink", "source", "off"] = Field(
        "sink",
        description="What makes a group's count 'differ' in an incremental run: 'sink' compares "
        "the sink's count (a sink that counts groups, e.g. redis) with the last full read's; "
        "'source' also asks the API's count endpoint (count_path) per group; 'off' never "
        "(true and false mean 'sink' and 'off').",
    )

    _count_check_flag = field_validator("count_check", mode="before")(count_check_flag)
    page_size: int | None = Field(
        None, ge=1, description="Page size of the parent listing (default page_size)."
    )


class HttpSourceConfig(ConnectorConfig):
    """Settings of the ``http`` source: a paginated REST listing read with httpx."""

    type: Literal["http"] = Field("http", description="Connector type: a paginated REST reader.")
    base_url: str = Field(description="http:// or https:// address the paths are under.")
    path: str = Field(description="Path of the listing to read (the child listing when grouped).")
    params: dict[str, str] = Field(
        default_factory=dict, description="Query parameters of every request."
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        repr=False,
        description="Extra request headers; every value is taken for a secret (masked in "
        "errors and logs) except those named in public_headers.",
    )
    public_headers: list[str] = Field(
        default_factory=list, description="Headers whose values are not secret."
    )
    bearer_token: str | None = Field(
        None, repr=False, description="Static token sent as Authorization: Bearer <token>."
    )
    oauth: OAuthSettings | None = Field(None, description="OAuth 2.0 refresh-token grant.")
    records_path: str = Field(
        "data", description="Dotted path of the records list in an answer ('' the body)."
    )
    id_field: str = Field("id", description="Field holding a record's id (its key).")
    missing_id: Literal["dead_letter", "key_from_bytes"] = Field(
        "dead_letter",
        description="A record without its id field: 'dead_letter' (kept in the dead letters "
        "with its page; the page goes on) or 'key_from_bytes' (delivered under a key hashed "
        "from its canonical JSON, as queue sources key messages without one).",
    )
    stream: str | None = Field(
        None, description="Stream name of the records (default: the path's last part)."
    )
    page_size: int = Field(100, ge=1, le=100_000, description="Records asked for per page.")
    pagination: PaginationSettings = Field(default_factory=PaginationSettings)
    modified_field: str | None = Field(
        None, description="Field with the record's modified time: incremental reads filter on it."
    )
    modified_format: str = Field(
        "iso",
        description="How modified times are written: 'iso' (ISO 8601) or a strptime "
        "format (Zoho: %d-%b-%Y %H:%M:%S).",
    )
    time_zone: str = Field(
        "UTC",
        description="IANA zone of modified times written without one (Zoho writes them in the "
        "app's zone, e.g. Asia/Ho_Chi_Minh): how old a record is for the discrepancy check's "
        "in-flight window.",
    )
    overlap: DurationS = Field(
        60.0,
        ge=0,
        description="An incremental read starts this long before the newest "
        "modified time already read, so a clock skew loses nothing (records read again "
        "unchanged are skipped).",
    )
    filters: FilterSettings = Field(default_factory=FilterSettings)
    groups: GroupSettings | None = Field(
        None, description="Records in groups (events and their registrations)."
    )
    count_path: str | None = Field(
        None, description="Path of a count endpoint taking the same filter (Zoho: <report>/count)."
    )
    count_value_path: str = Field(
        "count", description="Dotted path of the count in the count endpoint's answer."
    )
    poll_interval: DurationS = Field(
        5.0,
        ge=0,
        description="How often a source on its own (stream schedule) reads again "
        "once a read is done.",
    )
    timeout: DurationS = Field(
        30.0, gt=0, description="Connect, send and read timeout of each request."
    )
    max_attempts: int = Field(
        5,
        ge=1,
        description="Attempts of one request on 429, 5xx, a timeout or an undecodable page.",
    )
    backoff: DurationS = Field(0.5, ge=0, description="First retry delay (doubled per attempt).")
    max_backoff: DurationS = Field(30.0, ge=0, description="Largest retry delay.")
    max_retry_after: DurationS = Field(
        60.0, ge=0, description="A server's Retry-After is obeyed up to this long."
    )
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    http2: bool = Field(False, description="Use HTTP/2 (needs the h2 package: httpx[http2]).")

    @field_validator("base_url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL with a host")
        return value.rstrip("/")

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; expected an IANA name") from None
        return value

    @model_validator(mode="after")
    def _one_auth(self) -> HttpSourceConfig:
        if self.bearer_token and self.oauth:
            raise ValueError("set bearer_token or oauth, not both")
        if self.groups is not None and self.groups.count_check == "source" and not self.count_path:
            raise ValueError("groups.count_check 'source' needs count_path")
        return self
