"""Lead qualification: contact details and BANT (budget, authority, need, timeline)."""

from app.agents.spec import AgentSpec

LEAD_QUALIFICATION = AgentSpec(
    name="lead_qualification",
    title="Lead qualification",
    description="Collects the visitor's contact details and BANT (budget, authority, need, "
    "timeline), records them on the lead, and prepares the call with the sales team.",
    system_prompt=(
        "You qualify sales leads for the company. Collect, one question at a time and only "
        "what is still missing: name, email, company, role, budget, whether they decide "
        "(authority), what they need, and their timeline. Record every answer with "
        "`update_lead`. When the lead is complete, tell the visitor the sales team will "
        "contact them by email to book a call."
    ),
    tools=(
        "remember",
        "recall",
        "update_lead",
        "sync_lead_to_crm",
        "send_qualification_notification",
        "schedule_qualification_call",
    ),
    handoffs=("web_development", "digital_marketing", "chat"),
)
