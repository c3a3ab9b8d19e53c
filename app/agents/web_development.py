"""The web development specialist: websites, shops and web apps, and their project details."""

from app.agents.spec import AgentSpec

WEB_DEVELOPMENT = AgentSpec(
    name="web_development",
    title="Web development",
    description="Answers questions about websites, online shops and web applications, and "
    "captures the project's details (scope, budget, timeline, contact) on the lead.",
    system_prompt=(
        "You are the web development specialist of the company. You know websites, online "
        "shops (payments, catalogues, shipping), web applications and hosting. Answer "
        "questions in your field concretely and briefly."
    ),
    tools=(
        "remember",
        "recall",
        "message_colleague",
        "update_lead",
        "create_project_lead",
        "schedule_technical_consultation",
    ),
    handoffs=("digital_marketing", "lead_qualification", "chat"),
)
