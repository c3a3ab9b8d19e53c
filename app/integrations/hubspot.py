"""HubSpot CRM v3/v4 with a private-app token: contacts upserted by e-mail, deals, associations.

Every write is safe to repeat except creating a deal without a known id or a unique
`deal_id_property`; that one write is sent once and a lost answer is reported as
`outcome_unknown` rather than risking a second deal.
"""

import re
from collections.abc import Awaitable, Mapping
from decimal import Decimal
from typing import Any

import httpx
from pydantic import SecretStr

from app.integrations.base import IntegrationError, ServiceClient, ServiceConfig
from app.integrations.result import IntegrationResult

DESCRIPTION_LIMIT = 60_000  # HubSpot text properties hold 65,536 characters


class HubSpotConfig(ServiceConfig):
    access_token: SecretStr | None = None
    base_url: str = "https://api.hubapi.com"
    pipeline: str = "default"
    # Internal stage ids, not labels: a qualified lead's new deal, and the stage it moves to
    # once a call is booked.
    deal_stage: str = "qualifiedtobuy"
    booked_stage: str = "appointmentscheduled"
    # A custom deal property with "unique values" (e.g. parley_lead_id): when set, deals are
    # upserted by it, so creating a deal becomes safe to retry.
    deal_id_property: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.access_token and self.access_token.get_secret_value())


def deal_description(lead_score: int | None, summary: str | None) -> str:
    parts = []
    if lead_score is not None:
        parts.append(f"Lead score: {lead_score}/100")
    if summary:
        parts.append(f"Conversation summary:\n{summary.strip()}")
    return "\n\n".join(parts)[:DESCRIPTION_LIMIT]


_EXISTING_ID = re.compile(r"Existing ID:\s*(\d+)")


def _existing_id(response: httpx.Response) -> str | None:
    """A 409 on a contact write names the record that already has this e-mail."""
    try:
        body = response.json()
    except ValueError:
        return None
    messages = [body.get("message", "")] + [e.get("message", "") for e in body.get("errors", [])]
    for message in messages:
        if match := _EXISTING_ID.search(message or ""):
            return match.group(1)
    return None


def _first_result(response: httpx.Response, what: str) -> dict[str, Any]:
    """Batch endpoints answer 200, or 207 with per-input errors."""
    body = response.json()
    results = body.get("results") or []
    if results:
        return results[0]
    errors = "; ".join(e.get("message", "") for e in body.get("errors", [])) or "no result"
    raise IntegrationError("vendor_error", f"hubspot could not {what}: {errors}")


class HubSpotClient(ServiceClient):
    service = "hubspot"
    not_configured_hint = "HubSpot is not configured: set CRM_API_KEY to a private-app token."
    not_configured_note = "The CRM is not connected here; the team will add the details themselves."
    config: HubSpotConfig

    async def _headers(self) -> dict[str, str]:
        assert self.config.access_token is not None
        return {"Authorization": f"Bearer {self.config.access_token.get_secret_value()}"}

    def _error_message(self, response: httpx.Response) -> str:
        try:
            body = response.json()
            return f"{body.get('category', 'ERROR')}: {body.get('message', '')}"[:300]
        except (ValueError, AttributeError):
            return response.text[:300]

    # -- public API ---------------------------------------------------------------------------

    async def ping(self) -> IntegrationResult:
        """Cheapest authenticated read: proves the token and the contacts scope."""

        async def op() -> IntegrationResult:
            await self._request(
                "GET", "/crm/v3/objects/contacts", params={"limit": "1"}, idempotent=True
            )
            return IntegrationResult.success()

        return await self._guard(op)

    async def upsert_contact(
        self, email: str, properties: Mapping[str, str] | None = None
    ) -> IntegrationResult:
        """Create or update the contact with this e-mail; data: contact_id, created."""
        return await self._guard(lambda: self._ok(self._upsert_contact(email, properties)))

    async def upsert_deal(
        self,
        name: str,
        *,
        amount: Decimal | float | int | None = None,
        lead_score: int | None = None,
        summary: str | None = None,
        deal_id: str | None = None,
        dedupe_key: str | None = None,
        stage: str | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> IntegrationResult:
        """Update `deal_id`, or upsert by `deal_id_property` = `dedupe_key`, or create a deal.
        data: deal_id, created."""
        props = self._deal_properties(name, amount, lead_score, summary, stage, properties)
        return await self._guard(
            lambda: self._ok(self._upsert_deal(props, deal_id, dedupe_key, stage))
        )

    async def associate_deal_contact(self, deal_id: str, contact_id: str) -> IntegrationResult:
        """The default deal-to-contact association (v4); repeating it changes nothing."""
        return await self._guard(lambda: self._ok(self._associate(deal_id, contact_id)))

    async def sync_lead(
        self,
        email: str,
        *,
        deal_name: str,
        contact_properties: Mapping[str, str] | None = None,
        amount: Decimal | float | int | None = None,
        lead_score: int | None = None,
        summary: str | None = None,
        deal_id: str | None = None,
        dedupe_key: str | None = None,
        deal_stage: str | None = None,
    ) -> IntegrationResult:
        """Contact, deal and their association in one deadline. On failure, `data` keeps the ids
        already written so the caller can resume instead of duplicating. `deal_stage` moves an
        existing deal (or places a new one) at that stage."""
        props = self._deal_properties(deal_name, amount, lead_score, summary, deal_stage, None)

        async def op() -> IntegrationResult:
            done: dict[str, Any] = {}
            try:
                contact = await self._upsert_contact(email, contact_properties)
                done.update(contact_id=contact["contact_id"], created_contact=contact["created"])
                deal = await self._upsert_deal(props, deal_id, dedupe_key, deal_stage)
                done.update(deal_id=deal["deal_id"], created_deal=deal["created"])
                await self._associate(deal["deal_id"], contact["contact_id"])
            except IntegrationError as exc:
                result = exc.result()
                result.data.update(done)
                return result
            return IntegrationResult.success(**done)

        return await self._guard(op)

    # -- operations (raise IntegrationError) --------------------------------------------------

    @staticmethod
    async def _ok(operation: Awaitable[dict[str, Any]]) -> IntegrationResult:
        return IntegrationResult.success(**(await operation))

    async def _upsert_contact(
        self, email: str, properties: Mapping[str, str] | None
    ) -> dict[str, Any]:
        email = email.strip().lower()
        props = {**(properties or {}), "email": email}
        body = {"inputs": [{"idProperty": "email", "id": email, "properties": props}]}
        response = await self._request(
            "POST",
            "/crm/v3/objects/contacts/batch/upsert",
            json=body,
            idempotent=True,
            expect=(409,),
        )
        if response.status_code == 409:
            # The address belongs to an existing record (e.g. as a secondary e-mail): update it.
            existing = _existing_id(response)
            if existing is None:
                raise self._failure(response)
            await self._request(
                "PATCH",
                f"/crm/v3/objects/contacts/{existing}",
                idempotent=True,
                json={"properties": {k: v for k, v in props.items() if k != "email"}},
            )
            return {"contact_id": existing, "created": False}
        result = _first_result(response, "upsert the contact")
        return {"contact_id": str(result["id"]), "created": bool(result.get("new", False))}

    def _deal_properties(
        self,
        name: str,
        amount: Decimal | float | int | None,
        lead_score: int | None,
        summary: str | None,
        stage: str | None,
        extra: Mapping[str, str] | None,
    ) -> dict[str, str]:
        props = {"dealname": name}
        if amount is not None:
            props["amount"] = str(amount)
        if description := deal_description(lead_score, summary):
            props["description"] = description
        if stage:
            props["dealstage"] = stage
        props.update(extra or {})
        return props

    async def _upsert_deal(
        self,
        props: dict[str, str],
        deal_id: str | None,
        dedupe_key: str | None,
        stage: str | None,
    ) -> dict[str, Any]:
        if deal_id:
            # An update leaves pipeline and stage alone unless asked: sales may have moved it on.
            response = await self._request(
                "PATCH",
                f"/crm/v3/objects/deals/{deal_id}",
                json={"properties": props},
                idempotent=True,
            )
            return {"deal_id": str(response.json()["id"]), "created": False}
        new = {"pipeline": self.config.pipeline, "dealstage": stage or self.config.deal_stage}
        new.update(props)
        unique = self.config.deal_id_property
        if unique and dedupe_key:
            new[unique] = dedupe_key
            body = {"inputs": [{"idProperty": unique, "id": dedupe_key, "properties": new}]}
            response = await self._request(
                "POST", "/crm/v3/objects/deals/batch/upsert", json=body, idempotent=True
            )
            result = _first_result(response, "upsert the deal")
            return {"deal_id": str(result["id"]), "created": bool(result.get("new", False))}
        response = await self._request(
            "POST", "/crm/v3/objects/deals", json={"properties": new}, idempotent=False
        )
        return {"deal_id": str(response.json()["id"]), "created": True}

    async def _associate(self, deal_id: str, contact_id: str) -> dict[str, Any]:
        await self._request(
            "PUT",
            f"/crm/v4/objects/deals/{deal_id}/associations/default/contacts/{contact_id}",
            idempotent=True,
        )
        return {"deal_id": deal_id, "contact_id": contact_id}
