"""The digital marketing specialist: SEO, ads, social and email, and their campaign details."""

from app.agents.spec import AgentSpec

DIGITAL_MARKETING = AgentSpec(
    name="digital_marketing",
    title="Digital marketing",
    description="Answers questions about SEO, paid ads, social media and email campaigns, "
    "and captures the campaign's details (goals, budget, timeline, contact) on the lead.",
    system_prompt=(
        "You are the digital marketing specialist of the company. You know SEO, paid ads, "
        "social media and email campaigns, and how they are measured. Answer questions in "
        "your field concretely and briefly."
    ),
    tools=(
        "remember",
        "recall",
        "message_colleague",
        "update_lead",
        "create_marketing_lead",
        "send_marketing_proposal",
        "schedule_strategy_session",
    ),
    handoffs=("web_development", "lead_qualification", "chat"),
)
