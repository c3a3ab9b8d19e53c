"""The offline engine's rules: deterministic replies for a sales-and-support chat.

With no LLM at all, a visitor still gets a sensible conversation: a greeting, what
services exist, prices in broad strokes, and the next detail the team needs
(name, email, budget, timeline), asked once each. Rules read the whole transcript,
so a detail given in any earlier message is never asked for again.
"""

import re
from dataclasses import dataclass, field

EMAIL = re.compile(r"[\w.+-]+@[\w.-]*\w")  # loose: the lead tool checks it properly
NAME = re.compile(r"\b(?i:my name is|i am|i'm|this is)\s+([A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)")
AMOUNT = re.compile(
    r"[$€£]\s?\d[\d,.]*\s?k?\b|\b\d[\d,.]*\s?(?:k\b\s?)?(?:usd|eur|dollars|euros)\b|\b\d[\d,.]*k\b",
    re.IGNORECASE,
)
BUDGET_NUMBER = re.compile(r"\bbudget\b[^.?!\d]*(\d[\d,.]*)", re.IGNORECASE)
TIMELINE = re.compile(
    r"\b(?:asap|urgent|this (?:week|month|quarter)|next (?:week|month|quarter|year)|"
    r"\d+\s*(?:days?|weeks?|months?)|by (?:january|february|march|april|may|june|july|"
    r"august|september|october|november|december|the end of))\b",
    re.IGNORECASE,
)

GREETING = re.compile(r"^\s*(?:hi|hello|hey|good (?:morning|afternoon|evening)|howdy)\b", re.I)
THANKS = re.compile(r"\b(?:thanks|thank you|bye|goodbye|cheers)\b", re.I)
SERVICES = re.compile(r"\b(?:services?|what do you (?:do|offer)|offer|help with)\b", re.I)
PRICING = re.compile(r"\b(?:price|pricing|cost|how much|quote|rates?)\b", re.I)
WEB = re.compile(
    r"\b(?:websites?|web ?sites?|web ?apps?|online (?:shops?|stores?|ordering|booking)|"
    r"e-?commerce|shops?|landing pages?|web development|wordpress|shopify|"
    r"(?:new |a |our |my )site|web ?pages?)\b",
    re.I,
)
MARKETING = re.compile(
    r"\b(?:seo|marketing|ads|advertising|social media|campaign|ppc|newsletter|brand)\b", re.I
)
NEED = re.compile(
    r"\b(?:need|want|looking for|would like|'d like|planning)\s+(?:to\s+(?:build|get|have)\s+)?"
    r"((?:an?|some|our|my)?\s*[^.,!?]{3,80})",
    re.I,
)
MEETING = re.compile(r"\b(?:call|meeting|meet|book|schedule|demo|talk to)\b", re.I)


@dataclass
class VisitorFacts:
    """What the visitor has said about themselves anywhere in the conversation."""

    name: str | None = None
    email: str | None = None
    budget: str | None = None
    timeline: str | None = None
    need: str | None = None
    interests: list[str] = field(default_factory=list)

    @classmethod
    def from_texts(cls, texts: list[str]) -> "VisitorFacts":
        facts = cls()
        for text in texts:
            if match := NAME.search(text):
                facts.name = match.group(1)
            if match := EMAIL.search(text):
                facts.email = match.group(0)
            if match := AMOUNT.search(text):
                facts.budget = match.group(0).strip()
            elif match := BUDGET_NUMBER.search(text):
                facts.budget = match.group(1)
            if match := TIMELINE.search(text):
                facts.timeline = match.group(0)
            if WEB.search(text) and "web development" not in facts.interests:
                facts.interests.append("web development")
            if MARKETING.search(text) and "digital marketing" not in facts.interests:
                facts.interests.append("digital marketing")
            if facts.need is None:
                facts.need = need_of(text)
        return facts

    def as_memory(self) -> dict[str, str]:
        """The facts worth a shared-memory entry each."""
        values = {
            "need": self.need,
            "budget": self.budget,
            "timeline": self.timeline,
            "name": self.name,
            "email": self.email,
        }
        return {key: value for key, value in values.items() if value}

    def merged(self, remembered: dict) -> "VisitorFacts":
        """These facts, completed with what the team's shared memory holds."""
        if not isinstance(remembered, dict):
            return self
        for key in ("need", "budget", "timeline", "name", "email"):
            if getattr(self, key) is None and isinstance(remembered.get(key), str):
                setattr(self, key, remembered[key])
        return self

    def lead_fields(self) -> dict[str, str]:
        """The arguments of the lead tool: what is known, and the service line."""
        fields = self.as_memory()
        if self.interests:
            fields["service"] = self.interests[0].replace(" ", "_")
        return fields

    def next_question(self) -> str | None:
        """The next missing detail, in the order the sales team needs them."""
        if not self.interests:
            return "What kind of project do you have in mind: a website or shop, or marketing?"
        if self.budget is None:
            return "Do you have a budget range in mind?"
        if self.timeline is None:
            return "When would you like this to be ready?"
        if self.name is None:
            return "May I have your name?"
        if self.email is None:
            return "What email address should our team use to reach you?"
        return None


def need_of(text: str) -> str | None:
    """The visitor's project in their words: 'a new online shop' from 'I need a new online shop'."""
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        if WEB.search(sentence) or MARKETING.search(sentence):
            match = NEED.search(sentence)
            return (match.group(1) if match else sentence).strip(" .!?")[:200]
    return None


SERVICES_TEXT = (
    "We offer two kinds of services: web development (websites, online shops and web "
    "applications) and digital marketing (SEO, paid ads, social media and email campaigns)."
)


def offline_reply(
    visitor_texts: list[str], facts: VisitorFacts | None = None, greet: bool = True
) -> str:
    """The reply to the latest visitor message, given every visitor message so far (and
    the facts the team knows, when the caller has them). A colleague taking over after
    a handoff does not greet again (`greet=False`)."""
    latest = visitor_texts[-1] if visitor_texts else ""
    facts = facts or VisitorFacts.from_texts(visitor_texts)
    question = facts.next_question()
    parts: list[str] = []

    if THANKS.search(latest) and not (WEB.search(latest) or MARKETING.search(latest)):
        closing = "You're welcome!"
        if facts.email:
            closing += f" Our team will follow up at {facts.email}."
        return closing + " Have a great day."

    if greet and GREETING.search(latest) and len(visitor_texts) == 1:
        parts.append(
            "Hello! I'm Parley, the assistant for this site. I can tell you about our web "
            "development and digital marketing services, or help you plan a project."
        )
        if not (WEB.search(latest) or MARKETING.search(latest)):
            return " ".join([*parts, "What are you looking for today?"])

    if SERVICES.search(latest):
        parts.append(SERVICES_TEXT)
    if PRICING.search(latest):
        parts.append(
            "Prices depend on scope: a brochure website usually starts around $3,000, an "
            "online shop around $8,000, and marketing retainers around $1,500 a month."
        )
    if WEB.search(latest):
        parts.append(
            "A new site or shop is something our web development team does every week: "
            "design, build, payments and hosting included."
        )
    if MARKETING.search(latest):
        parts.append(
            "Our digital marketing team can plan and run that for you, with monthly reports."
        )
    if MEETING.search(latest):
        parts.append(
            "I'd be glad to set up a call with our team."
            if facts.email
            else "I'd be glad to set up a call; I just need a few details first."
        )
    if not parts:
        parts.append(
            "Thanks for the details."
            if any((facts.budget, facts.timeline, facts.email, facts.name))
            else "I'm the site's assistant: I can help with web development and digital "
            "marketing projects."
        )

    if question:
        parts.append(question)
    else:
        parts.append(
            f"Thank you, {facts.name}. I have everything our team needs and they will "
            f"contact you at {facts.email} within one business day."
        )
    return " ".join(parts)
