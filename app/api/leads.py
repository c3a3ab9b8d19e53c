"""Leads: a form submission becomes a lead (and a conversation), list, read, re-analyse."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.api.callers import OPERATOR_ONLY, ChatCallerDep, client_ip
from app.api.deps import ServicesDep
from app.engine.leads import LeadFields
from app.errors import ApiError
from app.service.text_checks import StorableInput
from app.store.models import Lead

router = APIRouter(prefix="/api/leads", tags=["leads"])


class LeadSubmission(StorableInput):
    """A contact form: the lead's fields, and an optional first message."""

    model_config = ConfigDict(extra="forbid")

    fields: LeadFields = Field(description="Contact and qualification details.")
    message: str | None = Field(default=None, description="Starts a conversation when given.")
    source: str = Field(default="form", max_length=40)


class LeadPage(BaseModel):
    items: list[Lead]
    total: int
    limit: int
    offset: int


@router.post("/submit", status_code=201)
async def submit_lead(
    body: dict[str, Any], services: ServicesDep, caller: ChatCallerDep, request: Request
) -> dict[str, Any]:
    """Record a lead from a form; with a `message`, its conversation starts at once. A
    form is a visitor's turn: the site, origin and rate limits of the chat apply."""
    try:
        submission = LeadSubmission.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise ApiError(422, "invalid_lead", problems) from None
    return await services.parley.leads.submit(
        caller, submission.fields, submission.message, submission.source, client_ip(request)
    )


@router.get("", response_model=LeadPage, dependencies=[OPERATOR_ONLY])
async def list_leads(
    services: ServicesDep,
    stage: Literal["new", "engaged", "qualified", "disqualified", "booked"] | None = None,
    min_score: Annotated[int | None, Query(ge=0, le=100)] = None,
    created_since: Annotated[datetime | None, Query(description="ISO 8601 date-time")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> LeadPage:
    """Leads, newest first, filtered by stage, minimum score and creation time."""
    since = created_since.timestamp() if created_since else None
    items, total = await services.parley.leads.page(stage, min_score, since, limit, offset)
    return LeadPage(items=items, total=total, limit=limit, offset=offset)


@router.get("/{lead_id}", response_model=Lead, dependencies=[OPERATOR_ONLY])
async def get_lead(lead_id: str, services: ServicesDep) -> Lead:
    return await services.parley.leads.get(lead_id)


@router.post("/{lead_id}/analyze", response_model=Lead, dependencies=[OPERATOR_ONLY])
async def analyze(lead_id: str, services: ServicesDep) -> Lead:
    """Re-score the lead from its fields and what the visitor said, and summarise the
    conversation."""
    return await services.parley.leads.analyze(lead_id)
