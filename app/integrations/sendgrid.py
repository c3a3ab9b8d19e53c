"""SendGrid v3 Mail Send: a notification to the sales inbox and a proposal to the lead.

The client writes to two addresses only, the lead's own (given by the caller for this call) and
the configured sales inbox, so no agent output can turn it into a mail relay. Mail Send has no
idempotency key: a send is never repeated once it may have left, and the key travels in
`custom_args` (it comes back in SendGrid's event webhook) and a message header.
"""

import logging
import re
from collections import OrderedDict
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from app.integrations.base import IntegrationError, ServiceClient, ServiceConfig
from app.integrations.result import IntegrationResult

_EMAIL = re.compile(r"^[^@\s<>,;:\"()\[\]]+@[^@\s<>,;:\"()\[\]]+\.[^@\s<>,;:\"()\[\]]+$")
_REMEMBERED = 512  # keys of recent sends, to absorb a tool called twice in one process


def normalise_address(address: str | None) -> str | None:
    return address.strip().lower() if address else None


class SendGridConfig(ServiceConfig):
    api_key: SecretStr | None = None
    base_url: str = "https://api.sendgrid.com"
    from_email: str | None = None  # must be a verified sender identity in SendGrid
    from_name: str = "Parley"
    sales_inbox: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.api_key and self.api_key.get_secret_value() and self.from_email)


log = logging.getLogger(__name__)

Kind = Literal["sales_notification", "proposal", "email_confirmation"]


class SendGridClient(ServiceClient):
    service = "sendgrid"
    not_configured_hint = (
        "SendGrid is not configured: set EMAIL_API_KEY and EMAIL_FROM (a verified sender)."
    )
    not_configured_note = "E-mail is not connected here; the team will follow up another way."
    config: SendGridConfig

    def __init__(self, config: SendGridConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._sent: OrderedDict[tuple[str, str], str | None] = OrderedDict()

    async def _headers(self) -> dict[str, str]:
        assert self.config.api_key is not None
        return {"Authorization": f"Bearer {self.config.api_key.get_secret_value()}"}

    def _error_message(self, response: httpx.Response) -> str:
        try:
            errors = response.json().get("errors", [])
            text = "; ".join(
                f"{e.get('field')}: {e.get('message')}" if e.get("field") else str(e.get("message"))
                for e in errors
            )
            return text[:300] or response.text[:300]
        except (ValueError, AttributeError):
            return response.text[:300]

    # -- public API ---------------------------------------------------------------------------

    async def ping(self) -> IntegrationResult:
        """GET /v3/scopes: proves the key and that it may send mail."""

        async def op() -> IntegrationResult:
            response = await self._request("GET", "/v3/scopes", idempotent=True)
            if "mail.send" not in response.json().get("scopes", []):
                message = "the SendGrid API key lacks the mail.send permission"
                self._health.mark_error(message)
                return IntegrationResult.failure("auth_failed", message)
            return IntegrationResult.success()

        return await self._guard(op)

    async def notify_sales(
        self,
        subject: str,
        text: str,
        *,
        idempotency_key: str,
        html: str | None = None,
        lead_email: str | None = None,
    ) -> IntegrationResult:
        """Tell the sales inbox about a lead; replies go to the lead when their address is known."""
        if not self.config.sales_inbox:
            log.warning("no sales inbox: set SALES_INBOX to receive lead notifications")
            return IntegrationResult.skipped(
                "not_configured", "The sales team's inbox is not set up here."
            )
        return await self.send_email(
            self.config.sales_inbox,
            subject,
            text,
            html=html,
            idempotency_key=idempotency_key,
            lead_email=lead_email,
            reply_to=lead_email,
            kind="sales_notification",
        )

    async def send_proposal(
        self,
        lead_email: str,
        subject: str,
        text: str,
        *,
        idempotency_key: str,
        html: str | None = None,
    ) -> IntegrationResult:
        """Send the proposal to the lead; their replies go to the sales inbox."""
        return await self.send_email(
            lead_email,
            subject,
            text,
            html=html,
            idempotency_key=idempotency_key,
            lead_email=lead_email,
            reply_to=self.config.sales_inbox,
            kind="proposal",
        )

    async def send_confirmation_code(
        self, email: str, code: str, *, site_name: str, idempotency_key: str
    ) -> IntegrationResult:
        """The one mail a visitor-given address receives before it is confirmed: a fixed
        text with the code, and nothing the visitor wrote."""
        text = (
            f"Your confirmation code for the chat on {site_name} is {code}.\n\n"
            "Type it in the chat to confirm this address. If you did not ask for it, ignore "
            "this email: nothing else will be sent to you."
        )
        return await self.send_email(
            email,
            f"Your confirmation code: {code}",
            text,
            idempotency_key=idempotency_key,
            lead_email=email,
            kind="email_confirmation",
        )

    async def send_email(
        self,
        to: str,
        subject: str,
        text: str,
        *,
        idempotency_key: str,
        lead_email: str | None,
        html: str | None = None,
        reply_to: str | None = None,
        kind: Kind = "proposal",
    ) -> IntegrationResult:
        """One message to `to`, which must be `lead_email` or the sales inbox.
        data: message_id, to, duplicate."""

        async def op() -> IntegrationResult:
            recipient = self._check_recipient(to, lead_email)
            memo = (idempotency_key, recipient)
            if memo in self._sent:
                return IntegrationResult.success(
                    message_id=self._sent[memo], to=recipient, duplicate=True
                )
            body = self._message(recipient, subject, text, html, reply_to, idempotency_key, kind)
            response = await self._request("POST", "/v3/mail/send", json=body, idempotent=False)
            message_id = response.headers.get("x-message-id")
            self._sent[memo] = message_id
            if len(self._sent) > _REMEMBERED:
                self._sent.popitem(last=False)
            return IntegrationResult.success(message_id=message_id, to=recipient, duplicate=False)

        return await self._guard(op)

    # -- helpers ------------------------------------------------------------------------------

    def _check_recipient(self, to: str, lead_email: str | None) -> str:
        recipient = normalise_address(to) or ""
        if not _EMAIL.match(recipient):
            raise IntegrationError("invalid_request", f"'{to}' is not an e-mail address")
        allowed = {normalise_address(lead_email), normalise_address(self.config.sales_inbox)}
        if recipient not in allowed - {None}:
            raise IntegrationError(
                "recipient_not_allowed",
                "E-mail goes only to the lead's own address or the sales inbox; "
                f"'{to}' is neither, so nothing was sent.",
            )
        return recipient

    def _message(
        self,
        to: str,
        subject: str,
        text: str,
        html: str | None,
        reply_to: str | None,
        key: str,
        kind: Kind,
    ) -> dict[str, Any]:
        # text/plain must come before text/html: SendGrid rejects the other order.
        content = [{"type": "text/plain", "value": text}]
        if html:
            content.append({"type": "text/html", "value": html})
        body: dict[str, Any] = {
            "personalizations": [{"to": [{"email": to}]}],
            "from": {"email": self.config.from_email, "name": self.config.from_name},
            "subject": subject,
            "content": content,
            "categories": ["parley", kind],
            "custom_args": {"parley_idempotency_key": key, "parley_kind": kind},
            "headers": {"X-Parley-Idempotency-Key": key},
        }
        reply = normalise_address(reply_to)
        if reply and _EMAIL.match(reply):
            body["reply_to"] = {"email": reply}
        return body
