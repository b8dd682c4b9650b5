"""What the CLI's status, sync, start, stop and dlq commands act on: a running engine's API
(``--api URL``) or, when no engine runs, the state store and config directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

from syncworker.config import load_config, load_outline
from syncworker.core import jsonvalue
from syncworker.errors import ConfigError, SyncWorkerError
from syncworker.observe.logging import redact_url
from syncworker.state import StateStore, sqlite_path, state_store_from_url

Needs = Literal["state", "config", "engine"]


class Control(Protocol):
    async def __aenter__(self) -> Control: ...
    async def __aexit__(self, *_: object) -> None: ...
    async def status(self) -> dict[str, Any]: ...
    async def dead_letters(
        self, pipeline: str | None, status: str | None, limit: int
    ) -> list[dict[str, Any]]: ...
    async def dead_letter(self, letter_id: int) -> dict[str, Any] | None: ...
    async def requeue(self, ids: list[int] | None, pipeline: str | None) -> int: ...
    async def purge(self, ids: list[int] | None, pipeline: str | None) -> int: ...
    async def sync(
        self, name: str, mode: str, wait: bool, key: str | None = None
    ) -> dict[str, Any]: ...
    async def start(self, name: str) -> dict[str, Any]: ...
    async def stop(self, name: str) -> dict[str, Any]: ...


class LocalControl:
    """The state store (and for ``sync``, the config's pipeline run once, here).

    Reading commands never create a state store: one that does not exist yet is an error, so
    a mistyped path is not answered as if it were an empty store."""

    def __init__(
        self, config_file: Path | None, state_url: str | None, *, creates: bool = False
    ) -> None:
        self.config_file = config_file
        # The config's pipelines are listed by status even before their first run.
        self.pipelines: list[str] = []
        if config_file is not None:
            outline = load_outline(config_file)
            self.pipelines = outline.pipelines
            state_url = state_url or outline.state
        if state_url is None:
            raise ConfigError(
                "no state store given: use --config FILE (its state store), --state URL, "
                "or --api URL (a running engine)"
            )
        if not creates:
            _require_existing(state_url, config_file)
        self.store: StateStore = state_store_from_url(state_url)

    async def __aenter__(self) -> LocalControl:
        await self.store.open()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.store.close()

    async def status(self) -> dict[str, Any]:
        runs = await self.store.runs(limit=1000)
        letters = await self.store.dead_letters(limit=10_000)
        names = sorted(
            set(self.pipelines) | {r.pipeline for r in runs} | {d.pipeline for d in letters}
        )
        pipelines: dict[str, Any] = {}
        for name in names:
            last = next((r for r in runs if r.pipeline == name), None)
            errors = await self.store.errors(name, limit=1)
            pipelines[name] = {
                "last_run": last.to_dict() if last else None,
                "dead_letters": await self.store.count_dead_letters(name),
                "last_error": None
                if not errors
                else {
                    "type": errors[0].type,
                    "message": errors[0].message,
                    "at": errors[0].created_at,
                },
            }
        return {"source": "state store", "pipelines": pipelines}

    async def dead_letters(
        self, pipeline: str | None, status: str | None, limit: int
    ) -> list[dict[str, Any]]:
        rows = await self.store.dead_letters(pipeline, status, limit)  # type: ignore[arg-type]
        return [d.to_dict() for d in rows]

    async def dead_letter(self, letter_id: int) -> dict[str, Any] | None:
        letter = await self.store.dead_letter(letter_id)
        return letter.to_dict(full=True) if letter else None

    async def requeue(self, ids: list[int] | None, pipeline: str | None) -> int:
        if ids is not None:
            _check_letters({i: await self.dead_letter(i) for i in ids}, requeue=True)
        return await self.store.requeue_dead_letters(ids, pipeline)

    async def purge(self, ids: list[int] | None, pipeline: str | None) -> int:
        if ids is not None:
            _check_letters({i: await self.dead_letter(i) for i in ids}, requeue=False)
        return await self.store.purge_dead_letters(ids, pipeline)

    async def sync(
        self, name: str, mode: str, wait: bool, key: str | None = None
    ) -> dict[str, Any]:
        if self.config_file is None:
            raise ConfigError("sync without --api needs --config FILE to build the pipeline")
        config = load_config(self.config_file)
        [pipeline] = config.build(self.store, [name])
        try:
            try:
                pipeline.check_mode(mode, key)  # type: ignore[arg-type]
            except ValueError as exc:  # a force without a key, a key for another mode
                raise SyncWorkerError(str(exc)) from None
            return (await pipeline.run_once(mode, key)).to_dict()  # type: ignore[arg-type]
        finally:
            await pipeline.close()

    async def start(self, name: str) -> dict[str, Any]:
        raise SyncWorkerError(
            "start needs --api URL: pipelines run inside an engine "
            "(syncworker run FILE --api HOST:PORT)"
        )

    async def stop(self, name: str) -> dict[str, Any]:
        raise SyncWorkerError(
            "stop needs --api URL: pipelines run inside an engine "
            "(syncworker run FILE --api HOST:PORT)"
        )


class RemoteControl:
    """A running engine's control API, over HTTP."""

    def __init__(self, url: str, token: str | None) -> None:
        import httpx  # the api extra; only needed with --api

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=300)

    async def __aenter__(self) -> RemoteControl:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._client.aclose()

    async def _call(
        self, method: str, path: str, *, ok_missing: bool = False, **kwargs: Any
    ) -> dict[str, Any]:
        """The JSON answer; ``{}`` for a 404 when ``ok_missing``."""
        import httpx

        try:
            answer = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise SyncWorkerError(
                f"api {redact_url(self.url)}: {type(exc).__name__}: {exc}"
            ) from exc
        if ok_missing and answer.status_code == 404:
            return {}
        if answer.status_code >= 400:
            try:
                error = answer.json().get("error", answer.text)
            except ValueError:
                error = answer.text[:200]
            raise SyncWorkerError(f"api {method} {path}: {answer.status_code}: {error}")
        # Not answer.json(): Python's parser rounds a long decimal to a float.
        body: dict[str, Any] = jsonvalue.loads(answer.content)
        return body

    async def status(self) -> dict[str, Any]:
        """The engine's status, each pipeline with the fields the state store gives too
        (``last_run``, ``dead_letters`` by status, ``last_error``), read from the same
        store through the API, so both answers agree on the same pipeline."""
        body = await self._call("GET", "/status")
        for name, pipeline in body["pipelines"].items():
            detail = await self._call("GET", f"/pipelines/{name}")
            runs = detail.get("recent_runs") or []
            pipeline["last_run"] = runs[0] if runs else None
            counts = {}
            for state in ("dead", "requeued", "replaying"):
                page = await self._call(
                    "GET", "/dead-letters", params={"pipeline": name, "status": state, "limit": 1}
                )
                if page["total"]:
                    counts[state] = page["total"]
            pipeline["dead_letters"] = counts
            errors = await self._call("GET", "/errors", params={"pipeline": name, "limit": 1})
            latest = errors["items"][0] if errors["items"] else None
            pipeline["last_error"] = (
                None
                if latest is None
                else {
                    "type": latest["type"],
                    "message": latest["message"],
                    "at": latest["created_at"],
                }
            )
        return {"source": "engine", **body}

    async def dead_letters(
        self, pipeline: str | None, status: str | None, limit: int
    ) -> list[dict[str, Any]]:
        params = {
            k: v
            for k, v in (("pipeline", pipeline), ("status", status), ("limit", limit))
            if v is not None
        }
        return list((await self._call("GET", "/dead-letters", params=params))["items"])

    async def dead_letter(self, letter_id: int) -> dict[str, Any] | None:
        found = await self._call("GET", f"/dead-letters/{letter_id}", ok_missing=True)
        return found or None

    async def requeue(self, ids: list[int] | None, pipeline: str | None) -> int:
        if ids is not None:  # all or nothing, as with the state store
            _check_letters({i: await self.dead_letter(i) for i in ids}, requeue=True)
        targets = ids or [d["id"] for d in await self.dead_letters(pipeline, "dead", 1000)]
        for letter_id in targets:
            await self._call("POST", f"/dead-letters/{letter_id}/requeue")
        return len(targets)

    async def purge(self, ids: list[int] | None, pipeline: str | None) -> int:
        if ids is not None:
            _check_letters({i: await self.dead_letter(i) for i in ids}, requeue=False)
        targets = ids or [d["id"] for d in await self.dead_letters(pipeline, None, 1000)]
        for letter_id in targets:
            await self._call("DELETE", f"/dead-letters/{letter_id}")
        return len(targets)

    async def sync(
        self, name: str, mode: str, wait: bool, key: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"mode": mode, "wait": wait}
        if key is not None:
            body["key"] = key
        return await self._call("POST", f"/pipelines/{name}/sync", json=body)

    async def start(self, name: str) -> dict[str, Any]:
        return await self._call("POST", f"/pipelines/{name}/start")

    async def stop(self, name: str) -> dict[str, Any]:
        return await self._call("POST", f"/pipelines/{name}/stop")


def open_control(
    api_url: str | None,
    token: str | None,
    config_file: Path | None,
    state_url: str | None,
    needs: Needs = "state",
    command: str = "this command",
) -> Control:
    """What a command acts on. ``needs``: ``state`` (an existing state store, to read or
    change dead letters), ``config`` (a pipeline built from --config and run here) or
    ``engine`` (a running engine, --api only)."""
    if api_url:
        return RemoteControl(api_url, token)
    if needs == "engine":
        raise SyncWorkerError(
            f"{command} needs --api URL: pipelines run inside an engine "
            "(syncworker run FILE --api HOST:PORT)"
        )
    if needs == "config" and config_file is None:
        raise ConfigError("without --api, give --config FILE to build the pipeline")
    return LocalControl(config_file, state_url, creates=needs == "config")


def _require_existing(state_url: str, config_file: Path | None) -> None:
    path = sqlite_path(state_url)
    if not path.is_file():
        of = f" (the state store of {config_file})" if config_file else ""
        raise SyncWorkerError(f"no state store at {path}{of}: nothing has run with it yet")


def _check_letters(letters: dict[int, dict[str, Any] | None], *, requeue: bool) -> None:
    """The API's answers for ids it cannot act on, all at once: a missing id (404), and for
    a requeue a letter that is not dead any more (409)."""
    problems = [
        f"no dead letter with id {i}"
        if letter is None
        else f"dead letter {i} is already {letter['status']}"
        for i, letter in letters.items()
        if letter is None or (requeue and letter["status"] != "dead")
    ]
    if problems:
        raise SyncWorkerError("; ".join(problems))
