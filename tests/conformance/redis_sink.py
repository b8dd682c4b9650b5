"""The harness of the ``redis`` sink: records as JSON strings under this test's key prefix,
read back from Redis itself (numbers exact)."""

from __future__ import annotations

from typing import Any, ClassVar

import redis.asyncio as aredis

from tests.conformance.exact import parse_exact
from tests.conformance.harness import Service, SinkHarness
from tests.conformance.sources import RedisService


class RedisSinkHarness(SinkHarness):
    type_name = "redis"
    services = frozenset({"redis"})
    restart = "a private redis-server with AOF (SHUTDOWN, then started again)"
    credentials = True
    restart_settings: ClassVar[dict[str, Any]] = {"socket_timeout": "2s"}

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._private: list[Service] = []

    @property
    def records_prefix(self) -> str:
        return f"{self.ctx.redis_prefix}rec:in:"

    async def prepare(self, target: str | None = None) -> None:
        self.target = target or self.ctx.redis_url

    def config(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "redis",
            "url": self.target,
            "key": self.ctx.redis_prefix + "rec:{stream}:{id}",
            # Ungrouped records: one index set per stream.
            "index": self.ctx.redis_prefix + "ids:{stream}",
            **overrides,
        }

    async def state(self) -> dict[str, Any]:
        client = aredis.Redis.from_url(self.target)
        try:
            keys = [
                key async for key in client.scan_iter(match=f"{self.records_prefix}*", count=10_000)
            ]
            values = await client.mget(keys) if keys else []
        finally:
            await client.aclose()
        start = len(self.records_prefix.encode())
        return {
            key[start:].decode(): parse_exact(value)
            for key, value in zip(keys, values, strict=True)
            if value is not None
        }

    def private_service(self, password: str | None = None) -> Service:
        service = RedisService(self, password)  # type: ignore[arg-type]
        self._private.append(service)
        return service

    async def secret_setup(self, secret: str) -> dict[str, Any]:
        service = self.private_service(password=secret)  # requirepass: the secret counts
        await service.start()
        await self.prepare(service.url)
        return self.config()

    async def secret_failures(self, secret: str) -> list[BaseException]:
        wrong = self.target.replace(f":{secret}@", f":{secret}-wrong@", 1)
        sink = self.build(url=wrong)
        try:
            await sink.open()
        except Exception as exc:
            return [exc]
        finally:
            await sink.close()
        raise AssertionError("a wrong login was accepted")

    async def stop(self) -> None:
        for service in self._private:
            await service.destroy()
        self._private.clear()
