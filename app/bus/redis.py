"""The Redis bus: several replicas behind one load balancer share every run's events.

- Each run's events go to a Redis Stream, `<prefix>:run:<run_id>`, with the entry id
  `<seq>-0`. Streams are capped (XADD MAXLEN ~ REDIS_STREAM_MAXLEN) and expire
  RUN_LOG_TTL_SECONDS after their last event; then replay reads the store, as with the
  in-process bus. Each replica reads the streams its clients follow with one blocking
  XREAD over all of them (a per-replica "nudge" stream wakes it when a run is added),
  and shares what it reads among the followers of each run: one Redis connection for
  any number of followers.
- The live workflow view: events and announcements are also PUBLISHed on
  `<prefix>:watch:<conversation_id>`. Each replica holds one pattern subscription to
  them, made when the bus opens, and hands frames to its local watchers, so a watcher
  registered now sees every frame published from now on, whichever replica publishes.
- Stop and steer: `<prefix>:control` carries stop requests (the replica executing the run
  stops it) and workflow pause/resume (the replica running the workflow applies it).
- Who executes a run: `<prefix>:owner:<run_id>` names the replica, whose heartbeat key
  `<prefix>:replica:<id>` lives while it does; a restarting replica closes only the runs
  of dead replicas.
- One turn per conversation across replicas: `<prefix>:lock:<conversation_id>`, a lock
  with a random token and a TTL (REDIS_LOCK_TTL_SECONDS) renewed while the turn runs, so
  a crashed replica's lock frees itself.

A Redis that cannot be reached (refused, reset, timed out) surfaces as BusUnavailable from
every call a turn or a follow makes, so that callers answer 503 `bus_unavailable`.
"""

import asyncio
import functools
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError, RedisError, ResponseError

from app.bus.base import ReadPacer
from app.bus.memory import Watch
from app.errors import BusUnavailable
from app.events import Event, Notice, parse_event, parse_frame

log = logging.getLogger(__name__)

# A follower wakes this often when a run is quiet, to notice a run nobody executes.
FOLLOW_BLOCK_MS = 5_000
REPLICA_HEARTBEAT_SECONDS = 5.0
REPLICA_TTL_SECONDS = 15
OWNER_TTL_SECONDS = 24 * 3600
READ_BATCH = 500
POOL_SIZE = 50
POOL_WAIT_SECONDS = 10
SOCKET_TIMEOUT_SECONDS = 15
# A Redis host that does not answer at all fails a connection this soon, not after the
# system's TCP timeout (minutes).
CONNECT_TIMEOUT_SECONDS = 5

P = ParamSpec("P")
T = TypeVar("T")


def unavailable(exc: BaseException) -> BusUnavailable:
    return BusUnavailable(f"Redis cannot be reached ({type(exc).__name__}: {exc})")


def reaching_redis(call: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Raise BusUnavailable when Redis cannot be reached (OSError: a socket timing out)."""

    @functools.wraps(call)
    async def reaching(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await call(*args, **kwargs)
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from exc

    return reaching


class _Tail:
    """This replica's copy of a followed run's stream, shared by the run's followers."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.last_id = "0-0"
        self.finished = False  # the terminal event came, or the run can have no more
        self.followers = 0
        self.quiet_since = time.monotonic()
        self._woken = asyncio.Event()

    def add(self, event: Event) -> None:
        self.events.append(event)
        self.quiet_since = time.monotonic()
        if event.is_terminal:
            self.finished = True
        self._wake()

    def finish(self) -> None:
        self.finished = True
        self._wake()

    def _wake(self) -> None:
        woken, self._woken = self._woken, asyncio.Event()
        woken.set()

    async def wait(self) -> None:
        await self._woken.wait()


class RedisConversationLock:
    """redis-py's Lock (SET NX PX with a token; Lua to renew and release), renewed while held."""

    def __init__(self, client: aioredis.Redis, name: str, ttl_seconds: float) -> None:
        self._ttl = ttl_seconds
        self._lock = client.lock(name, timeout=ttl_seconds, sleep=0.1, thread_local=False)
        self._renewer: asyncio.Task[None] | None = None

    @reaching_redis
    async def acquire(self, wait: float) -> bool:
        if not await self._lock.acquire(blocking=True, blocking_timeout=wait):
            return False
        self._renewer = asyncio.create_task(self._renew())
        return True

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                await self._lock.reacquire()
            except LockError:
                log.error("lost the conversation lock %s (expired)", self._lock.name)
                return
            except RedisError as exc:
                log.warning("could not renew the conversation lock %s: %s", self._lock.name, exc)

    async def release(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            self._renewer = None
        try:
            await self._lock.release()
        except LockError:
            pass  # expired meanwhile: nothing left to release
        except RedisError as exc:
            log.warning("could not release %s (it expires by itself): %s", self._lock.name, exc)


class RedisBus:
    name = "redis"
    can_fail = True

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "parley",
        stream_maxlen: int = 20_000,
        ttl_seconds: float = 900.0,
        lock_ttl_seconds: float = 30.0,
        watcher_backlog: int = 10_000,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.replica_id = uuid.uuid4().hex
        self._maxlen = stream_maxlen
        self._ttl = max(int(ttl_seconds), 1)
        self._lock_ttl = lock_ttl_seconds
        self._backlog = watcher_backlog
        self._redis: aioredis.Redis | None = None
        self._watchers: dict[str, set[asyncio.Queue[Event | Notice | None]]] = {}
        # Events waiting for the next pipeline, and the task sending them.
        self._outbox: list[tuple[Event, asyncio.Future[None]]] = []
        self._sending: asyncio.Task[None] | None = None
        self._stop_handlers: list[Callable[[str, str], None]] = []
        self._steer_handlers: list[Callable[[str, str], None]] = []
        self._tails: dict[str, _Tail] = {}
        self._nudge_key = self._key("nudge", self.replica_id)
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("RedisBus used before open()")
        return self._redis

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def open(self) -> None:
        # Commands wait for a free connection rather than fail when many runs publish at
        # once; two connections stay taken (the subscription and the stream reader).
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=POOL_SIZE,
            timeout=POOL_WAIT_SECONDS,
            socket_timeout=SOCKET_TIMEOUT_SECONDS,  # above FOLLOW_BLOCK_MS
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            health_check_interval=30,
            # A pooled connection to a Redis that restarted fails once: retry on a new one.
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],
        )
        self._redis = aioredis.Redis.from_pool(pool)  # closes the pool with the client
        await self.redis.ping()
        await self._beat()
        self._tasks = [
            asyncio.create_task(self._listen(), name="redis-bus-listener"),
            asyncio.create_task(self._heartbeat(), name="redis-bus-heartbeat"),
            asyncio.create_task(self._read_tails(), name="redis-bus-reader"),
        ]
        await asyncio.wait_for(self._subscribed.wait(), timeout=10)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._sending is not None:
            await asyncio.wait({self._sending})  # what was published goes out first
        if self._redis is not None:
            try:
                await self.redis.delete(self._key("replica", self.replica_id), self._nudge_key)
            except RedisError:
                pass
            await self._redis.aclose()
            self._redis = None

    async def ping(self) -> None:
        await self.redis.ping()

    # Events

    async def publish(self, event: Event) -> None:
        """Queue the event for the next pipeline and wait until Redis has it. Events
        published while a pipeline is under way go together in the next one, in the
        order they came: one round trip for every event of every run ready meanwhile,
        instead of one per event (each round trip costs the event loop far more than
        the commands it carries)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outbox.append((event, done))
        if self._sending is None:
            self._sending = asyncio.create_task(self._send_outbox(), name="redis-publish")
        await done

    async def _send_outbox(self) -> None:
        try:
            while self._outbox:
                batch, self._outbox = self._outbox, []
                try:
                    errors = await self._send(batch)
                except (RedisError, OSError) as exc:
                    errors = [unavailable(exc)] * len(batch)
                except Exception as exc:  # every publisher hears of it, none waits forever
                    errors = [exc] * len(batch)
                for (_, done), error in zip(batch, errors, strict=True):
                    if done.done():
                        continue  # its publisher was cancelled; the event went all the same
                    if error is None:
                        done.set_result(None)
                    else:
                        done.set_exception(error)
        finally:
            self._sending = None

    async def _send(
        self, batch: list[tuple[Event, asyncio.Future[None]]]
    ) -> list[Exception | None]:
        """One pipeline: each event's XADD (its entry id is its seq) and PUBLISH, and one
        EXPIRE per run stream; what went wrong for each event, if anything."""
        pipe = self.redis.pipeline(transaction=False)
        streams: set[str] = set()
        for event, _ in batch:
            body = event.to_json()
            stream = self._key("run", event.run_id)
            streams.add(stream)
            pipe.xadd(
                stream, {"e": body}, id=f"{event.seq}-0", maxlen=self._maxlen, approximate=True
            )
            pipe.publish(self._key("watch", event.conversation_id), '{"event":' + body + "}")
        for stream in streams:
            pipe.expire(stream, self._ttl)
        replies = await pipe.execute(raise_on_error=False)
        errors: list[Exception | None] = []
        for (event, _), added in zip(batch, replies[0 : 2 * len(batch) : 2], strict=True):
            if not isinstance(added, ResponseError):
                errors.append(None)
            elif "equal or smaller" in str(added):
                # Published already (a run closed by two restarting replicas at once).
                log.info("event %s of run %s was already published", event.seq, event.run_id)
                errors.append(None)
            else:
                errors.append(unavailable(added))
        return errors

    async def follow(self, run_id: str, after_seq: int = 0) -> AsyncIterator[list[Event]]:
        tail = self._tails.get(run_id)
        if tail is None:
            tail = self._tails[run_id] = _Tail()
            await self._nudge()
        tail.followers += 1
        pacer = ReadPacer()
        try:
            index = 0
            while True:
                if index < len(tail.events):
                    batch = [e for e in tail.events[index:] if e.seq > after_seq]
                    index = len(tail.events)
                    if batch:
                        yield batch
                        if batch[-1].is_terminal:
                            return
                        await pacer.pace(batch)
                    continue
                if tail.finished:
                    return
                await tail.wait()
        finally:
            tail.followers -= 1
            if tail.followers == 0 and self._tails.get(run_id) is tail:
                del self._tails[run_id]

    @reaching_redis
    async def _nudge(self) -> None:
        """Wake the reader so that it reads a newly followed stream too."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(self._nudge_key, {"n": "1"}, maxlen=10, approximate=False)
        pipe.expire(self._nudge_key, REPLICA_TTL_SECONDS * 4)
        await pipe.execute()

    async def _read_tails(self) -> None:
        """The replica's one reader of every followed run's stream."""
        run_prefix = self._key("run", "")
        nudged = "0-0"
        while True:
            try:
                streams = {self._nudge_key: nudged}
                for run_id, tail in list(self._tails.items()):
                    if not tail.finished:
                        streams[run_prefix + run_id] = tail.last_id
                reply = await self.redis.xread(streams, count=READ_BATCH, block=FOLLOW_BLOCK_MS)
                for key, entries in reply or []:
                    name = key.decode()
                    if name == self._nudge_key:
                        nudged = entries[-1][0].decode()
                        continue
                    tail = self._tails.get(name[len(run_prefix) :])
                    if tail is None:
                        continue  # its last follower left meanwhile
                    for entry_id, fields in entries:
                        tail.last_id = entry_id.decode()
                        tail.add(parse_event(json.loads(fields[b"e"])))  # type: ignore[arg-type]
                await self._end_abandoned_tails()
            except asyncio.CancelledError:
                for tail in self._tails.values():
                    tail.finish()
                raise
            except Exception as exc:  # the reader must outlive a Redis restart
                log.warning("reading run streams failed (%s); retrying", exc)
                await asyncio.sleep(1.0)

    async def _end_abandoned_tails(self) -> None:
        """End the follow of a run that has been quiet for a while and that no live
        replica executes: its terminal event would have come, so nothing more will."""
        quiet_for = FOLLOW_BLOCK_MS / 1000
        for run_id, tail in list(self._tails.items()):
            if tail.finished or time.monotonic() - tail.quiet_since < quiet_for:
                continue
            tail.quiet_since = time.monotonic()
            if not await self.is_claimed(run_id):
                tail.finish()

    @reaching_redis
    async def events_so_far(self, run_id: str) -> list[Event]:
        entries = await self.redis.xrange(self._key("run", run_id))
        return [parse_event(json.loads(fields[b"e"])) for _, fields in entries]  # type: ignore[misc]

    @reaching_redis
    async def has_run(self, run_id: str) -> bool:
        return bool(await self.redis.exists(self._key("run", run_id)))

    @reaching_redis
    async def forget(self, run_id: str) -> None:
        await self.redis.delete(self._key("run", run_id))

    # The live view

    def watch(self, conversation_id: str) -> Watch:
        return Watch(self._watchers, conversation_id)

    @reaching_redis
    async def announce(self, notice: Notice) -> None:
        key = self._key("watch", notice.conversation_id)
        await self.redis.publish(key, json.dumps({"frame": notice.model_dump(mode="json")}))

    def _deliver(self, conversation_id: str, frame: Event | Notice) -> None:
        for queue in list(self._watchers.get(conversation_id, ())):
            if queue.qsize() >= self._backlog:
                self._watchers[conversation_id].discard(queue)  # too far behind: cut
                queue.put_nowait(None)
            else:
                queue.put_nowait(frame)

    async def _listen(self) -> None:
        """The replica's one subscription: watch frames of every conversation, and stops."""
        watch_prefix = self._key("watch", "")
        control = self._key("control")
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(watch_prefix + "*")
                await pubsub.subscribe(control)
                self._subscribed.set()
                while True:
                    # A short wait, not a blocking read: an idle subscription must not run
                    # into the socket timeout.
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    channel = message["channel"].decode()
                    data = json.loads(message["data"])
                    if channel == control:
                        self._on_control(data)
                    elif channel.startswith(watch_prefix):
                        conversation_id = channel[len(watch_prefix) :]
                        if conversation_id in self._watchers:
                            self._deliver(conversation_id, self._frame(data))
            except asyncio.CancelledError:
                await pubsub.aclose()
                raise
            except Exception as exc:  # the listener must outlive a Redis restart
                log.warning("Redis subscription lost (%s); reconnecting", exc)
                await pubsub.aclose()
                await asyncio.sleep(1.0)

    @staticmethod
    def _frame(data: dict[str, Any]) -> Event | Notice:
        if "event" in data:
            return parse_event(data["event"])  # type: ignore[return-value]
        return parse_frame(data["frame"])

    # Several replicas

    async def _beat(self) -> None:
        await self.redis.set(self._key("replica", self.replica_id), "1", ex=REPLICA_TTL_SECONDS)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(REPLICA_HEARTBEAT_SECONDS)
            try:
                await self._beat()
            except RedisError as exc:
                log.warning("Redis heartbeat failed: %s", exc)

    @reaching_redis
    async def claim(self, run_id: str) -> None:
        await self.redis.set(self._key("owner", run_id), self.replica_id, ex=OWNER_TTL_SECONDS)

    @reaching_redis
    async def release(self, run_id: str) -> None:
        await self.redis.delete(self._key("owner", run_id))

    @reaching_redis
    async def is_claimed(self, run_id: str) -> bool:
        owner = await self.redis.get(self._key("owner", run_id))
        if owner is None:
            return False
        return bool(await self.redis.exists(self._key("replica", owner.decode())))

    def conversation_lock(self, conversation_id: str) -> RedisConversationLock:
        return RedisConversationLock(self.redis, self._key("lock", conversation_id), self._lock_ttl)

    @reaching_redis
    async def request_stop(self, run_id: str, reason: str) -> bool:
        if not await self.is_claimed(run_id):
            return False
        message = json.dumps({"op": "stop", "run_id": run_id, "reason": reason})
        await self.redis.publish(self._key("control"), message)
        return True

    def on_stop_request(self, handler: Callable[[str, str], None]) -> None:
        self._stop_handlers.append(handler)

    @reaching_redis
    async def steer(self, conversation_id: str, action: str) -> None:
        message = {"op": "steer", "conversation_id": conversation_id, "action": action}
        await self.redis.publish(self._key("control"), json.dumps(message))

    def on_steer(self, handler: Callable[[str, str], None]) -> None:
        self._steer_handlers.append(handler)

    def _on_control(self, data: dict[str, Any]) -> None:
        if data.get("op") == "steer":
            for steer in self._steer_handlers:
                steer(str(data.get("conversation_id")), str(data.get("action")))
        elif data.get("op") == "stop":
            for handler in self._stop_handlers:
                try:
                    handler(data["run_id"], data.get("reason", "requested"))
                except Exception:
                    log.exception("stop handler failed for run %s", data.get("run_id"))
