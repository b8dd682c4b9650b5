"""A local Algolia for tests: the parts of Algolia's REST API (v1) the official client uses,
served by Starlette + uvicorn on 127.0.0.1, objects kept in memory per index.

Endpoints: ``POST /1/indexes/{index}/batch`` (addObject, updateObject, partialUpdateObject,
partialUpdateObjectNoCreate, deleteObject, clear, delete), ``GET /1/indexes/{index}/task/{id}``,
``POST /1/indexes/{index}/operation`` (move, copy with scope), ``GET /1/indexes/{index}/{id}``,
``POST /1/indexes/*/objects`` (getObjects), ``POST /1/indexes/{index}/browse`` (cursor),
``GET``/``PUT /1/indexes/{index}/settings``, ``DELETE /1/indexes/{index}``, ``GET /1/indexes``.

Every request needs ``X-Algolia-Application-Id`` and ``X-Algolia-API-Key`` matching the
server's (403 otherwise) and is recorded. Failures to inject:

- ``respond_next(*outcomes)``: the next requests get these outcomes, in order: an int status
  (``500``, ``503``; a 2xx lets the endpoint answer as usual), ``"429"`` (with
  ``Retry-After: retry_after`` unless it is ``None``), ``"garbage"`` (200 with a body
  that is not the endpoint's) or ``"hang"`` (no answer for ``hang_s``, or until the server
  stops);
- ``delay_s``: every answer waits this long first (slow answers);
- ``reject_object_ids``: a batch holding one of these objectIDs is refused with 400 and
  nothing of it is applied (``echo_headers`` adds the request's headers to the message, as a
  careless proxy might);
- ``task_pending_polls``: a task answers ``notPublished`` this many times before ``published``.

Runs as a task in the test's own event loop: ``async with AlgoliaServer() as server: ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from syncworker.core import jsonvalue
from tests.fakes.local_server import LocalServer

Outcome = int | Literal["429", "hang", "garbage"]
BROWSE_PAGE = 1000


@dataclass(slots=True)
class Received:
    """One request as the server saw it, and the status it answered (``None``: it hung)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None

    @property
    def json(self) -> Any:
        return jsonvalue.loads(self.body) if self.body else None


@dataclass(slots=True)
class _Index:
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: _now())
    updated_at: str = field(default_factory=lambda: _now())


class AlgoliaServer(LocalServer):
    """See the module docstring."""

    label = "fake Algolia"

    def __init__(self, *, app_id: str = "TESTAPP", api_key: str = "test-admin-key-0123") -> None:
        super().__init__()
        self.app_id = app_id
        self.api_key = api_key
        self.indexes: dict[str, _Index] = {}
        self.requests: list[Received] = []
        self.reject_object_ids: set[str] = set()
        self.reject_message = "Record {object_id} is invalid: attribute 'price' is not a number"
        self.echo_headers = False
        self.retry_after: str | None = "2"
        self.hang_s = 30.0
        self.delay_s = 0.0
        self.task_pending_polls = 0
        self._tasks: dict[int, int] = {}
        self._task_ids = itertools.count(1000)
        self._script: deque[Outcome] = deque()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def respond_next(self, *outcomes: Outcome) -> None:
        self._script.extend(outcomes)

    def objects(self, index: str) -> dict[str, dict[str, Any]]:
        """The objects of ``index`` by objectID (empty when it does not exist)."""
        found = self.indexes.get(index)
        return {} if found is None else found.objects

    def calls(self, suffix: str = "/batch", method: str = "POST") -> list[Received]:
        """Requests whose path ends with ``suffix``, answered 2xx."""
        return [
            r
            for r in self.requests
            if r.method == method
            and r.path.endswith(suffix)
            and r.status is not None
            and 200 <= r.status < 300
        ]

    def build_app(self) -> Starlette:
        routes = [
            Route("/1/indexes", self._list_indices, methods=["GET"]),
            Route("/1/indexes/*/objects", self._get_objects, methods=["POST"]),
            Route("/1/indexes/{index}/batch", self._batch, methods=["POST"]),
            Route("/1/indexes/{index}/task/{task_id:int}", self._get_task, methods=["GET"]),
            Route("/1/indexes/{index}/operation", self._operation, methods=["POST"]),
            Route("/1/indexes/{index}/browse", self._browse, methods=["POST"]),
            Route("/1/indexes/{index}/settings", self._settings, methods=["GET", "PUT"]),
            Route("/1/indexes/{index}/{object_id}", self._get_object, methods=["GET"]),
            Route("/1/indexes/{index}", self._delete_index, methods=["DELETE"]),
        ]
        app = Starlette(routes=routes)
        app.add_middleware(_Gate, server=self)
        return app

    # -- the gate every request passes: recording, auth, injected failures ---------------

    async def gate(self, received: Received) -> Response | None:
        """An answer that replaces the endpoint's, or ``None`` to let it answer."""
        app_id = received.headers.get("x-algolia-application-id")
        api_key = received.headers.get("x-algolia-api-key")
        if app_id != self.app_id or api_key != self.api_key:
            return _error(403, "Invalid Application-ID or API key")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if not self._script:
            return None
        outcome = self._script.popleft()
        if outcome == "hang":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.hang_s)
            return _error(503, "gave up hanging")
        if isinstance(outcome, int) and 200 <= outcome < 300:
            return None  # the endpoint answers as usual
        if outcome == "garbage":
            return _json({"unexpected": True})
        if outcome == "429":
            headers = {} if self.retry_after is None else {"Retry-After": self.retry_after}
            return _error(429, "Too many requests", headers)
        return _error(outcome, f"injected failure {outcome}")

    # -- endpoints ------------------------------------------------------------------------

    async def _batch(self, request: Request) -> Response:
        name = request.path_params["index"]
        payload = jsonvalue.loads(await request.body())
        operations = payload.get("requests")
        if not isinstance(operations, list):
            return _error(400, "requests must be an array")
        for operation in operations:
            object_id = (operation.get("body") or {}).get("objectID")
            if object_id is not None and str(object_id) in self.reject_object_ids:
                message = self.reject_message.format(object_id=object_id)
                if self.echo_headers:
                    message += " (headers: " + " ".join(request.headers.values()) + ")"
                return _error(400, message)
            if operation.get("action") not in _ACTIONS:
                return _error(400, f"invalid action {operation.get('action')!r}")
        index = self.indexes.setdefault(name, _Index())
        object_ids = [self._apply(name, index, operation) for operation in operations]
        index.updated_at = _now()
        return _json({"taskID": self._new_task(), "objectIDs": object_ids})

    def _apply(self, name: str, index: _Index, operation: dict[str, Any]) -> str:
        action = operation["action"]
        body = dict(operation.get("body") or {})
        object_id = str(body.get("objectID") or uuid.uuid4().hex)
        body["objectID"] = object_id
        if action in ("addObject", "updateObject"):
            index.objects[object_id] = body
        elif action == "partialUpdateObject":
            index.objects.setdefault(object_id, {}).update(body)
        elif action == "partialUpdateObjectNoCreate":
            if object_id in index.objects:
                index.objects[object_id].update(body)
        elif action == "deleteObject":
            index.objects.pop(object_id, None)
        elif action == "clear":
            index.objects.clear()
        elif action == "delete":
            self.indexes.pop(name, None)
        return object_id

    async def _get_task(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        if task_id not in self._tasks:
            return _error(404, "Task does not exist")
        if self._tasks[task_id] > 0:
            self._tasks[task_id] -= 1
            return _json({"status": "notPublished"})
        return _json({"status": "published"})

    async def _operation(self, request: Request) -> Response:
        name = request.path_params["index"]
        payload = jsonvalue.loads(await request.body())
        kind, destination = payload.get("operation"), payload.get("destination")
        if kind not in ("move", "copy") or not destination:
            return _error(400, "operation must be move or copy, with a destination")
        source = self.indexes.get(name, _Index())
        if kind == "move":
            # Algolia ignores moving an index that does not exist.
            if name in self.indexes:
                self.indexes[destination] = self.indexes.pop(name)
        else:
            scope = payload.get("scope")
            target = self.indexes.setdefault(destination, _Index())
            if scope is None or "settings" in scope:
                target.settings = copy.deepcopy(source.settings)
            if scope is None:
                target.objects = copy.deepcopy(source.objects)
        return _json({"taskID": self._new_task(), "updatedAt": _now()})

    async def _get_object(self, request: Request) -> Response:
        found = self.objects(request.path_params["index"]).get(request.path_params["object_id"])
        if found is None:
            return _error(404, "ObjectID does not exist")
        return _json(found)

    async def _get_objects(self, request: Request) -> Response:
        payload = jsonvalue.loads(await request.body())
        results = [
            self.objects(item["indexName"]).get(str(item["objectID"]))
            for item in payload.get("requests", [])
        ]
        return _json({"results": results})

    async def _browse(self, request: Request) -> Response:
        name = request.path_params["index"]
        body = await request.body()
        payload = jsonvalue.loads(body) if body else {}
        hits_per_page = int(payload.get("hitsPerPage") or BROWSE_PAGE)
        start = int(payload.get("cursor") or 0)
        ordered = sorted(self.objects(name).values(), key=lambda o: o["objectID"])
        page = ordered[start : start + hits_per_page]
        answer: dict[str, Any] = {
            "hits": page,
            "nbHits": len(ordered),
            "page": 0,
            "nbPages": 1,
            "hitsPerPage": hits_per_page,
            "processingTimeMS": 1,
            "query": "",
            "params": "",
        }
        if start + hits_per_page < len(ordered):
            answer["cursor"] = str(start + hits_per_page)
        return _json(answer)

    async def _settings(self, request: Request) -> Response:
        name = request.path_params["index"]
        if request.method == "GET":
            if name not in self.indexes:
                return _error(404, "Index does not exist")
            return _json(self.indexes[name].settings)
        index = self.indexes.setdefault(name, _Index())
        index.settings.update(jsonvalue.loads(await request.body()))
        return _json({"taskID": self._new_task(), "updatedAt": _now()})

    async def _delete_index(self, request: Request) -> Response:
        self.indexes.pop(request.path_params["index"], None)
        return _json({"taskID": self._new_task(), "deletedAt": _now()})

    async def _list_indices(self, request: Request) -> Response:
        items = [
            {
                "name": name,
                "createdAt": index.created_at,
                "updatedAt": index.updated_at,
                "entries": len(index.objects),
                "dataSize": len(jsonvalue.dumps(index.objects)),
                "fileSize": len(jsonvalue.dumps(index.objects)),
                "lastBuildTimeS": 0,
                "numberOfPendingTasks": 0,
                "pendingTask": False,
            }
            for name, index in sorted(self.indexes.items())
        ]
        return _json({"items": items, "nbPages": 1})

    def _new_task(self) -> int:
        task_id = next(self._task_ids)
        self._tasks[task_id] = self.task_pending_polls
        return task_id


class _Gate:
    """ASGI middleware: records each request and lets ``AlgoliaServer.gate`` answer first."""

    def __init__(self, app: Any, server: AlgoliaServer) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        body = await request.body()
        received = Received(request.method, request.url.path, dict(request.headers.items()), body)
        self.server.requests.append(received)
        replaced = await self.server.gate(received)

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def recording_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                received.status = message["status"]
            await send(message)

        if replaced is not None:
            await replaced(scope, replay, recording_send)
        else:
            await self.app(scope, replay, recording_send)


_ACTIONS = frozenset(
    {
        "addObject",
        "updateObject",
        "partialUpdateObject",
        "partialUpdateObjectNoCreate",
        "deleteObject",
        "clear",
        "delete",
    }
)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json({"message": message, "status": status}, status_code=status, headers=headers)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(value: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer with numbers exactly as stored: the fake keeps what the client sent, so
    a test sees what the sink wrote, not what a parser rounded."""
    body = jsonvalue.dumps(value)
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")
