"""Dead-letter alerts: a Slack-compatible webhook message when a message is given up.

At most one POST per ``ALERT_MIN_INTERVAL_SECONDS``: the first dead letter is
posted at once, and those arriving during the quiet period after it are
summarised in the next message ("+N more"), sent when the period ends. An
alert that cannot be posted is logged and counted; it never stops the worker
(the dead letter itself is safe in the pgmq archive and ``job_runs``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from uuid import UUID

import httpx

from worker.callback.posting import post_bounded
from worker.core import metrics
from worker.core.settings import Settings
from worker.queue.runs import JobRun

log = logging.getLogger(__name__)

LISTED_MSG_IDS = 10
"""Most msg ids of a summary that the message lists by number."""
REASON_CHARS = 500


@dataclass(frozen=True)
class DeadLetter:
    queue_name: str
    msg_id: int
    tenant_id: UUID | None
    match_id: int | None
    attempts: int
    reason: str


@dataclass
class _Pending:
    first: DeadLetter
    more: list[int] = field(default_factory=list)
    """Msg ids of the dead letters after the first (only the first few are kept)."""
    more_count: int = 0


class DeadLetterAlerter:
    """Posts dead-letter alerts to ``ALERT_WEBHOOK_URL``; see the module docstring."""

    def __init__(self, settings: Settings, client: httpx.AsyncClient) -> None:
        self._url = settings.alert_webhook_url
        self._client = client
        self._timeout = settings.callback_timeout_seconds
        self._min_interval = settings.alert_min_interval_seconds
        self._pending: _Pending | None = None
        self._wake = asyncio.Event()

    def dead_lettered(self, run: JobRun, queue_name: str) -> None:
        """Alert about this dead letter (now, or summarised in the next alert)."""
        if self._url is None:
            return
        letter = DeadLetter(
            queue_name=queue_name,
            msg_id=run.msg_id,
            tenant_id=run.tenant_id,
            match_id=run.match_id,
            attempts=run.attempts,
            reason=run.error or "unknown",
        )
        if self._pending is None:
            self._pending = _Pending(letter)
        else:
            self._pending.more_count += 1
            if len(self._pending.more) < LISTED_MSG_IDS:
                self._pending.more.append(letter.msg_id)
        self._wake.set()

    async def run(self) -> None:
        """The sending task: post pending alerts, then keep quiet for the interval."""
        url = self._url
        if url is None:
            await asyncio.Event().wait()  # nothing to do, but a lifetime task never ends
            return
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending, self._pending = self._pending, None
            if pending is None:
                continue
            await self._post(url, pending)
            await asyncio.sleep(self._min_interval)

    async def _post(self, url: str, pending: _Pending) -> None:
        if pending.more_count:
            metrics.alerts_total.labels(result="suppressed").inc(pending.more_count)
        await post_alert(
            self._client,
            url,
            alert_text(pending),
            seconds=self._timeout,
            what="dead-letter alert",
            fields=_log_fields(pending),
        )


async def post_alert(
    client: httpx.AsyncClient,
    url: str,
    text: str,
    *,
    seconds: float,
    what: str,
    fields: dict[str, object],
) -> bool:
    """POST ``{"text": text}`` to the webhook; count and log the result; True when sent."""
    try:
        async with asyncio.timeout(seconds):
            response = await post_bounded(client, url, json={"text": text}, timeout=seconds)
        if response.status_code >= 300:
            raise WebhookRefused(response.status_code)
    # An alert is a courtesy: whatever goes wrong posting it must not stop the worker.
    except Exception as exc:
        metrics.alerts_total.labels(result="failed").inc()
        log.error(f"{what} could not be posted", extra={**fields, "error": _describe(exc, url)})
        return False
    metrics.alerts_total.labels(result="sent").inc()
    log.info(f"{what} posted", extra=fields)
    return True


def alert_text(pending: _Pending) -> str:
    """The message: the first dead letter in full, the rest as "+N more"."""
    letter = pending.first
    tenant = str(letter.tenant_id) if letter.tenant_id else "unknown"
    match = str(letter.match_id) if letter.match_id is not None else "unknown"
    lines = [
        f":rotating_light: stats-worker dead-lettered message {letter.msg_id} "
        f"of queue {letter.queue_name} after {letter.attempts} attempt(s)",
        f"tenant {tenant}, match {match}",
        f"reason: {letter.reason[:REASON_CHARS]}",
        f"retry with: stats-worker retry {letter.msg_id}",
    ]
    if pending.more_count:
        listed = ", ".join(str(msg_id) for msg_id in pending.more)
        etc = ", …" if pending.more_count > len(pending.more) else ""
        lines.append(f"+{pending.more_count} more dead letters (msg_id {listed}{etc})")
    return _slack_escape("\n".join(lines))


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _log_fields(pending: _Pending) -> dict[str, object]:
    return {
        "queue": pending.first.queue_name,
        "msg_id": pending.first.msg_id,
        "tenant_id": str(pending.first.tenant_id) if pending.first.tenant_id else None,
        "match_id": pending.first.match_id,
        "more": pending.more_count,
    }


class WebhookRefused(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


def _describe(exc: BaseException, url: str) -> str:
    """The error without the webhook URL, whose path is the webhook's secret."""
    if isinstance(exc, WebhookRefused):
        return f"HTTP {exc.status_code}"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = f"{type(exc).__name__}: {exc}".replace(url, "<webhook>")
    return text[:500]
