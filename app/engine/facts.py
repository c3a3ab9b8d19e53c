"""What one visitor message says about the visitor: the extraction schema, and the checks
that keep a model's answer to what the message really says.

Every visitor message goes through one constrained extraction (a JSON schema the model
must follow, or the offline engine's rules). The result is checked here before code
merges it into the lead: values the message does not contain are dropped (a small model
may invent a company from an email domain), and a value that does not validate (an
email without a domain) is reported, not stored.
"""

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, TypeAdapter, ValidationError

Authority = Literal["decision_maker", "influencer", "none"]
Period = Literal["one_time", "monthly", "yearly"]
Service = Literal["web_development", "digital_marketing", "other"]


class Facts(BaseModel):
    """The facts one visitor message gives; null for everything it does not say."""

    model_config = ConfigDict(extra="ignore")

    name: str | None = Field(default=None, description="The visitor's own name")
    email: str | None = Field(default=None, description="The visitor's email address")
    phone: str | None = Field(default=None, description="The visitor's phone number")
    company: str | None = Field(default=None, description="The visitor's company or shop")
    role: str | None = Field(default=None, description="The visitor's job title, e.g. CEO")
    authority: Authority | None = Field(
        default=None,
        description="decision_maker if the visitor decides or signs off themselves; "
        "influencer if someone else decides and the visitor recommends; none if the visitor "
        "has no say; null if the message does not tell",
    )
    budget_amount: float | None = Field(
        default=None, description="The budget as a plain number, e.g. 12000 for '$12k'"
    )
    budget_currency: str | None = Field(default=None, description="ISO code, e.g. USD")
    budget_period: Period | None = Field(
        default=None, description="monthly for '$2,500 a month', else one_time"
    )
    timeline: str | None = Field(default=None, description="When they need it, e.g. '2 months'")
    need: str | None = Field(default=None, description="What they want built or done")
    service: Service | None = Field(
        default=None,
        description="web_development for websites, shops and web apps; digital_marketing "
        "for SEO, ads, social media and email campaigns",
    )
    meeting_preference: str | None = Field(
        default=None, description="When they would like a call, e.g. 'Tuesday afternoon'"
    )
    wants_call: bool | None = Field(
        default=None, description="true if the visitor asks for a call or a meeting"
    )
    slot_choice: int | None = Field(
        default=None, description="1 for the first offered time, 2 for the second, ..."
    )

    def given(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


# What a model is asked to fill, as a JSON schema every field of which is required and
# nullable: the form grammar-constrained decoding (llama.cpp, Ollama, OpenAI) accepts.
def extraction_schema() -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for name, field in Facts.model_fields.items():
        schema = TypeAdapter(field.annotation).json_schema()
        schema.pop("title", None)
        if field.description:
            schema["description"] = field.description
        properties[name] = schema
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


EMAIL_ADAPTER: TypeAdapter[str] = TypeAdapter(EmailStr)
DIGITS = re.compile(r"\d")
ADDRESS = re.compile(r"[\w.+-]+@[\w.-]+")
TIME_WORDS = re.compile(
    r"\b(?:asap|soon|urgent|urgently|now|today|tomorrow|days?|weeks?|months?|quarters?|years?|"
    r"spring|summer|autumn|"
    r"fall|winter|january|february|march|april|may|june|july|august|september|october|"
    r"november|december|christmas|holidays?)\b",
    re.I,
)
# Words that say who decides; a job title alone ("practice manager") does not.
AUTHORITY_CUES = re.compile(
    r"\b(?:decide|decides|decision|decisions|sign|signs|signing|approve|approves|approval|"
    r"boss|own|owner|recommend|final say|call the shots|up to me|my call|no say)\b",
    re.I,
)
# A job title has one of these words; "SEO and Google Ads" or "Joke" is no role.
TITLE_WORDS = re.compile(
    r"\b(?:ceo|cto|cfo|coo|cmo|cio|vp|founder|co-?founder|owner|president|partner|director|"
    r"head|lead|manager|officer|chief|principal|chair|board|engineer|developer|designer|"
    r"marketer|consultant|assistant|coordinator|specialist|analyst|administrator|admin|"
    r"editor|producer|buyer|accountant|secretary|agent|executive|supervisor|founder)\b",
    re.I,
)
# Words of the trade that capitalised in a message are still no company name.
JARGON = frozenset(
    "seo sem ppc ads ad google facebook instagram tiktok linkedin shopify wordpress woocommerce "
    "social media email marketing web website app crm".split()
)
# An amount with its currency or period ("$1,200 a month") says nothing about when.
PRICE = re.compile(
    r"(?:[$€£]\s?\d[\d,.]*\s?k?|\d[\d,.]*\s?k\b|\d[\d,.]*\s*(?:usd|eur|gbp|dollars|euros|"
    r"pounds)\b)(?:\s*(?:a|per|/|each|every)\s*(?:month|mo|year|week)\b)?",
    re.I,
)
NUMBER = re.compile(r"(\d[\d,]*(?:\.\d+)?)\s*(k\b)?", re.I)
DAY_WORDS = re.compile(
    r"\b(?:mon|tues|wednes|thurs|fri|satur|sun)day|\b(?:morning|afternoon|evening|noon|"
    r"tomorrow|today|next week|\d{1,2}(?::\d{2})?\s*(?:am|pm)?)\b",
    re.I,
)


# A value a model gives is kept only where the message has a word that can carry it.
SLOT_CUES = re.compile(
    r"\b(?:first|second|third|last|earliest|1st|2nd|3rd|one|two|three|option|\d|monday|tuesday|"
    r"wednesday|thursday|friday|saturday|sunday|morning|afternoon|evening|noon)\b",
    re.I,
)
CALL_CUES = re.compile(
    r"\b(?:call|calls|meet|meeting|book|schedule|talk|speak|chat with|demo|appointment|"
    r"consultation|session|zoom|phone)\b",
    re.I,
)
SERVICE_CUES = {
    "web_development": re.compile(
        r"\b(?:site|website|web|shop|store|app|page|online|e-?commerce|ordering|platform|"
        r"portal|booking system|wordpress|shopify|checkout|catalog(?:ue)?)",
        re.I,
    ),
    "digital_marketing": re.compile(
        r"\b(?:seo|marketing|ads|advert|social|campaign|google|instagram|facebook|tiktok|"
        r"linkedin|newsletter|brand|traffic|leads|customers|promotion|ppc|content)",
        re.I,
    ),
}
NOT_NAME_WORDS = frozenset(
    "the a an one first second third works work yes ok okay sure thanks thank you hi hello "
    "call book please it that this is my our we i need want looking budget email".split()
)
# "send it to x@y", "my colleague's email x@y": an address the visitor gives for someone
# else is never taken as theirs.
THIRD_PARTY = re.compile(
    r"(?:\b(?:send|forward|mail|email|e-mail|cc|copy|share|pass)\b[^.?!@]{0,60}\bto\s*|"
    r"\b(?:his|her|their|colleague'?s?|boss'?s?|partner'?s?|friend'?s?|manager'?s?|"
    r"someone'?s?)\s+(?:e-?mail|address)[^.?!@]{0,20})$",
    re.I,
)


def someone_elses(email: str, text: str) -> bool:
    """Whether the message gives `email` as another person's address."""
    at = text.casefold().find(email.casefold())
    return at >= 0 and bool(THIRD_PARTY.search(text[:at]))


def _amount_said(amount: float, text: str) -> bool:
    """Whether the message states this amount ('$12k', '12,000', '12000')."""
    for match in NUMBER.finditer(text):
        try:
            number = float(match.group(1).replace(",", ""))
        except ValueError:
            continue
        if number * (1000 if match.group(2) else 1) == amount:
            return True
    return False


def _timeline_said(value: str, text: str) -> bool:
    """Its numbers stand in the message, and a word about time of its own does too."""
    numbers = set(re.findall(r"\d+", text))
    if any(number not in numbers for number in re.findall(r"\d+", value)):
        return False
    return bool(TIME_WORDS.search(text)) and _any_word(re.sub(r"\d+", " ", value), text)


def _any_word(value: str, text: str) -> bool:
    """Whether some word of three letters or more of `value` is in the message."""
    lowered = text.casefold()
    return any(w in lowered for w in re.findall(r"[a-z]{3,}|\d+", value.casefold()))


def _proper_noun(value: str, text: str) -> bool:
    """A company is named as written, capitalised: 'Hart Ceramics', not 'my pottery studio'."""
    return value in text and any(c.isupper() for c in value)


def _mentioned(value: str, text: str) -> bool:
    """Whether every word of `value` occurs in the message (case-insensitively)."""
    words = re.findall(r"\w+", value.casefold())
    lowered = text.casefold()
    return bool(words) and all(word in lowered for word in words)


def grounded(facts: Facts, text: str) -> tuple[Facts, list[str]]:
    """Keep the facts the message supports; also name the fields whose value is invalid
    (e.g. `email`), so the reply can ask the visitor to check them."""
    kept = facts.model_copy()
    invalid: list[str] = []
    words = ADDRESS.sub(" ", text)  # a name or company is never read from an email address
    for name in ("name", "company", "role"):
        value = getattr(kept, name)
        if value is not None and (not value.strip() or not _mentioned(value, words)):
            setattr(kept, name, None)
    if kept.company is not None and (
        not _proper_noun(kept.company, words)
        or (kept.role and kept.company.casefold() == kept.role.casefold())
        or set(re.findall(r"\w+", kept.company.casefold())) <= JARGON
    ):
        kept.company = None
    if kept.role is not None and not TITLE_WORDS.search(kept.role):
        kept.role = None
    if kept.name is not None and (
        len(kept.name.split()) > 4 or NOT_NAME_WORDS & set(kept.name.casefold().split())
    ):
        kept.name = None
    if kept.email is not None:
        if kept.email.casefold() not in text.casefold() or someone_elses(kept.email, text):
            kept.email = None
        else:
            try:
                kept.email = EMAIL_ADAPTER.validate_python(kept.email.strip())
            except ValidationError:
                invalid.append("email")
                kept.email = None
    if kept.phone is not None:
        digits = "".join(DIGITS.findall(kept.phone))
        if len(digits) < 7 or digits not in "".join(DIGITS.findall(text)):
            kept.phone = None
    if kept.budget_amount is not None and (
        kept.budget_amount <= 0 or not _amount_said(kept.budget_amount, words)
    ):
        kept.budget_amount = kept.budget_currency = kept.budget_period = None
    if kept.budget_amount is None:
        kept.budget_period = kept.budget_currency = None
    if kept.timeline is not None and not _timeline_said(kept.timeline, PRICE.sub(" ", text)):
        kept.timeline = None
    if kept.authority is not None and not AUTHORITY_CUES.search(text):
        kept.authority = None
    if kept.meeting_preference is not None and not DAY_WORDS.search(text):
        kept.meeting_preference = None
    if kept.need is not None and len(kept.need.split()) < 2:
        kept.need = None
    if kept.slot_choice is not None and (
        not 1 <= kept.slot_choice <= 10 or not SLOT_CUES.search(text)
    ):
        kept.slot_choice = None
    if kept.wants_call and not CALL_CUES.search(text):
        kept.wants_call = None
    if kept.service in SERVICE_CUES and not SERVICE_CUES[kept.service].search(text):
        kept.service = None
    return kept, invalid


def budget_text(amount: float, currency: str | None, period: str | None) -> str:
    """'$12,000', '€8,000', '$2,500 per month'."""
    symbol = {"USD": "$", "EUR": "€", "GBP": "£"}.get((currency or "USD").upper())
    number = f"{amount:,.0f}" if amount == int(amount) else f"{amount:,.2f}"
    text = f"{symbol}{number}" if symbol else f"{number} {currency}"
    suffix = {"monthly": " per month", "yearly": " per year"}.get(period or "", "")
    return text + suffix
