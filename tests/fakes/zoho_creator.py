"""A local Zoho Creator for tests: the parts of the v2.1 data API and of Zoho Accounts' OAuth
token endpoint the ``zoho_creator`` source uses, served by Starlette + uvicorn on 127.0.0.1,
records kept in memory per report.

Endpoints (as Zoho documents them):

- ``POST /oauth/v2/token`` (form or query: ``grant_type=refresh_token``, ``client_id``,
  ``client_secret``, ``refresh_token``): ``{"access_token", "api_domain", "token_type":
  "Bearer", "expires_in"}``; a wrong client or refresh token answers ``{"error":
  "invalid_client"}`` / ``{"error": "invalid_code"}`` (HTTP 200, as Zoho does).
- ``GET /api/v2.1/{owner}/{app}/report/{report}`` with ``Authorization: Zoho-oauthtoken
  <token>``, ``max_records`` (200, 500 or 1000; another value is refused, ``code 3990``
  here), ``criteria`` and ``field_config``; the request header ``record_cursor`` continues
  a read. Answers ``{"code": 3000, "data": [...]}`` with a ``record_cursor`` header while
  records remain, or ``{"code": 3100}`` (HTTP 200, as Zoho's other "none available" codes
  3910-3930) when nothing matches.
- ``GET /api/v2.1/{owner}/{app}/report/{report}/count``: ``{"code": 3000, "result":
  {"records_count": "N"}}``.

Errors: 401 ``{"code": 1030}`` for a missing, unknown or expired token; 404 ``{"code": 1000}``
for an unknown owner, app or report; 429 ``{"code": 2945}`` past ``per_minute`` requests a
minute per report; 400 ``{"code": 3990}`` for bad ``max_records``, ``{"code": 3020}`` for a
criteria it cannot read.

Criteria: conditions ``Field op value`` (``==``, ``!=``, ``>``, ``>=``, ``<``, ``<=``; the
value quoted or bare) joined by ``&&`` / ``||`` with parentheses. ``Modified_Time`` compares
as a time written ``dd-MMM-yyyy HH:mm:ss``; a lookup field (an object with an ``ID``)
compares its ``ID``.

Faults: ``respond_next(*outcomes)`` for the next data requests: an int status (500, 503; a
2xx lets the request be answered as usual),
``"429"`` (with ``Retry-After: retry_after``), ``"malformed"`` (200 and a truncated body),
``"slow"`` (the answer waits ``slow_s``), ``"expire"`` (every token expires first: the
request gets 401 1030); ``sticky_cursor`` hands out one record_cursor for ever (a broken
server). ``expire_tokens()`` does the same at once; ``put_raw`` stores a row
that is no object or has no ``ID``. Every request is kept in ``requests``.

Runs in the test's event loop (``async with ZohoCreatorServer() as zoho``) or, for a
benchmark, in a thread of its own (``with zoho.threaded(): ...``).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from syncworker.core import jsonvalue
from tests.fakes.local_server import LocalServer

ZOHO_TIME = "%d-%b-%Y %H:%M:%S"
ALLOWED_MAX_RECORDS = (200, 500, 1000)
Outcome = int | Literal["429", "malformed", "slow", "expire"]


def zoho_time(when: datetime | None = None) -> str:
    """A time as Zoho writes it (UTC here)."""
    return (when or datetime.now(UTC)).strftime(ZOHO_TIME)


@dataclass(slots=True)
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    status: int = 0


@dataclass(slots=True)
class _Row:
    seq: int
    id: str | None
    fields: dict[str, Any]
    body: bytes


@dataclass(slots=True)
class _Report:
    rows: dict[int, _Row] = field(default_factory=dict)
    by_id: dict[str, int] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    index: dict[str, dict[str, list[int]]] = field(default_factory=dict)


# -- criteria ---------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<par>[()])|(?P<join>&&|\|\|)|(?P<op>==|!=|>=|<=|>|<)"
    r"|\"(?P<dq>[^\"]*)\"|'(?P<sq>[^']*)'|(?P<word>[A-Za-z0-9_.:\-+]+))"
)


class CriteriaError(ValueError):
    pass


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise CriteriaError(f"cannot read criteria at {pos}")
        pos = match.end()
        kind = match.lastgroup or ""
        value = match.group(kind)
        out.append(("value" if kind in ("dq", "sq") else kind, value))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise CriteriaError("criteria ends too soon")
        self.pos += 1
        return token

    def parse(self) -> Any:
        node = self.expr()
        if self.peek() is not None:
            raise CriteriaError("unexpected text after criteria")
        return node

    def expr(self) -> Any:
        node = self.term()
        while self.peek() == ("join", "||"):
            self.take()
            node = ("or", node, self.term())
        return node

    def term(self) -> Any:
        node = self.factor()
        while self.peek() == ("join", "&&"):
            self.take()
            node = ("and", node, self.factor())
        return node

    def factor(self) -> Any:
        if self.peek() == ("par", "("):
            self.take()
            node = self.expr()
            if self.take() != ("par", ")"):
                raise CriteriaError("missing )")
            return node
        kind, name = self.take()
        if kind != "word":
            raise CriteriaError("expected a field name")
        op_kind, op = self.take()
        if op_kind != "op":
            raise CriteriaError("expected an operator")
        value_kind, value = self.take()
        if value_kind not in ("value", "word"):
            raise CriteriaError("expected a value")
        return ("cmp", name.removesuffix(".ID"), op, value)


def _comparable(name: str, value: Any) -> Any:
    if isinstance(value, dict):
        value = value.get("ID")
    if name in ("Modified_Time", "Added_Time") and isinstance(value, str):
        try:
            return datetime.strptime(value, ZOHO_TIME)
        except ValueError:
            return value
    return None if value is None else str(value)


def _matches(node: Any, fields: dict[str, Any]) -> bool:
    if node is None:
        return True
    kind = node[0]
    if kind == "and":
        return _matches(node[1], fields) and _matches(node[2], fields)
    if kind == "or":
        return _matches(node[1], fields) or _matches(node[2], fields)
    _, name, op, wanted = node
    have = _comparable(name, fields.get(name))
    want = _comparable(name, wanted)
    if have is None:
        return op == "!="
    if type(have) is not type(want):
        have, want = str(have), str(want)
    if op == "==":
        return bool(have == want)
    if op == "!=":
        return bool(have != want)
    if op == ">":
        return bool(have > want)
    if op == ">=":
        return bool(have >= want)
    if op == "<":
        return bool(have < want)
    return bool(have <= want)


def _equalities(node: Any) -> list[tuple[str, str]]:
    """``Field == value`` conditions every match must meet (top-level ``&&`` only)."""
    if node is None:
        return []
    if node[0] == "and":
        return _equalities(node[1]) + _equalities(node[2])
    if node[0] == "cmp" and node[2] == "==":
        return [(node[1], node[3])]
    return []


# -- the server -------------------------------------------------------------------------------


class ZohoCreatorServer(LocalServer):
    """See the module docstring."""

    label = "fake Zoho Creator"

    def __init__(
        self,
        *,
        owner: str = "acme",
        app: str = "events",
        client_id: str = "1000.FAKECLIENT",
        client_secret: str = "fake-client-secret-0123",
        refresh_token: str = "1000.fake-refresh-token-4567",
        token_lifetime_s: float = 3600.0,
        per_minute: int = 0,
        retry_after: float | None = 1.0,
        slow_s: float = 0.5,
    ) -> None:
        super().__init__()
        self.owner = owner
        self.app = app
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self.token_lifetime_s = token_lifetime_s
        self.per_minute = per_minute
        self.retry_after = retry_after
        self.slow_s = slow_s
        self.delay_s = 0.0
        self.sticky_cursor = False
        self.strict_sizes = True  # False: any max_records from 1 to 1000 (small test pages)
        self.reports: dict[str, _Report] = {}
        self.requests: list[Received] = []
        self.keep_requests = True
        self.tokens: dict[str, float] = {}
        self.tokens_issued = 0
        self.throttled = 0
        self._outcomes: deque[Outcome] = deque()
        self._cursors: dict[str, tuple[str, str, int]] = {}
        self._sent: dict[str, deque[float]] = {}
        self._seq = itertools.count(1)
        self._ids = itertools.count(4433256000000000001)
        self._criteria: dict[str, Any] = {}

    # -- addresses --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def source_config(self, report: str, **overrides: Any) -> dict[str, Any]:
        """A ``zoho_creator`` source config pointed at this server (limits lifted)."""
        return {
            "type": "zoho_creator",
            "creator_url": self.url,
            "accounts_url": self.url,
            "owner": self.owner,
            "app": self.app,
            "report": report,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "refresh_token": self.refresh_token,
            "requests_per_minute": 0,
            "backoff": "10ms",
            "max_backoff": "100ms",
            "poll_interval": "50ms",
            **overrides,
        }

    # -- data -------------------------------------------------------------------------------

    def report(self, name: str) -> _Report:
        return self.reports.setdefault(name, _Report())

    def add(self, report: str, record: dict[str, Any]) -> str:
        """Store ``record`` (its ``ID`` given or new, ``Modified_Time`` now unless given);
        returns its ID. A record with the ID of one held replaces it (and moves it last)."""
        data = dict(record)
        if "ID" not in data:
            data["ID"] = str(next(self._ids))
        data.setdefault("Modified_Time", zoho_time())
        self._store(report, str(data["ID"]), data, jsonvalue.dumps(data))
        return str(data["ID"])

    def add_many(self, report: str, records: list[dict[str, Any]]) -> list[str]:
        return [self.add(report, record) for record in records]

    def update(self, report: str, record_id: str, changes: dict[str, Any]) -> None:
        rep = self.report(report)
        row = rep.rows[rep.by_id[record_id]]
        data = {**row.fields, **changes}
        data.setdefault("Modified_Time", zoho_time())
        if "Modified_Time" not in changes:
            data["Modified_Time"] = zoho_time()
        self._store(report, record_id, data, jsonvalue.dumps(data))

    def delete(self, report: str, record_id: str) -> None:
        rep = self.report(report)
        seq = rep.by_id.pop(record_id)
        self._unindex(rep, rep.rows.pop(seq))

    def put(self, report: str, data: dict[str, Any], *, key_field: str = "ID") -> None:
        """Store ``data`` exactly as given (no ID nor Modified_Time added): one held with the
        same ``key_field`` value is replaced; one without it is a new row."""
        body = jsonvalue.dumps(data)
        key = data.get(key_field)
        if isinstance(key, str):
            self._store(report, key, data, body)
        else:
            self.put_raw(report, body, data)

    def put_raw(self, report: str, body: bytes, fields: dict[str, Any] | None = None) -> None:
        """Store a row served as ``body`` exactly (no object, no ID...); ``fields`` are what
        criteria see of it."""
        rep = self.report(report)
        seq = next(self._seq)
        row = _Row(seq, None, dict(fields or {}), body)
        rep.rows[seq] = row
        rep.order.append(seq)
        self._index(rep, row)

    def records(self, report: str) -> dict[str, dict[str, Any]]:
        """The records held, by ID (decoded with exact numbers)."""
        rep = self.report(report)
        return {
            row.id: jsonvalue.loads(row.body, writable=True)
            for row in rep.rows.values()
            if row.id is not None
        }

    def _store(self, report: str, record_id: str, data: dict[str, Any], body: bytes) -> None:
        rep = self.report(report)
        old = rep.by_id.pop(record_id, None)
        if old is not None:
            self._unindex(rep, rep.rows.pop(old))
        seq = next(self._seq)
        row = _Row(seq, record_id, data, body)
        rep.rows[seq] = row
        rep.by_id[record_id] = seq
        rep.order.append(seq)
        self._index(rep, row)

    def _index(self, rep: _Report, row: _Row) -> None:
        for name, value in row.fields.items():
            if isinstance(value, dict) and "ID" in value:
                rep.index.setdefault(name, {}).setdefault(str(value["ID"]), []).append(row.seq)

    def _unindex(self, rep: _Report, row: _Row) -> None:
        for name, value in row.fields.items():
            if isinstance(value, dict) and "ID" in value:
                seqs = rep.index.get(name, {}).get(str(value["ID"]))
                if seqs is not None:
                    position = bisect.bisect_left(seqs, row.seq)
                    if position < len(seqs) and seqs[position] == row.seq:
                        seqs.pop(position)

    # -- faults -----------------------------------------------------------------------------

    def respond_next(self, *outcomes: Outcome) -> None:
        self._outcomes.extend(outcomes)

    def expire_tokens(self) -> None:
        for token in self.tokens:
            self.tokens[token] = 0.0

    def data_requests(self) -> list[Received]:
        return [r for r in self.requests if r.path.startswith("/api/")]

    def token_requests(self) -> list[Received]:
        return [r for r in self.requests if r.path == "/oauth/v2/token"]

    # -- app --------------------------------------------------------------------------------

    def build_app(self) -> Starlette:
        base = "/api/v2.1/{owner}/{app}/report/{report}"
        return Starlette(
            routes=[
                Route("/oauth/v2/token", self._token, methods=["POST"]),
                Route(base + "/count", self._count, methods=["GET"]),
                Route(base, self._records, methods=["GET"]),
            ]
        )

    def _received(self, request: Request) -> Received:
        seen = Received(
            request.method, request.url.path, dict(request.query_params), dict(request.headers)
        )
        if self.keep_requests:
            self.requests.append(seen)
        return seen

    async def _token(self, request: Request) -> Response:
        seen = self._received(request)
        form = dict(request.query_params)
        # x-www-form-urlencoded, read by hand (no multipart parser needed)
        form.update(parse_qsl((await request.body()).decode("utf-8", "replace")))
        if form.get("grant_type") != "refresh_token":
            return _json({"error": "unsupported_grant_type"}, 200, seen)
        if (
            form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return _json({"error": "invalid_client"}, 200, seen)
        if form.get("refresh_token") != self.refresh_token:
            return _json({"error": "invalid_code"}, 200, seen)
        token = f"1000.{uuid.uuid4().hex}.{uuid.uuid4().hex[:16]}"
        self.tokens[token] = time.monotonic() + self.token_lifetime_s
        self.tokens_issued += 1
        answer = {
            "access_token": token,
            "api_domain": "https://www.zohoapis.com",
            "token_type": "Bearer",
            "expires_in": int(self.token_lifetime_s),
        }
        return _json(answer, 200, seen)

    async def _guard(self, request: Request, seen: Received) -> Response | None:
        """The checks every data request goes through, faults first."""
        outcome = self._outcomes.popleft() if self._outcomes else None
        if outcome == "slow":
            await asyncio.sleep(self.slow_s)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if outcome == "expire":
            self.expire_tokens()
        if isinstance(outcome, int) and outcome >= 300:
            return _json({"code": 2899, "message": "Internal error (injected)"}, outcome, seen)
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme != "Zoho-oauthtoken" or self.tokens.get(token, 0.0) <= time.monotonic():
            message = "Authorization Failure. The access token is either invalid or has expired."
            return _json({"code": 1030, "message": message}, 401, seen)
        params = request.path_params
        if params["owner"] != self.owner or params["app"] != self.app:
            return _json({"code": 1000, "message": "Invalid API URL format."}, 404, seen)
        if params["report"] not in self.reports:
            return _json({"code": 1000, "message": "No report named so."}, 404, seen)
        if outcome == "429" or self._over_limit(request.url.path):
            self.throttled += 1
            headers = {} if self.retry_after is None else {"Retry-After": f"{self.retry_after:g}"}
            message = "You have reached the API call limit per minute."
            return _json({"code": 2945, "message": message}, 429, seen, headers)
        if outcome == "malformed":
            seen.status = 200
            return Response(b'{"code":3000,"data":[{"ID":"', 200, media_type="application/json")
        return None

    def _over_limit(self, path: str) -> bool:
        if self.per_minute <= 0:
            return False
        sent = self._sent.setdefault(path, deque())
        now = time.monotonic()
        while sent and sent[0] <= now - 60.0:
            sent.popleft()
        if len(sent) >= self.per_minute:
            return True
        sent.append(now)
        return False

    def _parsed(self, text: str | None) -> Any:
        if not text:
            return None
        if text not in self._criteria:
            self._criteria[text] = _Parser(text).parse()
        return self._criteria[text]

    def _candidates(self, rep: _Report, node: Any) -> list[int]:
        for name, value in _equalities(node):
            if name in rep.index:
                return rep.index[name].get(value.strip("\"'"), [])
        return rep.order

    async def _records(self, request: Request) -> Response:
        seen = self._received(request)
        refused = await self._guard(request, seen)
        if refused is not None:
            return refused
        report = request.path_params["report"]
        rep = self.reports[report]
        try:
            size = int(request.query_params.get("max_records", "200"))
        except ValueError:
            size = -1
        if size not in ALLOWED_MAX_RECORDS and not (0 < size <= 1000 and not self.strict_sizes):
            message = "max_records must be 200, 500 or 1000."
            return _json({"code": 3990, "message": message}, 400, seen)
        criteria = request.query_params.get("criteria", "")
        try:
            node = self._parsed(criteria)
        except CriteriaError as exc:
            return _json({"code": 3020, "message": f"Invalid criteria: {exc}"}, 400, seen)
        after = 0
        cursor = request.headers.get("record_cursor")
        if cursor:
            held = self._cursors.get(cursor)
            if held is None or held[:2] != (report, criteria):
                return _json({"code": 3020, "message": "Invalid record_cursor."}, 400, seen)
            after = held[2]
        bodies, last, more = self._page(rep, node, after, size)
        if not bodies:
            # 200 with the code, like Zoho's other "none available" answers (3910-3930)
            return _json({"code": 3100, "message": "No records found."}, 200, seen)
        headers: dict[str, str] = {}
        if more and self.sticky_cursor:
            # a broken server: the same cursor every time, for the same first page
            self._cursors.setdefault("stuck-cursor", (report, criteria, 0))
            headers["record_cursor"] = "stuck-cursor"
        elif more:
            token = uuid.uuid4().hex + uuid.uuid4().hex
            self._cursors[token] = (report, criteria, last)
            headers["record_cursor"] = token
        seen.status = 200
        body = b'{"code":3000,"data":[' + b",".join(bodies) + b"]}"
        return Response(body, 200, headers=headers, media_type="application/json")

    def _page(
        self, rep: _Report, node: Any, after: int, size: int
    ) -> tuple[list[bytes], int, bool]:
        candidates = self._candidates(rep, node)
        start = bisect.bisect_right(candidates, after)
        bodies: list[bytes] = []
        last = after
        for position in range(start, len(candidates)):
            seq = candidates[position]
            row = rep.rows.get(seq)
            if row is None or not _matches(node, row.fields):
                continue
            if len(bodies) == size:
                return bodies, last, True
            bodies.append(row.body)
            last = seq
        return bodies, last, False

    async def _count(self, request: Request) -> Response:
        seen = self._received(request)
        refused = await self._guard(request, seen)
        if refused is not None:
            return refused
        rep = self.reports[request.path_params["report"]]
        try:
            node = self._parsed(request.query_params.get("criteria", ""))
        except CriteriaError as exc:
            return _json({"code": 3020, "message": f"Invalid criteria: {exc}"}, 400, seen)
        count = sum(
            1
            for seq in self._candidates(rep, node)
            if (row := rep.rows.get(seq)) is not None and _matches(node, row.fields)
        )
        return _json({"code": 3000, "result": {"records_count": str(count)}}, 200, seen)

    # -- in a thread ------------------------------------------------------------------------

    @contextlib.contextmanager
    def threaded(self) -> Iterator[ZohoCreatorServer]:
        """Serve from a thread with its own event loop (a benchmark's client then has the
        process's loop to itself). Mutate the data only while no request is under way."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=serve, name=self.label, daemon=True)
        thread.start()
        ready.wait(10)
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


def _json(
    body: Any, status: int, seen: Received, headers: dict[str, str] | None = None
) -> Response:
    seen.status = status
    return Response(jsonvalue.dumps(body), status, headers=headers, media_type="application/json")
