"""The webhook dispatcher: fans finished runs out to webhooks and delivers in the background.

A finished run hands its events to `on_run_finished`, which only puts them on a bounded
queue (a full queue drops them with a warning), so a conversation never waits for a
webhook. A worker turns each event into one persisted `pending` delivery per subscribed
webhook; each delivery is then sent by its own task: a POST signed per Standard
Webhooks (see `signing`) with the webhook's secrets as they are at that attempt, with a
short timeout, retried with exponential backoff and jitter until it is answered with a
2xx or has used `WEBHOOK_MAX_ATTEMPTS` attempts (then `failed`). Every attempt is logged
in the store.
A target the checks of `targets` refuse fails at once, without connecting; the log says
"refused" or "connection failed", never why a connection to a port did not work.
Deliveries still pending at shutdown are resumed at the next start (at least once: a
receiver deduplicates on `webhook-id`, the payload's `id`).
"""

import asyncio
import json
import logging
import random
import time
import uuid

import httpx

from app.config import Settings
from app.events import RunFinished
from app.store import Store
from app.store.models import DeliveryStatus, Webhook, WebhookAttempt, WebhookDelivery
from app.webhooks.events import WebhookEvent, webhook_events
from app.webhooks.signing import delivery_headers
from app.webhooks.targets import HostUnresolved, TargetRefused, checked_client, url_problem

log = logging.getLogger(__name__)

MAX_CONCURRENT_SENDS = 16
MAX_BACKOFF_SECONDS = 3600.0
USER_AGENT = "Parley-Webhooks/1"


def backoff_seconds(attempt: int, base: float) -> float:
    """The wait after failed attempt number `attempt` (1, 2, ...): exponential, with half
    of it random so that retries of many deliveries spread out."""
    delay = min(MAX_BACKOFF_SECONDS, base * 2 ** (attempt - 1))
    return delay / 2 + random.uniform(0, delay / 2)


def encode(payload: dict) -> bytes:
    """The exact bytes sent and signed."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


class WebhookDispatcher:
    def __init__(
        self, settings: Settings, store: Store, http: httpx.AsyncClient | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        # `http`, the app's shared client, is not used for deliveries: their client
        # connects only to addresses it has checked (see `targets`).
        self.http = checked_client(settings.webhook_allow_private)
        self._queue: asyncio.Queue[WebhookEvent] = asyncio.Queue(settings.webhook_queue_size)
        self._worker: asyncio.Task[None] | None = None
        self._sending: dict[str, asyncio.Task[None]] = {}
        self._sends = asyncio.Semaphore(MAX_CONCURRENT_SENDS)

    # Lifecycle

    async def start(self) -> None:
        """Start the worker and resume the deliveries a previous process left pending."""
        self._worker = asyncio.create_task(self._work(), name="webhook-dispatcher")
        for delivery in await self.store.list_pending_webhook_deliveries():
            self._spawn(delivery.id)

    async def stop(self) -> None:
        """Persist the events still queued as pending deliveries, and stop sending; what
        is pending is resumed at the next start."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        while not self._queue.empty():
            event = self._queue.get_nowait()
            try:
                await self._persist(event)
            except Exception:
                log.exception("could not save webhook event %s", event.id)
        tasks = list(self._sending.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.http.aclose()

    # Feeding

    def on_run_finished(self, run: RunFinished) -> None:
        """The RunManager listener: queue the run's webhook events; never blocks."""
        for event in webhook_events(run.events):
            self.enqueue(event)

    def enqueue(self, event: WebhookEvent) -> bool:
        """Queue an event for delivery; False (and a warning) when the queue is full."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            log.warning(
                "webhook queue full (%d): dropped %s of run %s",
                self._queue.maxsize,
                event.type,
                event.run_id,
            )
            return False
        return True

    async def replay(self, delivery_id: str) -> WebhookDelivery | None:
        """Send a delivery's payload again as a new delivery (`replay_of` names the
        original) with attempts of its own; None if there is no such delivery."""
        original = await self.store.get_webhook_delivery(delivery_id)
        if original is None:
            return None
        now = time.time()
        delivery = WebhookDelivery(
            id=uuid.uuid4().hex,
            webhook_id=original.webhook_id,
            event_type=original.event_type,
            payload=original.payload,
            conversation_id=original.conversation_id,
            replay_of=original.id,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        await self.store.add_webhook_delivery(delivery)
        self._spawn(delivery.id)
        return delivery

    # Work

    async def _work(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                for delivery in await self._persist(event):
                    self._spawn(delivery.id)
            except Exception:
                log.exception("could not fan out webhook event %s (%s)", event.id, event.type)

    async def _persist(self, event: WebhookEvent) -> list[WebhookDelivery]:
        """One pending delivery per active webhook that wants the event."""
        if event.once_key is not None and not await self.store.claim_webhook_event(event.once_key):
            return []
        webhooks = [
            w for w in await self.store.list_webhooks() if w.active and event.type in w.events
        ]
        now = time.time()
        deliveries = []
        for webhook in webhooks:
            delivery = WebhookDelivery(
                id=uuid.uuid4().hex,
                webhook_id=webhook.id,
                event_type=event.type,
                payload=event.payload(),
                conversation_id=event.conversation_id or None,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
            try:
                await self.store.add_webhook_delivery(delivery)
            except Exception:  # the webhook or the conversation was deleted meanwhile
                log.warning("webhook delivery of %s to %s not recorded", event.id, webhook.id)
                continue
            deliveries.append(delivery)
        return deliveries

    def _spawn(self, delivery_id: str) -> None:
        if delivery_id in self._sending:
            return
        task = asyncio.create_task(self._deliver(delivery_id), name=f"webhook-{delivery_id}")
        self._sending[delivery_id] = task
        task.add_done_callback(lambda _: self._sending.pop(delivery_id, None))

    async def _deliver(self, delivery_id: str) -> None:
        """Attempt the delivery until it is delivered, failed, or gone."""
        try:
            while True:
                delivery = await self.store.get_webhook_delivery(delivery_id)
                if delivery is None or delivery.status != "pending":
                    return
                wait = delivery.next_attempt_at - time.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue  # it may have been deleted meanwhile
                webhook = await self.store.get_webhook(delivery.webhook_id)
                if webhook is None:
                    return
                number = delivery.attempts + 1
                async with self._sends:
                    attempt, final = await self._post(webhook, delivery, number)
                status: DeliveryStatus = "pending"
                next_at = time.time()
                if attempt.status_code is not None and 200 <= attempt.status_code < 300:
                    status = "delivered"
                elif final or number >= self.settings.webhook_max_attempts:
                    status = "failed"
                    log.warning(
                        "webhook delivery %s to webhook %s failed after %d attempts: %s",
                        delivery.id,
                        webhook.id,
                        number,
                        attempt.error,
                    )
                else:
                    next_at += backoff_seconds(number, self.settings.webhook_backoff_seconds)
                recorded = await self.store.record_webhook_attempt(
                    delivery.id, attempt, status, next_at
                )
                if not recorded or status != "pending":
                    return
        except Exception:
            log.exception("webhook delivery %s stopped", delivery_id)

    async def _post(
        self, webhook: Webhook, delivery: WebhookDelivery, number: int
    ) -> tuple[WebhookAttempt, bool]:
        """One signed POST (the response body is not read), and whether its outcome is
        final: a refused target is not tried again."""
        url = webhook.url
        body = encode(delivery.payload)
        headers = delivery_headers(webhook, delivery, body, number)
        headers["User-Agent"] = USER_AGENT
        started = time.monotonic()
        status_code: int | None = None
        error: str | None = None
        final = False
        timeout = self.settings.webhook_timeout_seconds
        try:
            # A webhook saved before its URL was checked is checked here too.
            if (problem := url_problem(url)) is not None:
                raise TargetRefused(problem)
            async with self.http.stream(
                "POST", url, content=body, headers=headers, timeout=timeout, follow_redirects=False
            ) as response:
                status_code = response.status_code
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        except TargetRefused as exc:
            error, final = f"refused: {exc.reason}", True
        except HostUnresolved as exc:
            error = f"failed: {exc}"
        # Whether a port refused, reset or timed out the connection, or answered with
        # something that is not HTTP, reads the same: the log must not map a network.
        except (httpx.ConnectError, httpx.ConnectTimeout):
            error = "connection failed"
        except httpx.TimeoutException:
            error = f"timed out after {timeout:g}s"
        except httpx.HTTPError:
            error = "connection failed"
        attempt = WebhookAttempt(
            attempt=number,
            status_code=status_code,
            error=error,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            at=time.time(),
        )
        return attempt, final
