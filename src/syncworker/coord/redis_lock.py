"""A Redis lock: SET NX PX with a random holder id, renewed by compare-and-expire, released
by compare-and-delete (Lua, so no other client's lock is ever touched), with a fencing
token from INCR handed out in the same script as the SET."""

from __future__ import annotations

from importlib import resources
from typing import Any

import redis.asyncio as aredis
from redis.exceptions import RedisError

from syncworker.connectors.redis.client import is_refusal
from syncworker.coord.base import holder_id
from syncworker.errors import ConfigRefused, ConnectionFailed
from syncworker.observe.logging import Identifiers, redact_url


def _script(name: str) -> str:
    return resources.files("syncworker.coord").joinpath(f"lua/{name}.lua").read_text()


class RedisLock:
    def __init__(self, url: str, key: str, ttl_s: float) -> None:
        self.key = key
        self.ttl_s = ttl_s
        self.fencing_key = f"{key}:fencing"
        self.holder_id = holder_id()
        self.token: int | None = None
        self._url = url
        self._client = aredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
        self._acquire = self._client.register_script(_script("acquire"))
        self._renew = self._client.register_script(_script("renew"))
        self._release = self._client.register_script(_script("release"))

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    async def acquire(self) -> int | None:
        token = await self._call(
            self._acquire, [self.key, self.fencing_key], [self.holder_id, self._ttl_ms]
        )
        self.token = int(token) if token else None
        return self.token

    async def renew(self) -> bool:
        renewed = await self._call(self._renew, [self.key], [self.holder_id, self._ttl_ms])
        if not renewed:
            self.token = None
        return bool(renewed)

    async def release(self) -> None:
        if self.token is None:
            return
        self.token = None
        await self._call(self._release, [self.key], [self.holder_id])

    async def holder(self) -> str | None:
        try:
            value = await self._client.get(self.key)
        except RedisError as exc:
            raise self._failed(exc) from exc
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def close(self) -> None:
        await self._client.aclose()

    def describe(self) -> dict[str, Any]:
        # Identifiers: the key names the lock and the token is a fencing counter, so status
        # shows them instead of masking them as secrets.
        return Identifiers(
            {
                "backend": "redis",
                "key": self.key,
                "held": self.token is not None,
                "token": self.token,
                "holder": self.holder_id if self.token else None,
            }
        )

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except RedisError as exc:
            raise self._failed(exc) from exc

    def _failed(self, exc: Exception) -> ConnectionFailed | ConfigRefused:
        # A wrong password or a missing ACL right will not pass by retrying: stop the pipeline.
        error_class = ConfigRefused if is_refusal(exc) else ConnectionFailed
        return error_class(
            f"lock {self.key!r} on {redact_url(self._url)}: "
            f"{type(exc).__name__}: {redact_url(str(exc))}"
        )
