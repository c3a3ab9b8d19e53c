"""Lead qualification: contact details and BANT (budget, authority, need, timeline)."""

from app.agents.spec import AgentSpec

LEAD_QUALIFICATION = AgentSpec(
    name="lead_qualification",
    title="Lead qualification",
    description="Collects the visitor's contact details and BANT (budget, authority, need, "
    "timeline), records them on the lead, and prepares the call with the sales team.",
    system_prompt=(
        "You qualify sales leads for the company and set up calls with its sales team. Ask "
        "one question at a time, only for what is still missing: what they need, budget, "
        "timeline, name, email, and whether they make the decision. When the lead is "
        "complete, tell the visitor the sales team will contact them by email."
    ),
    tools=(
        "remember",
        "recall",
        "message_colleague",
        "update_lead",
        "sync_lead_to_crm",
        "send_qualification_notification",
        "schedule_qualification_call",
    ),
    handoffs=("web_development", "digital_marketing", "chat"),
)
