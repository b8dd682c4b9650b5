"""The Redis job-queue backend: every state change is one Lua script over one queue's keys.

Keys (all keys of one queue share the hash tag ``{<queue>}``, so one queue lives in one
Redis Cluster slot and each script touches one slot)::

    <prefix>:{<queue>}:ready      zset  queued jobs, score = priority, run_at (see _score)
    <prefix>:{<queue>}:delayed    zset  delayed jobs by run_at
    <prefix>:{<queue>}:active     zset  claimed jobs by lease_until
    <prefix>:{<queue>}:completed  zset  completed jobs by finished time (until pruned)
    <prefix>:{<queue>}:dead       zset  dead jobs by finished time (until requeued or pruned)
    <prefix>:{<queue>}:unique     hash  unique key -> member of the job holding it
    <prefix>:{<queue>}:wake       list  wake tokens (BLPOP), at most WAKE_CAP long
    <prefix>:{<queue>}:seq        int   the last job number
    <prefix>:{<queue>}:cron       hash  cron entry name -> last slot enqueued
    <prefix>:{<queue>}:j:<member> hash  one job (fields below)
    <prefix>:queues               set   every queue name used (for counts, cron_state)

A job's member is its number zero-padded to 16 digits (so equal ready scores order by
enqueue order, zsets ordering equal scores by member); its id is ``<queue>:<number>``, so
``get`` finds the queue's slot from the id alone. Job hash fields: t task, d payload bytes,
p priority, x max_attempts, r run_at, e enqueued_at, a attempts, s state, u unique key,
o timeout_s, w worker, l lease_until, g progress, res result, err error, stk stack,
f finished_at. Short names keep the per-job script work and memory small.

Ready order is one exact score: ``(1000 - priority) * 2**42 + run_at_ms``. priority spans
2001 values (11 bits) and run_at in milliseconds since 1970 fits 42 bits until 2109, so the
score stays below 2**53 and a double holds it exactly; equal scores (same priority, same
millisecond) fall back to the member, i.e. enqueue order. A retry or a requeued job keeps
its own run_at, so it is ordered among its priority by when it fell due. run_at order is
exact to the millisecond only.

Time: the client's ``clock`` is passed into every script (never Redis TIME). All run_at
values come from clients anyway (NewJob.run_at, a retry's run_at), so comparing them with
the client clock is consistent; the scripts stay deterministic; and tests can drive time.
Hosts must keep their clocks in sync (NTP): a worker whose clock runs ahead reclaims leases
that much early, which is why leases are seconds, not milliseconds.

A delayed job due but not yet promoted (promotion happens at the next claim) still reads
as delayed in ``get`` and ``counts``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import cache
from importlib.resources import files
from typing import Any

import redis.asyncio as aredis
import structlog
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from syncworker.connectors.redis.client import (
    RedisConnectionConfig,
    create_client,
    preload_scripts,
    redis_errors,
)
from syncworker.connectors.redis.sink import CPackedConnection
from syncworker.core import jsonvalue
from syncworker.errors import ConnectorError
from syncworker.observe.logging import redact_url
from syncworker.queue.base import (
    Job,
    JobState,
    NewJob,
    Outcome,
    check_new_job,
    encode_payload,
)

log = structlog.get_logger(__name__)

ENQUEUE_CHUNK = 1000  # jobs per script call: bounds one script's run and its argument list
CLAIM_HOUSEKEEPING = 1000  # due delayed jobs promoted / expired leases handled per claim
PRUNE_CHUNK = 1000
WAKE_CAP = 32  # wake tokens kept per queue: wakes up to this many idle waiters at once
LIST_SORT_MAX = 20000  # list_jobs sorts a state's members when it has at most this many
_MEMBER_DIGITS = 16
_SCRIPTS = ("enqueue", "claim", "finish", "heartbeat", "release", "requeue", "prune", "progress")
_CLAIM_FIELDS = 13
_JOB_FIELDS = (
    b"t",
    b"d",
    b"p",
    b"x",
    b"r",
    b"e",
    b"a",
    b"s",
    b"u",
    b"o",
    b"w",
    b"l",
    b"g",
    b"res",
    b"err",
    b"stk",
    b"f",
)
_STATE_KEYS = {
    JobState.DELAYED: "delayed",
    JobState.QUEUED: "ready",
    JobState.ACTIVE: "active",
    JobState.COMPLETED: "completed",
    JobState.DEAD: "dead",
}


@cache
def _script_text(name: str) -> str:
    return (files(__package__) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def _member(number: int) -> str:
    return f"{number:0{_MEMBER_DIGITS}d}"


def _split_id(job_id: str) -> tuple[str, str] | None:
    """(queue, member) of an id, None when it is not one of ours."""
    queue, sep, number = job_id.rpartition(":")
    if not sep or not queue or not (number.isascii() and number.isdigit()):
        return None
    return queue, _member(int(number))


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


def _json(value: bytes | None) -> Any:
    return None if value is None else jsonvalue.loads(value)


def _float(value: bytes | None) -> float | None:
    return None if value is None else float(value)


def _arg(value: float | None) -> str:
    return "" if value is None else repr(float(value))


class _Keys:
    """The key names of one queue."""

    __slots__ = ("base", "job", "queue")

    def __init__(self, prefix: str, queue: str) -> None:
        self.queue = queue
        self.base = f"{prefix}:{{{queue}}}:"
        self.job = f"{self.base}j:"

    def __getattr__(self, name: str) -> str:
        return self.base + name


class RedisQueueBackend:
    """Jobs in Redis (redis.asyncio with hiredis); see the module docstring for the layout."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "syncworker:jobs",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._clock = clock
        self._label = f"redis queue {prefix!r} on {redact_url(url)}"
        config = RedisConnectionConfig(type="redis", url=url)
        self._client: aredis.Redis = create_client(config)
        # Blocking pops get their own pool with no read timeout: a BLPOP must neither hold
        # a connection the other calls need nor be cut off by the socket timeout.
        wait_config = config.model_copy(update={"socket_timeout": 3600.0})
        self._wait_client: aredis.Redis = create_client(wait_config)
        for client in (self._client, self._wait_client):
            # hiredis packs the commands (an enqueue chunk is ~7,000 arguments), as the sink does
            if client.connection_pool.connection_class is aredis.Connection:
                client.connection_pool.connection_class = CPackedConnection
        self._scripts: dict[str, AsyncScript] = {
            name: self._client.register_script(_script_text(name)) for name in _SCRIPTS
        }
        self._registry = f"{prefix}:queues"
        self._registered: set[str] = set()
        self._keys_cache: dict[str, _Keys] = {}

    def _keys(self, queue: str) -> _Keys:
        """The keys of ``queue``; ``ValueError`` for a name that would break its hash tag."""
        keys = self._keys_cache.get(queue)
        if keys is None:
            if queue.startswith("}"):
                # "{}..." is an empty hash tag: Redis would hash each whole key, scattering
                # the queue's keys over cluster slots (scripts then fail with CROSSSLOT).
                raise ValueError(f"queue {queue!r}: a Redis queue name cannot start with '}}'")
            keys = self._keys_cache[queue] = _Keys(self._prefix, queue)
        return keys

    def _job_id(self, queue: str, member: bytes | str) -> str:
        return f"{queue}:{int(member)}"

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and load the scripts (once per server; EVALSHA reloads after a flush)."""
        with redis_errors(self._label, "open", opening=True):
            await preload_scripts(self._client, self._scripts)
        log.info("queue_opened", backend="redis", prefix=self._prefix, url=redact_url(self._url))

    async def close(self) -> None:
        """Close both pools; held jobs keep their leases."""
        await self._wait_client.aclose()
        await self._client.aclose()

    async def _run(self, action: str, call: Awaitable[Any]) -> Any:
        with redis_errors(self._label, action):
            return await call

    async def _run_per_queue(
        self, action: str, calls: list[tuple[str, list[str], list[Any]]]
    ) -> list[Any]:
        """Run script calls ``(script, keys, args)``: alone when one, else one pipeline."""
        if len(calls) == 1:
            name, keys, args = calls[0]
            return [await self._run(action, self._scripts[name](keys=keys, args=args))]
        return await self._pipelined(action, calls, transaction=False)

    async def _pipelined(
        self, action: str, calls: list[tuple[str, list[str], list[Any]]], *, transaction: bool
    ) -> list[Any]:
        """Script calls in one round trip. EVALSHA straight into the pipeline (redis-py's
        script objects would add a SCRIPT EXISTS round trip per pipeline); a server that lost
        its scripts (restart, SCRIPT FLUSH) ran none of them, so they are loaded and sent
        again once."""
        for attempt in (1, 2):
            try:
                with redis_errors(self._label, action):
                    async with self._client.pipeline(transaction=transaction) as pipe:
                        for name, keys, args in calls:
                            pipe.evalsha(self._scripts[name].sha, len(keys), *keys, *args)
                        return list(await pipe.execute())
            except ConnectorError as exc:
                if attempt == 2 or not isinstance(exc.__cause__, NoScriptError):
                    raise
                await self.open()
        raise AssertionError("unreachable")

    # -- enqueue ----------------------------------------------------------------------------

    @staticmethod
    def _encode(job: NewJob) -> bytes:
        check_new_job(job)
        try:
            return encode_payload(job)
        except TypeError as exc:  # jsonvalue refuses a value with no exact JSON form
            raise ValueError(f"job payload of task {job.task!r} is not JSON: {exc}") from exc

    def _enqueue_args(
        self,
        keys: _Keys,
        now: float,
        jobs: Iterable[tuple[NewJob, bytes]],
        cron: tuple[str, float] | None,
    ) -> tuple[list[str], list[Any]]:
        now_arg = repr(now)
        args: list[Any] = [keys.job, now_arg, "", "", WAKE_CAP]
        if cron is not None:
            args[2], args[3] = cron[0], repr(float(cron[1]))
        for job, data in jobs:
            args += (
                job.task,
                data,
                job.priority,
                job.max_attempts,
                now_arg if job.run_at is None else repr(float(job.run_at)),
                job.unique_key or "",
                _arg(job.timeout_s),
            )
        key_list = [keys.ready, keys.delayed, keys.unique, keys.wake, keys.seq, keys.cron]
        return key_list, args

    async def _register(self, queues: Iterable[str]) -> None:
        new = [queue for queue in queues if queue not in self._registered]
        if new:
            await self._run("register queues", self._client.sadd(self._registry, *new))
            self._registered.update(new)

    async def enqueue_many(self, jobs: Sequence[NewJob]) -> list[str]:
        """See ``QueueBackend.enqueue_many``: one script per queue and chunk of
        ``ENQUEUE_CHUNK`` jobs; several chunks run in one MULTI/EXEC (atomic on one server)."""
        if not jobs:
            return []
        encoded = [(job, self._encode(job)) for job in jobs]  # refuse before storing any
        by_queue: dict[str, list[int]] = defaultdict(list)
        for index, job in enumerate(jobs):
            by_queue[job.queue].append(index)
        now = self._clock()
        calls: list[tuple[str, list[int], list[str], list[Any]]] = []
        for queue, indexes in by_queue.items():
            keys = self._keys(queue)
            for start in range(0, len(indexes), ENQUEUE_CHUNK):
                chunk = indexes[start : start + ENQUEUE_CHUNK]
                key_list, args = self._enqueue_args(keys, now, (encoded[i] for i in chunk), None)
                calls.append((queue, chunk, key_list, args))
        await self._register(by_queue)
        script_calls = [("enqueue", key_list, args) for _, _, key_list, args in calls]
        if len(calls) == 1:
            replies = await self._run_per_queue("enqueue", script_calls)
        else:
            replies = await self._pipelined("enqueue", script_calls, transaction=True)
        ids: list[str] = [""] * len(jobs)
        for (queue, chunk, _, _), members in zip(calls, replies, strict=True):
            for index, member in zip(chunk, members, strict=True):
                ids[index] = self._job_id(queue, member)
        return ids

    async def enqueue_cron(self, name: str, slot: float, job: NewJob) -> str | None:
        """See ``QueueBackend.enqueue_cron``: the slot's compare-and-set and the enqueue are
        one script; the entry's last slot lives in the job queue's ``cron`` hash (one slot)."""
        data = self._encode(job)
        keys = self._keys(job.queue)
        key_list, args = self._enqueue_args(keys, self._clock(), [(job, data)], (name, slot))
        await self._register([job.queue])
        members = await self._run(
            "enqueue cron", self._scripts["enqueue"](keys=key_list, args=args)
        )
        if members is None:
            return None
        return self._job_id(job.queue, members[0])

    async def cron_state(self) -> dict[str, float]:
        """See ``QueueBackend.cron_state`` (an entry found in several queues: its latest slot)."""
        queues = await self._queues()
        with redis_errors(self._label, "cron state"):
            async with self._client.pipeline(transaction=False) as pipe:
                for queue in queues:
                    pipe.hgetall(self._keys(queue).cron)
                replies = await pipe.execute()
        state: dict[str, float] = {}
        for reply in replies:
            for name, slot in reply.items():
                key = name.decode()
                state[key] = max(float(slot), state.get(key, float("-inf")))
        return state

    # -- claim and finish -------------------------------------------------------------------

    async def claim(self, queue: str, limit: int, worker_id: str, lease_s: float) -> list[Job]:
        """See ``QueueBackend.claim``: promotion, lease expiry and the pop are one script."""
        keys = self._keys(queue)
        now = self._clock()
        lease_until = now + lease_s
        reply = await self._run(
            "claim",
            self._scripts["claim"](
                keys=[keys.ready, keys.delayed, keys.active, keys.dead, keys.unique, keys.wake],
                args=[
                    keys.job,
                    repr(now),
                    limit,
                    worker_id,
                    repr(lease_until),
                    CLAIM_HOUSEKEEPING,
                    WAKE_CAP,
                ],
            ),
        )
        jobs = []
        for start in range(0, len(reply), _CLAIM_FIELDS):
            m, t, d, p, r, e, a, x, u, o, g, err, stk = reply[start : start + _CLAIM_FIELDS]
            jobs.append(
                Job(
                    id=self._job_id(queue, m),
                    task=t.decode(),
                    queue=queue,
                    data=d,
                    state=JobState.ACTIVE,
                    priority=int(p),
                    run_at=float(r),
                    enqueued_at=float(e),
                    attempts=int(a),
                    max_attempts=int(x),
                    unique_key=_text(u),
                    timeout_s=_float(o),
                    worker=worker_id,
                    lease_until=lease_until,
                    progress=_json(g),
                    error=_text(err),
                    stack=_text(stk),
                )
            )
        return jobs

    def _by_queue(self, job_ids: Iterable[tuple[str, Any]]) -> dict[str, list[tuple[str, Any]]]:
        """``(member, extra)`` per queue for ``(id, extra)`` pairs; unknown ids are dropped."""
        grouped: dict[str, list[tuple[str, Any]]] = defaultdict(list)
        for job_id, extra in job_ids:
            split = _split_id(job_id)
            if split is not None:
                grouped[split[0]].append((split[1], extra))
        return grouped

    async def finish(self, outcomes: Sequence[Outcome], worker_id: str) -> list[str]:
        """See ``QueueBackend.finish``: one script per queue, all in one round trip."""
        if not outcomes:
            return []
        now = self._clock()
        calls = []
        grouped = self._by_queue((o.job_id, o) for o in outcomes)
        for queue, items in grouped.items():
            keys = self._keys(queue)
            args: list[Any] = [keys.job, repr(now), worker_id, WAKE_CAP]
            for member, outcome in items:
                args += (
                    member,
                    outcome.attempt,
                    outcome.kind[0],
                    self._result_arg(outcome),
                    repr(now if outcome.run_at is None else float(outcome.run_at)),
                    outcome.error or "",
                    outcome.stack or "",
                )
            key_list = [
                keys.active,
                keys.delayed,
                keys.completed,
                keys.dead,
                keys.unique,
                keys.wake,
            ]
            calls.append(("finish", key_list, args))
        known = {o.job_id for o in outcomes if _split_id(o.job_id) is not None}
        stale = [o.job_id for o in outcomes if o.job_id not in known]
        replies = await self._run_per_queue("finish", calls)
        for queue, reply in zip(grouped, replies, strict=True):
            stale += [self._job_id(queue, member) for member in reply]
        return stale

    @staticmethod
    def _result_arg(outcome: Outcome) -> bytes | str:
        if outcome.kind != "completed" or outcome.result is None:
            return ""
        try:
            return jsonvalue.dumps(outcome.result)
        except TypeError as exc:
            raise ValueError(f"job {outcome.job_id} result is not JSON: {exc}") from exc

    async def heartbeat(
        self, tokens: Sequence[tuple[str, int]], worker_id: str, lease_s: float
    ) -> list[str]:
        """See ``QueueBackend.heartbeat``: one script per queue, all in one round trip."""
        if not tokens:
            return []
        lease_until = repr(self._clock() + lease_s)
        grouped = self._by_queue(tokens)
        lost = [job_id for job_id, _ in tokens if _split_id(job_id) is None]
        calls = []
        for queue, items in grouped.items():
            keys = self._keys(queue)
            args: list[Any] = [keys.job, worker_id, lease_until]
            for member, attempt in items:
                args += (member, attempt)
            calls.append(("heartbeat", [keys.active], args))
        replies = await self._run_per_queue("heartbeat", calls)
        for queue, reply in zip(grouped, replies, strict=True):
            lost += [self._job_id(queue, member) for member in reply]
        return lost

    async def release(self, tokens: Sequence[tuple[str, int]], worker_id: str) -> int:
        """See ``QueueBackend.release``."""
        if not tokens:
            return 0
        calls = []
        for queue, items in self._by_queue(tokens).items():
            keys = self._keys(queue)
            args: list[Any] = [keys.job, worker_id, WAKE_CAP]
            for member, attempt in items:
                args += (member, attempt)
            calls.append(("release", [keys.ready, keys.active, keys.wake], args))
        return sum(int(n) for n in await self._run_per_queue("release", calls))

    async def set_progress(self, token: tuple[str, int], worker_id: str, progress: Any) -> bool:
        """See ``QueueBackend.set_progress``."""
        split = _split_id(token[0])
        if split is None:
            return False
        try:
            encoded = jsonvalue.dumps(progress)
        except TypeError as exc:
            raise ValueError(f"job {token[0]} progress is not JSON: {exc}") from exc
        key = self._keys(split[0]).job + split[1]
        done = await self._run(
            "set progress",
            self._scripts["progress"](keys=[key], args=[token[1], worker_id, encoded]),
        )
        return bool(done)

    async def requeue(self, job_ids: Sequence[str]) -> int:
        """See ``QueueBackend.requeue``; a job keeps its run_at, so it is ordered among its
        priority by when it first fell due."""
        calls = []
        for queue, items in self._by_queue((job_id, None) for job_id in job_ids).items():
            keys = self._keys(queue)
            args: list[Any] = [keys.job, WAKE_CAP, *(member for member, _ in items)]
            calls.append(("requeue", [keys.ready, keys.dead, keys.unique, keys.wake], args))
        if not calls:
            return 0
        return sum(int(n) for n in await self._run_per_queue("requeue", calls))

    async def prune(self, state: JobState, older_than_s: float) -> int:
        """See ``QueueBackend.prune``: ``PRUNE_CHUNK`` jobs per script call, queue by queue
        (so Redis is never blocked for long); ``ValueError`` for an unfinished state."""
        if state not in (JobState.COMPLETED, JobState.DEAD):
            raise ValueError(f"prune takes completed or dead, not {state.value}")
        cutoff = repr(self._clock() - older_than_s)
        pruned = 0
        for queue in await self._queues():
            keys = self._keys(queue)
            zset = getattr(keys, _STATE_KEYS[state])
            while True:
                call = self._scripts["prune"](keys=[zset], args=[keys.job, cutoff, PRUNE_CHUNK])
                deleted = int(await self._run("prune", call))
                pruned += deleted
                if deleted < PRUNE_CHUNK:
                    break
        return pruned

    # -- waiting ----------------------------------------------------------------------------

    async def wait(self, queue: str, timeout_s: float) -> None:
        """See ``QueueBackend.wait``: BLPOP on the queue's wake list (enqueue, release,
        retry, requeue and a claim leaving jobs behind push a token), bounded by the
        earliest delayed job's due time and the earliest lease's expiry."""
        keys = self._keys(queue)
        with redis_errors(self._label, "wait"):
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.zrange(keys.delayed, 0, 0, withscores=True)
                pipe.zrange(keys.active, 0, 0, withscores=True)
                pipe.exists(keys.ready)
                delayed, active, ready = await pipe.execute()
        if ready:
            return
        due_s = min([score for _, score in delayed + active], default=float("inf"))
        timeout_s = min(timeout_s, due_s - self._clock())
        if timeout_s < 0.001:  # BLPOP's 0 means "for ever"; this is due now
            return
        with redis_errors(self._label, "wait"):
            await self._wait_client.blpop([keys.wake], timeout=round(timeout_s, 3))

    # -- reading ----------------------------------------------------------------------------

    async def _queues(self) -> list[str]:
        members = await self._run("list queues", self._client.smembers(self._registry))
        return sorted(member.decode() for member in members)

    def _job(self, queue: str, member: bytes | str, fields: list[bytes | None]) -> Job | None:
        t, d, p, x, r, e, a, s, u, o, w, lease, g, res, err, stk, f = fields
        if t is None or s is None:
            return None
        return Job(
            id=self._job_id(queue, member),
            task=t.decode(),
            queue=queue,
            data=d or b"",
            state=JobState(s.decode()),
            priority=int(p or 0),
            run_at=float(r or 0),
            enqueued_at=float(e or 0),
            attempts=int(a or 0),
            max_attempts=int(x or 1),
            unique_key=_text(u),
            timeout_s=_float(o),
            worker=_text(w),
            lease_until=_float(lease),
            progress=_json(g),
            result=_json(res),
            error=_text(err),
            stack=_text(stk),
            finished_at=_float(f),
        )

    async def _load(self, queue: str, members: Sequence[bytes | str]) -> list[Job]:
        if not members:
            return []
        prefix = self._keys(queue).job
        with redis_errors(self._label, "read jobs"):
            async with self._client.pipeline(transaction=False) as pipe:
                for member in members:
                    m = member.decode() if isinstance(member, bytes) else member
                    pipe.hmget(prefix + m, _JOB_FIELDS)
                replies = await pipe.execute()
        jobs = [self._job(queue, m, fields) for m, fields in zip(members, replies, strict=True)]
        return [job for job in jobs if job is not None]

    async def get(self, job_id: str) -> Job | None:
        """See ``QueueBackend.get``."""
        split = _split_id(job_id)
        if split is None:
            return None
        found = await self._load(*split[:1], [split[1]])
        return found[0] if found else None

    async def list_jobs(
        self, *, queue: str | None = None, state: JobState | None = None, limit: int = 100
    ) -> list[Job]:
        """See ``QueueBackend.list_jobs``: newest = highest job number; across queues, by
        enqueue time. A state with more than ``LIST_SORT_MAX`` jobs is listed in its zset's
        order instead (most recently due, leased or finished first), not by number."""
        queues = [queue] if queue is not None else await self._queues()
        found: list[Job] = []
        for name in queues:
            found += await self._list_queue(name, state, limit)
        if queue is None:
            found.sort(
                key=lambda job: (job.enqueued_at, int(job.id.rpartition(":")[2])), reverse=True
            )
        return found[:limit]

    async def _list_queue(self, queue: str, state: JobState | None, limit: int) -> list[Job]:
        keys = self._keys(queue)
        states = [state] if state is not None else list(JobState)
        members: list[bytes] = []
        for one in states:
            zset = getattr(keys, _STATE_KEYS[one])
            size = int(await self._run("list jobs", self._client.zcard(zset)))
            if size <= LIST_SORT_MAX:
                members += await self._run("list jobs", self._client.zrange(zset, 0, -1))
            else:
                members += await self._run(
                    "list jobs", self._client.zrange(zset, 0, limit - 1, desc=True)
                )
        members.sort(reverse=True)  # zero-padded: byte order is number order
        return await self._load(queue, members[:limit])

    async def counts(self) -> dict[str, dict[JobState, int]]:
        """See ``QueueBackend.counts``: every registered queue holding any job."""
        queues = await self._queues()
        with redis_errors(self._label, "counts"):
            async with self._client.pipeline(transaction=False) as pipe:
                for queue in queues:
                    keys = self._keys(queue)
                    for state in JobState:
                        pipe.zcard(getattr(keys, _STATE_KEYS[state]))
                replies = await pipe.execute()
        result: dict[str, dict[JobState, int]] = {}
        width = len(JobState)
        for index, queue in enumerate(queues):
            sizes = replies[index * width : (index + 1) * width]
            if any(sizes):
                result[queue] = {state: int(n) for state, n in zip(JobState, sizes, strict=True)}
        return result


__all__ = ["RedisQueueBackend"]
