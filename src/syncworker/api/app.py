"""The control API: status, health, control, dead letters, metrics, and the dashboard.

One FastAPI app per engine. Every endpoint but ``/health``, ``/ready`` and the dashboard's
page shell (which holds no data) needs ``Authorization: Bearer <token>`` when a token is
configured; without one, only loopback ``Host`` names and same-origin pages are served.
Both are checked, and bodies capped, before a body is read (`syncworker.api.guard`).
Errors are ``{"error": ..., "detail": ...}``, never a stack trace, also for unknown paths
(404) and methods (405).
"""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from importlib import resources
from typing import Annotated, Any, Literal

import psutil
import structlog
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from syncworker import __version__
from syncworker.api import models
from syncworker.api.guard import MAX_BODY_BYTES, RequestGuard
from syncworker.compat.zoho_worker import last_sync_time, seed_config, seed_stats
from syncworker.core import jsonvalue
from syncworker.core.engine import Engine
from syncworker.core.pipeline import Pipeline
from syncworker.errors import ConfigError, ConnectorError, UnsupportedOperation
from syncworker.jobs.metrics import find_jobs_service, queue_figures
from syncworker.jobs.service import JobsService
from syncworker.observe.health import evaluate
from syncworker.observe.history import History
from syncworker.observe.logging import redact_url, redact_value
from syncworker.observe.metrics import EngineMetrics
from syncworker.queue.base import Job, JobState
from syncworker.reconcile import groups as grouped
from syncworker.reconcile.scheduled import verify_status
from syncworker.state.base import DeadLetter

log = structlog.get_logger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": models.ErrorBody, "description": "foreign Host header (no token set)"},
    401: {"model": models.ErrorBody, "description": "missing or wrong API token"},
    403: {"model": models.ErrorBody, "description": "cross-site Origin (no token set)"},
    413: {"model": models.ErrorBody, "description": "request body over the size limit"},
    422: {"model": models.ErrorBody, "description": "invalid request"},
}
Responses = dict[int | str, dict[str, Any]]
NOT_FOUND: Responses = {404: {"model": models.ErrorBody, "description": "no such pipeline or item"}}
CONFLICT: Responses = {
    409: {"model": models.ErrorBody, "description": "not possible in this state"}
}
BUSY: Responses = {
    409: {
        "model": models.SyncRunning,
        "description": "a sync of the pipeline is under way (detail.sync_id names it), or "
        "the pipeline is stopped",
    }
}
NOT_IMPLEMENTED: Responses = {501: {"model": models.ErrorBody, "description": "not supported here"}}
STOPPING: Responses = {503: {"model": models.ErrorBody, "description": "the engine is stopping"}}
PipelineName = Annotated[str, Path(description="pipeline name")]
JOBS: Responses = {
    404: {
        "model": models.ErrorBody,
        "description": "no jobs: section in the config (or no such job)",
    },
    503: {
        "model": models.ErrorBody,
        "description": "the job queue backend is not open yet or failed (detail says why)",
    },
}
JobId = Annotated[str, Path(min_length=1, max_length=300, description="a job's id")]
REQUEUE_PAGE = 500


class ApiError(Exception):
    """An error answer: status code, one-line message, optional detail."""

    def __init__(self, status_code: int, error: str, detail: Any = None) -> None:
        super().__init__(error)
        self.status_code = status_code
        self.error = error
        self.detail = detail


class Controller:
    """What the endpoints do, kept apart from the routing."""

    def __init__(self, engine: Engine, metrics: EngineMetrics, history: History) -> None:
        self.engine = engine
        self.metrics = metrics
        self.history = history
        self._background: set[asyncio.Task[Any]] = set()
        self._process = psutil.Process()
        self._process.cpu_percent()

    def pipeline(self, name: str) -> Pipeline:
        try:
            return self.engine.pipeline(name)
        except KeyError:
            raise ApiError(
                404, f"no pipeline named {name!r}", {"pipelines": sorted(self.engine.pipelines)}
            ) from None

    async def pipeline_status(self, pipeline: Pipeline) -> dict[str, Any]:
        status = pipeline.status()
        status["backlog"] = await self.metrics.backlog(pipeline)
        status["source_failed"] = await self.metrics.failed_in_source(pipeline)
        status["oldest_waiting_s"] = await self.metrics.oldest_waiting_s(pipeline)
        runs = await self.engine.state.runs(pipeline.name, limit=20)
        dead = (await self.engine.state.count_dead_letters(pipeline.name)).get("dead", 0)
        health = evaluate(
            status,
            pipeline.settings,
            runs,
            dead_letters=dead,
            source_failed=status["source_failed"],
        )
        status["health"] = health.to_dict()
        status["last_error"] = await self._last_error(pipeline.name, status["last_error"])
        status["verify"] = verify_status(self.engine, pipeline.name)
        return status

    async def _last_error(self, name: str, own: dict[str, Any] | None) -> dict[str, Any] | None:
        """The newest error of the pipeline: its own (a failed batch, a connection) or one
        of its records' in the error log (a dead letter), whichever came last, so the status
        never says "no error" while the error log lists some."""
        logged = await self.engine.state.errors(name, limit=1)
        if not logged:
            return own
        newest = logged[0]
        if own is not None and float(own.get("at") or 0) >= (newest.created_at or 0):
            return own
        return {"type": newest.type, "message": newest.message, "at": newest.created_at}

    async def engine_status(self) -> dict[str, Any]:
        base = self.engine.status()
        pipelines = {
            name: await self.pipeline_status(p) for name, p in self.engine.pipelines.items()
        }
        return {**base, "stopping": self.engine.stopping, "pipelines": pipelines}

    async def readiness(self) -> list[str]:
        reasons = []
        for name, pipeline in self.engine.pipelines.items():
            status = pipeline.status()
            if status["state"] != "running":
                reasons.append(f"pipeline {name!r} is {status['state']}")
            elif status["circuit"]["open"]:
                last = (status["last_error"] or {}).get("message", "a dependency failed")
                reasons.append(f"pipeline {name!r} is paused after failures: {last}")
        return reasons

    def _refused(self, name: str, exc: UnsupportedOperation) -> ApiError:
        """What an ``UnsupportedOperation`` means to a client: 503 when the engine is
        stopping (the pipeline could, but nothing new starts now), else 501 (it cannot)."""
        if self.engine.stopping:
            return self._stopping(name)
        return ApiError(501, str(exc))

    def _stopping(self, name: str) -> ApiError:
        # No Retry-After: this engine will not take it again; when the one replacing it
        # (a restart, another worker) is up is not this engine's to say.
        return ApiError(503, "the engine is stopping", {"pipeline": name})

    async def start(self, name: str) -> None:
        self.pipeline(name)
        if self.engine.stopping:
            raise self._stopping(name)
        try:
            await self.engine.start_pipeline(name)
        except UnsupportedOperation as exc:
            raise self._refused(name, exc) from None

    async def sync(
        self, name: str, request: models.SyncRequest, *, exclusive: bool = False
    ) -> dict[str, Any] | None:
        """Run ``request`` on pipeline ``name``. A sync under way finishes first and this one
        follows (queued), or with ``exclusive`` (the seed's paths, force) the request is
        answered 409 with the running sync's id."""
        pipeline = self.pipeline(name)
        if self.engine.stopping:
            raise self._stopping(name)
        if pipeline.task is None:
            raise ApiError(409, f"pipeline {name!r} is stopped: start it first")
        try:
            pipeline.check_mode(request.mode, request.key)
        except UnsupportedOperation as exc:
            if self.engine.stopping:
                raise self._stopping(name) from None
            detail = {"record_key": request.key} if request.key is not None else None
            raise ApiError(501, str(exc), detail) from None
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None
        if exclusive:
            self.refuse_if_busy(pipeline)
        run = pipeline.sync_now(request.mode, request.key)
        if not request.wait:
            task = asyncio.create_task(run, name=f"api-sync:{name}")
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return None
        try:
            return (await run).to_dict()
        except UnsupportedOperation as exc:  # the engine began stopping meanwhile
            raise self._refused(name, exc) from None

    def refuse_if_busy(self, pipeline: Pipeline) -> None:
        """409 naming the sync under way (or asked for) of ``pipeline``, if there is one."""
        running = pipeline.running_sync()
        if running is None:
            return
        raise ApiError(
            409,
            f"pipeline {pipeline.name!r} is already syncing (sync {running['id']})",
            {"pipeline": pipeline.name, "sync_id": running["id"], **_without_id(running)},
        )

    async def discrepancies(
        self, name: str, *, repair: bool, ignore_recent_s: float | None
    ) -> dict[str, Any]:
        """The grouped discrepancy check of pipeline ``name`` (with ``repair``: re-sync what
        differs through a run of the pipeline, then check again); 501 where the pipeline has
        no grouped sides."""
        pipeline = self.pipeline(name)
        sides = grouped.sides_for(pipeline)
        if sides is None:
            raise ApiError(
                501,
                f"pipeline {name!r} does not support reconciliation: its source "
                f"{pipeline.source.name!r} and sinks cannot be compared group by group",
            )
        if repair and self.engine.stopping:
            raise self._stopping(name)
        report = await grouped.check_pipeline(
            pipeline,
            sides,
            repair=repair,
            ignore_recent_s=ignore_recent_s,
            apply=lambda: pipeline.sync_now("incremental"),
        )
        return report.to_json()

    def grouped_pipelines(self) -> list[str]:
        return [n for n, p in self.engine.pipelines.items() if grouped.sides_for(p) is not None]

    async def dead_letter(self, letter_id: int) -> DeadLetter:
        letter = await self.engine.state.dead_letter(letter_id)
        if letter is None:
            raise ApiError(404, f"no dead letter with id {letter_id}")
        return letter

    def system(self) -> dict[str, Any]:
        memory = psutil.virtual_memory()
        process = self._process
        with process.oneshot():
            return {
                "cpu_percent": process.cpu_percent(),
                "cpu_count": psutil.cpu_count(),
                "load_average": list(os.getloadavg()),
                "memory_total_bytes": memory.total,
                "memory_available_bytes": memory.available,
                "memory_percent": memory.percent,
                "process_rss_bytes": process.memory_info().rss,
                "process_threads": process.num_threads(),
                "process_open_files": process.num_fds(),
                "process_uptime_s": round(time.time() - process.create_time(), 3),
                "pid": process.pid,
            }


def create_app(
    engine: Engine,
    *,
    token: str | None,
    metrics: EngineMetrics,
    allowed_hosts: tuple[str, ...] = (),
    max_body_bytes: int = MAX_BODY_BYTES,
    history: History | None = None,
) -> FastAPI:
    """The app for ``engine``; ``token`` None (or blank) means no auth: the server binds to
    loopback and only loopback names and ``allowed_hosts`` are accepted as ``Host``."""
    token = (token or "").strip() or None
    controller = Controller(engine, metrics, history or History(engine))
    app = FastAPI(
        title="syncworker",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        responses=ERRORS,
    )
    app.state.controller = controller
    _install_error_handlers(app)
    auth = _auth_dependency(token)
    public = APIRouter()
    private = APIRouter(dependencies=[Depends(auth)])
    _public_routes(public, controller)
    _status_routes(private, controller)
    _control_routes(private, controller)
    _dead_letter_routes(private, controller)
    _metrics_routes(private, controller)
    _jobs_routes(private, controller)
    _legacy_routes(private, controller)

    @private.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    app.include_router(public)
    app.include_router(private)
    app.add_middleware(
        RequestGuard, token=token, allowed_hosts=allowed_hosts, max_body_bytes=max_body_bytes
    )
    return app


def _auth_dependency(token: str | None) -> Any:
    bearer = HTTPBearer(auto_error=False, description="the api.token of the config")

    # The dependency goes in the default, not in Annotated[]: with postponed annotations
    # FastAPI resolves annotation strings in module globals, where `bearer` is not.
    async def check(
        credentials: HTTPAuthorizationCredentials | None = Security(bearer),  # noqa: B008
    ) -> None:
        if token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        # compare_digest: the time taken does not tell how much of the token was right.
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise ApiError(401, "missing or wrong API token")

    return check


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        body = {"error": exc.error, "detail": redact_value(exc.detail)}
        return JSONResponse(body, status_code=exc.status_code, headers=headers)

    # Starlette's class, not FastAPI's subclass: the router raises Starlette's for an unknown
    # path (404) or method (405), and those must have the same shape as every other error.
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        detail = {"path": request.url.path, "method": request.method}
        return JSONResponse(
            {"error": _http_error_text(exc), "detail": detail},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in exc.errors()]
        return JSONResponse({"error": "invalid request", "detail": detail}, status_code=422)

    # A dependency the request needs (the state store, a queue backend) down or closed, as
    # while the engine stops: the client may try again, so 503 with the reason, not a 500.
    @app.exception_handler(ConnectorError)
    async def unavailable(request: Request, exc: ConnectorError) -> JSONResponse:
        reason = redact_url(f"{type(exc).__name__}: {exc}")
        log.warning("api_dependency_unavailable", path=request.url.path, error=reason)
        return JSONResponse(
            {"error": "a dependency is unavailable", "detail": {"reason": reason}},
            status_code=503,
        )

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.error("api_request_failed", path=request.url.path, error=f"{type(exc).__name__}: {exc}")
        return JSONResponse(
            {"error": "internal error", "detail": type(exc).__name__}, status_code=500
        )


def _http_error_text(exc: HTTPException) -> str:
    if exc.status_code == 404:
        return "no such endpoint"
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("allow", (exc.headers or {}).get("Allow", ""))
        return f"method not allowed here; allowed: {allowed}" if allowed else "method not allowed"
    return str(exc.detail)


def _public_routes(router: APIRouter, c: Controller) -> None:
    @router.get("/health", response_model=models.Liveness, tags=["health"])
    async def health() -> dict[str, Any]:
        """Liveness: the process and its event loop answer."""
        status = c.engine.status()
        return {"status": "ok", "pid": status["pid"], "uptime_s": status["uptime_s"]}

    @router.get(
        "/ready",
        response_model=models.Readiness,
        tags=["health"],
        responses={503: {"model": models.Readiness}},
    )
    async def ready() -> Any:
        """Readiness: every pipeline connected and running, none paused by failures."""
        reasons = await c.readiness()
        body = {"ready": not reasons, "reasons": reasons}
        return JSONResponse(body, status_code=503) if reasons else body

    @router.get("/", include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        page = resources.files("syncworker.api").joinpath("dashboard.html")
        return HTMLResponse(page.read_text() if page.is_file() else "<h1>syncworker</h1>")


def _status_routes(router: APIRouter, c: Controller) -> None:
    @router.get("/status", response_model=models.EngineStatus, tags=["status"])
    async def status() -> dict[str, Any]:
        """The engine and every pipeline: state, counters, last sync, health."""
        return redact_value(await c.engine_status())  # type: ignore[no-any-return]

    @router.get(
        "/pipelines/{name}",
        response_model=models.PipelineDetail,
        tags=["status"],
        responses=NOT_FOUND,
    )
    async def pipeline(name: PipelineName) -> dict[str, Any]:
        """One pipeline, with its recent runs."""
        found = c.pipeline(name)
        detail = await c.pipeline_status(found)
        runs = await c.engine.state.runs(name, limit=20)
        detail["recent_runs"] = [r.to_dict() for r in runs]
        return redact_value(detail)  # type: ignore[no-any-return]

    @router.get("/history", response_model=models.HistoryPage, tags=["status"])
    async def history() -> dict[str, Any]:
        """Recent activity per pipeline, kept by the engine: records per 5 s over the last
        15 minutes, per-sink writes since start, batch latency, the last batch's time."""
        return c.history.snapshot()

    @router.get("/errors", response_model=models.ErrorPage, tags=["status"])
    async def errors(
        pipeline: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> dict[str, Any]:
        """Recent errors, newest first."""
        rows = await c.engine.state.errors(pipeline, limit=limit)
        return {
            "items": [
                {
                    "id": e.id,
                    "type": e.type,
                    "pipeline": e.pipeline,
                    "record_key": e.record_key,
                    "message": e.message,
                    "created_at": e.created_at,
                    "resolved": e.resolved,
                }
                for e in rows
            ]
        }


def _control_routes(router: APIRouter, c: Controller) -> None:
    @router.post(
        "/pipelines/{name}/start",
        response_model=models.PipelineState,
        tags=["control"],
        responses={**NOT_FOUND, **STOPPING},
    )
    async def start(name: PipelineName) -> dict[str, Any]:
        """Start a stopped pipeline (a running one is left as it is)."""
        await c.start(name)
        return {"pipeline": name, "state": c.engine.pipeline(name).status()["state"]}

    @router.post(
        "/pipelines/{name}/stop",
        response_model=models.PipelineState,
        tags=["control"],
        responses=NOT_FOUND,
    )
    async def stop(name: PipelineName) -> dict[str, Any]:
        """Stop a pipeline: in-flight batches finish (or go back) first."""
        c.pipeline(name)
        await c.engine.stop_pipeline(name)
        return {"pipeline": name, "state": c.engine.pipeline(name).status()["state"]}

    @router.post(
        "/pipelines/{name}/sync",
        tags=["control"],
        response_model=models.RunSummary,
        responses={
            **NOT_FOUND,
            **CONFLICT,
            **NOT_IMPLEMENTED,
            **STOPPING,
            202: {"model": models.SyncAccepted},
        },
    )
    async def sync(name: PipelineName, request: models.SyncRequest | None = None) -> Any:
        """Run a sync now; with ``wait`` (default) answer with the finished run."""
        request = request or models.SyncRequest()
        summary = await c.sync(name, request)
        if summary is None:
            return JSONResponse(
                {"pipeline": name, "mode": request.mode, "accepted": True}, status_code=202
            )
        return summary

    @router.post(
        "/pipelines/{name}/force/{key}",
        tags=["control"],
        response_model=models.RunSummary,
        responses={**NOT_FOUND, **NOT_IMPLEMENTED, **BUSY, **STOPPING},
    )
    async def force(name: PipelineName, key: str) -> dict[str, Any]:
        """Sync one key or group now (seed 002's force sync), where the source supports it;
        409 with the running sync's id while one runs."""
        request = models.SyncRequest(mode="force", key=key)
        summary = await c.sync(name, request, exclusive=True)
        assert summary is not None
        return summary

    @router.get(
        "/pipelines/{name}/discrepancies",
        tags=["control"],
        response_model=models.DiscrepancyReport,
        responses={**NOT_FOUND, **NOT_IMPLEMENTED, **STOPPING},
    )
    async def discrepancies(
        name: PipelineName,
        repair: bool = False,
        ignore_recent: Annotated[float | None, Query(ge=0, le=86_400)] = None,
    ) -> dict[str, Any]:
        """Compare source and sink group by group: the exact missing, extra and different
        ids per group, with totals; ``repair=true`` re-syncs them and checks again."""
        return await c.discrepancies(name, repair=repair, ignore_recent_s=ignore_recent)

    @router.post("/shutdown", response_model=models.ShuttingDown, status_code=202, tags=["control"])
    async def shutdown() -> dict[str, Any]:
        """Stop the engine gracefully, as SIGTERM does."""
        c.engine.request_stop()
        return {"shutting_down": True}


def _dead_letter_routes(router: APIRouter, c: Controller) -> None:
    @router.get("/dead-letters", response_model=models.DeadLetterPage, tags=["dead letters"])
    async def dead_letters(
        pipeline: str | None = None,
        status: Literal["dead", "requeued", "replaying"] | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    ) -> dict[str, Any]:
        """Dead letters, oldest first."""
        rows = await c.engine.state.dead_letters(pipeline, status, limit, offset)
        counts = await c.engine.state.count_dead_letters(pipeline)
        total = counts.get(status, 0) if status else sum(counts.values())
        return {"items": [redact_value(d.to_dict()) for d in rows], "total": total}

    @router.get(
        "/dead-letters/{letter_id}",
        response_model=models.DeadLetterDetail,
        tags=["dead letters"],
        responses=NOT_FOUND,
    )
    async def dead_letter(letter_id: Annotated[int, Path(ge=1, le=2**62)]) -> Response:
        """One dead letter whole: record, error, stack."""
        letter = redact_value((await c.dead_letter(letter_id)).to_dict(full=True))
        # Encoded here, not by FastAPI: its encoder turns a Decimal into a string and the
        # record must read exactly as it was kept (integers past 64 bits, long decimals).
        return Response(jsonvalue.dumps(letter), media_type="application/json")

    @router.post(
        "/dead-letters/{letter_id}/requeue",
        response_model=models.Requeued,
        tags=["dead letters"],
        responses={**NOT_FOUND, **CONFLICT},
    )
    async def requeue(letter_id: Annotated[int, Path(ge=1, le=2**62)]) -> dict[str, Any]:
        """Send a dead letter back to its pipeline, which writes it again."""
        letter = await c.dead_letter(letter_id)
        if letter.status != "dead":
            raise ApiError(409, f"dead letter {letter_id} is already {letter.status}")
        await c.engine.state.requeue_dead_letters([letter_id])
        return {"id": letter_id, "status": "requeued"}

    @router.delete(
        "/dead-letters/{letter_id}",
        response_model=models.Deleted,
        tags=["dead letters"],
        responses=NOT_FOUND,
    )
    async def delete(letter_id: Annotated[int, Path(ge=1, le=2**62)]) -> dict[str, Any]:
        """Delete a dead letter for good."""
        await c.dead_letter(letter_id)
        await c.engine.state.delete_dead_letters([letter_id])
        return {"id": letter_id, "deleted": True}


def _metrics_routes(router: APIRouter, c: Controller) -> None:
    @router.get(
        "/metrics",
        tags=["metrics"],
        response_class=Response,
        responses={
            200: {
                "content": {"text/plain": {"schema": {"type": "string"}}},
                "description": "Prometheus text format",
            }
        },
    )
    async def metrics() -> Response:
        """Prometheus metrics of every pipeline."""
        await c.metrics.refresh()
        body, content_type = c.metrics.render()
        return Response(body, media_type=content_type)

    @router.get("/metrics/system", response_model=models.SystemMetrics, tags=["metrics"])
    async def system() -> dict[str, Any]:
        """CPU, memory and process figures (seed 003's /metrics/system)."""
        return c.system()


class _JobsApi:
    """What the jobs endpoints do with the engine's jobs service (404 without one, 503
    while its backend is not open or when it fails)."""

    def __init__(self, c: Controller) -> None:
        self.c = c

    def service(self) -> JobsService:
        service = find_jobs_service(self.c.engine.services)
        if service is None:
            raise ApiError(404, "no job queue here: the config has no jobs: section")
        if not service.opened.is_set():
            error = service.status()["backend_error"]
            raise ApiError(503, "the job queue backend is not open yet", {"backend_error": error})
        return service

    async def call(self, work: Any) -> Any:
        """``await work``, a backend failure answered 503 with its (redacted) reason."""
        try:
            return await work
        except ApiError:
            raise
        except Exception as exc:
            raise _backend_failed(exc) from None

    async def queues(self) -> dict[str, Any]:
        service = self.service()
        cache = self.c.metrics.jobs.counts_cache()
        assert cache is not None  # the service exists
        counts = await self.call(cache.latest())
        return queue_figures(counts, service.worker.stats() if service.worker else None)

    async def job(self, job_id: str) -> Job:
        service = self.service()
        try:
            found = await service.backend.get(job_id)
        except ValueError:  # an id the backend cannot parse ("²" passes str.isdigit)
            found = None
        except Exception as exc:
            raise _backend_failed(exc) from None
        if found is None:
            raise ApiError(404, f"no job with id {job_id!r}")
        return found

    async def enqueue(self, request: models.EnqueueRequest, payload: Any) -> str:
        service = self.service()
        try:
            job = service.jobs.new_job(
                request.task,
                payload,
                delay_s=request.delay_s,
                priority=request.priority,
                queue=request.queue,
                unique_key=request.unique_key,
            )
        except ConfigError as exc:  # an unknown task
            raise ApiError(422, exc.reason, {"tasks": service.jobs.registry.names()}) from None
        except ValueError as exc:  # the task's model refused the payload
            raise ApiError(422, str(exc)) from None
        ids = await self.call(service.backend.enqueue_many([job]))
        return str(ids[0])

    async def requeue_queue(self, queue: str) -> int:
        """Every dead job of ``queue`` back to queued, page by page; a job that dies again
        while this runs is left dead (each id is requeued once)."""
        backend = self.service().backend
        if "\x00" in queue:
            return 0  # no queue is named so (PostgreSQL refuses NUL in text)
        seen: set[str] = set()
        total = 0
        while True:
            page = await self.call(
                backend.list_jobs(queue=queue, state=JobState.DEAD, limit=REQUEUE_PAGE)
            )
            ids = [job.id for job in page if job.id not in seen]
            if not ids:
                return total
            seen.update(ids)
            total += int(await self.call(backend.requeue(ids)))


def _backend_failed(exc: Exception) -> ApiError:
    reason = redact_url(f"{type(exc).__name__}: {exc}")
    return ApiError(503, "the job queue backend failed", {"reason": reason})


def _job_body(job: Job, *, whole: bool) -> dict[str, Any]:
    redacted: dict[str, Any] = redact_value(job.describe(whole=whole))
    return redacted


def _exact_json(body: Any, status_code: int = 200) -> Response:
    # Encoded here, not by FastAPI: payloads and results keep their exact numbers.
    return Response(jsonvalue.dumps(body), status_code=status_code, media_type="application/json")


def _jobs_routes(router: APIRouter, c: Controller) -> None:
    """The ``jobs:`` section's queue: seed 003's /metrics/queues, listing, enqueueing and
    requeueing jobs. 404 (naming the missing section) when the config has none."""
    jobs = _JobsApi(c)

    @router.get(
        "/metrics/queues",
        response_model=dict[str, models.QueueFigures],
        tags=["jobs"],
        responses=JOBS,
    )
    async def queue_metrics() -> dict[str, Any]:
        """Per queue: waiting, active, delayed, completed, failed, dead (seed 003), running
        and concurrency here. The counts are the last ones read (read again in the
        background when older than 2 s), so this never waits on the backend but the first
        time."""
        return await jobs.queues()

    @router.get("/jobs", response_model=models.JobPage, tags=["jobs"], responses=JOBS)
    async def list_jobs(
        queue: Annotated[str | None, Query(min_length=1, max_length=300)] = None,
        state: models.JobStateName | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Response:
        """Jobs, newest first, with their payload (the stack: ``GET /jobs/{id}``)."""
        backend = jobs.service().backend
        wanted = JobState(state) if state else None
        if queue is not None and "\x00" in queue:
            return _exact_json({"items": []})  # no queue is named so (PostgreSQL refuses NUL)
        found = await jobs.call(backend.list_jobs(queue=queue, state=wanted, limit=limit))
        return _exact_json({"items": [_job_body(job, whole=False) for job in found]})

    @router.get("/jobs/{job_id}", response_model=models.JobDetail, tags=["jobs"], responses=JOBS)
    async def get_job(job_id: JobId) -> Response:
        """One job whole: payload, progress, result, error and stack."""
        return _exact_json(_job_body(await jobs.job(job_id), whole=True))

    @router.post(
        "/jobs",
        response_model=models.Enqueued,
        tags=["jobs"],
        responses={**JOBS, 422: {"model": models.ErrorBody, "description": "refused"}},
    )
    async def enqueue(request: Request, body: models.EnqueueRequest) -> dict[str, Any]:
        """Enqueue one job of a task; 422 for an unknown task or a payload its model
        refuses."""
        # The payload as sent, numbers exact (FastAPI's parse turns 1.50 into 1.5).
        try:
            payload = jsonvalue.loads(await request.body(), writable=True).get("payload", {})
        except ValueError as exc:  # NaN, Infinity, nested too deep: Python's json took them
            raise ApiError(422, f"payload cannot be stored as exact JSON: {exc}") from None
        return {"id": await jobs.enqueue(body, payload)}

    @router.post(
        "/jobs/requeue",
        response_model=models.QueueRequeued,
        tags=["jobs"],
        responses=JOBS,
    )
    async def requeue_queue(
        queue: Annotated[str, Query(min_length=1, max_length=300)],
    ) -> dict[str, Any]:
        """Every dead job of ``queue`` back to the queue, attempts reset (errors kept)."""
        return {"queue": queue, "requeued": await jobs.requeue_queue(queue)}

    @router.post(
        "/jobs/{job_id}/requeue",
        response_model=models.JobRequeued,
        tags=["jobs"],
        responses={**JOBS, **CONFLICT},
    )
    async def requeue_job(job_id: JobId) -> dict[str, Any]:
        """A dead job back to its queue, attempts reset (its last error kept); 409 when the
        job is not dead."""
        job = await jobs.job(job_id)
        if job.state is not JobState.DEAD:
            raise ApiError(409, f"job {job_id!r} is {job.state.value}: only dead jobs requeue")
        if not await jobs.call(jobs.service().backend.requeue([job_id])):
            # Requeued or pruned meanwhile, or its unique key is held by another job.
            now = await jobs.job(job_id)
            raise ApiError(409, f"job {job_id!r} was not requeued (it is {now.state.value})")
        return {"id": job_id, "state": "queued"}


def _legacy_routes(router: APIRouter, c: Controller) -> None:
    """Seed 002's paths, so its curl commands work unchanged. They act on every pipeline that
    can do what is asked (full, force, discrepancy check: the grouped ones), 501 when none
    can, and answer 409 with the running sync's id while one of them syncs."""
    prefix = "/api/sync-worker"

    @router.get(f"{prefix}/status", response_model=models.LegacyStatus, tags=["seed 002"])
    async def legacy_status() -> dict[str, Any]:
        status = await c.engine_status()
        return redact_value(_legacy_status(c, status))  # type: ignore[no-any-return]

    @router.post(
        f"{prefix}/start",
        response_model=models.LegacyControl,
        tags=["seed 002"],
        responses=STOPPING,
    )
    async def legacy_start() -> dict[str, Any]:
        for name in c.engine.pipelines:
            await c.start(name)
        return {"success": True, "pipelines": _states(c)}

    @router.post(f"{prefix}/stop", response_model=models.LegacyControl, tags=["seed 002"])
    async def legacy_stop() -> dict[str, Any]:
        for name in c.engine.pipelines:
            await c.engine.stop_pipeline(name)
        return {"success": True, "pipelines": _states(c)}

    @router.post(
        f"{prefix}/full-sync",
        response_model=models.LegacySyncResult,
        tags=["seed 002"],
        responses={**BUSY, **NOT_IMPLEMENTED, **STOPPING},
    )
    async def legacy_full() -> dict[str, Any]:
        return await _sync_all(c, models.SyncRequest(mode="full"))

    @router.post(
        f"{prefix}/incremental-sync",
        response_model=models.LegacySyncResult,
        tags=["seed 002"],
        responses={**BUSY, **STOPPING},
    )
    async def legacy_incremental() -> dict[str, Any]:
        return await _sync_all(c, models.SyncRequest(mode="incremental"))

    @router.post(
        f"{prefix}/force-sync/{{key}}",
        response_model=models.LegacySyncResult,
        tags=["seed 002"],
        responses={**BUSY, **NOT_IMPLEMENTED, **STOPPING},
    )
    async def legacy_force(key: str) -> dict[str, Any]:
        return await _sync_all(c, models.SyncRequest(mode="force", key=key))

    @router.get(
        f"{prefix}/discrepancy-check",
        response_model=models.LegacyDiscrepancies,
        tags=["seed 002"],
        responses={**NOT_IMPLEMENTED, **STOPPING},
    )
    async def legacy_discrepancies(
        repair: bool = False,
        ignore_recent: Annotated[float | None, Query(ge=0, le=86_400)] = None,
    ) -> dict[str, Any]:
        names = c.grouped_pipelines()
        if not names:
            raise ApiError(501, "no pipeline here supports reconciliation")
        results = {
            name: await c.discrepancies(name, repair=repair, ignore_recent_s=ignore_recent)
            for name in names
        }
        totals = [r["totals"] for r in results.values()]
        kinds = {k: sum(t[k] for t in totals) for k in ("missing", "extra", "different")}
        total = sum(kinds.values())
        return {
            "success": all((r["repair"] or {}).get("error") is None for r in results.values()),
            "has_discrepancies": total > 0,
            "total_discrepancies": total,
            **kinds,
            "results": results,
        }


def _legacy_status(c: Controller, status: dict[str, Any]) -> dict[str, Any]:
    """Seed 002's status: ``is_running``, ``config``, ``stats`` (its seven counters, summed
    over the pipelines since the engine started) and ``last_sync_time``."""
    pipelines = status["pipelines"]
    values = list(pipelines.values())
    stats = {
        **seed_stats(values),
        "records_processed": sum(p["totals"]["processed"] for p in values),
        "failed_batches": sum(p["totals"]["failed_batches"] for p in values),
    }
    config = {}
    for name, pipeline_status in pipelines.items():
        config[name] = seed_config(c.engine.pipeline(name))
        config[name]["schedule"] = pipeline_status["schedule"]
    return {
        "is_running": any(p["running"] for p in values),
        "config": config,
        "stats": stats,
        "last_sync_time": last_sync_time(values),
        "current_syncs": {n: p["current_sync"] for n, p in pipelines.items() if p["current_sync"]},
        "pipelines": pipelines,
    }


async def _sync_all(c: Controller, request: models.SyncRequest) -> dict[str, Any]:
    """``request`` on every pipeline that can run it (every one for incremental), one after
    the other; 501 when none can, 409 when one of them is syncing (checked before any)."""
    names = []
    for name, pipeline in c.engine.pipelines.items():
        try:
            pipeline.check_mode(request.mode, request.key)
        except UnsupportedOperation:
            if request.mode == "incremental" or c.engine.stopping:
                names.append(name)  # c.sync says why (503 when stopping)
            continue
        names.append(name)
    if not names:
        what = "a full sync" if request.mode == "full" else "a force sync of one key"
        raise ApiError(501, f"no pipeline here can do {what}", {"record_key": request.key})
    for name in names:
        c.refuse_if_busy(c.engine.pipeline(name))
    results = {}
    for name in names:
        summary = await c.sync(name, request)
        assert summary is not None
        results[name] = summary
    return {"success": all(r["status"] == "success" for r in results.values()), "results": results}


def _without_id(running: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in running.items() if k != "id"}


def _states(c: Controller) -> dict[str, str]:
    return {name: p.status()["state"] for name, p in c.engine.pipelines.items()}
