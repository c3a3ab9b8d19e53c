"""The offline engine's fact extraction: regular expressions that fill the same schema a
model fills, so that with no model at all the lead is still qualified by the same code.

They are also what a model's answer is completed with for the fields rules read exactly
(an email, a phone number, an amount of money)."""

import re

from app.engine.facts import Facts, someone_elses
from app.llm.offline_rules import EMAIL, MARKETING, MEETING, WEB, need_of

ROLE_WORDS = (
    r"(?:co-?founder|founder|owner|ceo|cto|cfo|coo|cmo|president|vice president|partner|"
    r"head of [a-z-]+(?: [a-z]+)?|(?:[a-z]+ )?director(?: of [a-z]+)?|(?:[a-z]+ )?manager|"
    r"(?:[a-z]+ )?lead|(?:[a-z]+ )?officer)"
)
ROLE = re.compile(
    rf"\b(?:i'?m|i am|as|work as|my role is|my title is)\s+(?:the |a |an |our )?({ROLE_WORDS})\b"
    rf"|\b({ROLE_WORDS})\s+(?:of|at)\s+[A-Z]|,\s*(?:the |a |an |our )?({ROLE_WORDS})\b",
    re.I,
)
NOT_A_NAME = re.compile(
    rf"^(?:{ROLE_WORDS}|the|a|an|just|looking|interested|not|new|here|ready|from|with)\b", re.I
)
NAME = re.compile(
    r"\b(?i:my name is|i am|i'm|this is|name's|call me|it's)\s+"
    r"([A-Z][a-z'-]+(?:\s+[A-Z][a-z'-]+)?)"
)
GREETED_NAME = re.compile(
    r"^\s*(?i:hi|hello|hey)[,!]?\s+(?i:it's\s+|this is\s+)?([A-Z][a-z'-]+(?:\s+[A-Z][a-z'-]+)?)"
    r"\s+(?i:from|here|at|of)\b"
)
ONLY_A_NAME = re.compile(r"^\s*(?:it's\s+)?([A-Z][a-z'-]+(?:\s+[A-Z][a-z'-]+)?)[\s.!]*$")
BUSINESS = (
    r"(?:bakery|firm|shop|store|agency|studio|company|business|startup|restaurant|cafe|"
    r"clinic|practice|brand|label|team|gym|salon|hotel)"
)
COMPANY = re.compile(
    r"\b(?i:(?:ceo|cto|cfo|coo|owner|founder|head of [a-z]+|manager|director) (?:of|at)|i run|"
    r"we are|we're|work (?:at|for)|from|for|with|company(?: is)?(?: called)?|"
    rf"{BUSINESS}(?: is)? (?:called|named)|{BUSINESS},)\s+"
    r"((?:[A-Z][\w&'-]*)(?:\s+[A-Z][\w&'-]*){0,3})"
)
NOT_A_COMPANY = re.compile(
    r"^(?:I|I'm|We|The|A|An|My|Our|Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday|"
    r"January|February|March|April|May|June|July|August|September|October|November|December|"
    r"SEO|Google|Facebook|Instagram|Shopify|WordPress|Christmas|Easter)$"
)
PHONE = re.compile(r"(?<![\w$€£])\+?\d[\d ().-]{5,18}\d(?![\w%])")
MONEY = re.compile(
    r"(?P<cur>[$€£])\s?(?P<num>\d[\d,.]*)\s?(?P<k>k\b)?"
    r"|\b(?P<num2>\d[\d,.]*)\s?(?P<k2>k\b)?\s?(?P<cur2>usd|eur|gbp|dollars|euros|pounds)\b"
    r"|\b(?P<num3>\d[\d,.]*)(?P<k3>k)\b"
    r"|\bbudget\b[^.?!\d]{0,20}(?P<num4>\d[\d,.]*)\s?(?P<k4>k\b)?",
    re.I,
)
MONTHLY = re.compile(r"\b(?:a|per|each|every|/)\s?(?:month|mo)\b|\bmonthly\b|/mo\b", re.I)
YEARLY = re.compile(r"\b(?:a|per|each|every)\s+year\b|\b(?:yearly|annually|annual)\b", re.I)
TIMELINE = re.compile(
    r"\b(?:asap|as soon as possible|urgently|this (?:week|month|quarter|year)|"
    r"next (?:week|month|quarter|year)|(?:in|within) (?:\d+|a|one|two|three|six) "
    r"(?:days?|weeks?|months?)|\d+\s*(?:days?|weeks?|months?)|"
    r"by (?:the end of (?:the )?\w+|january|february|march|april|may|june|july|august|"
    r"september|october|november|december|spring|summer|autumn|fall|winter|christmas))\b",
    re.I,
)
INFLUENCER = re.compile(
    r"\b(?:(?:cfo|ceo|boss|board|owner|partner|director|manager|founder|someone else|my team|"
    r"they|he|she)\s+(?:signs? off|decides?|approves?|has the (?:final )?say|makes? the "
    r"(?:final )?(?:decision|call))|i (?:would |'d )?recommend|i'll recommend|i recommend|"
    r"not (?:my|up to me)|i (?:don't|do not) decide|need (?:their|his|her) approval)",
    re.I,
)
DECISION_MAKER = re.compile(
    r"\b(?:i (?:decide|make the (?:final )?(?:decision|call)|sign off|approve|own the "
    r"(?:company|business|shop))|i'?m the (?:decision maker|owner)|i am the (?:decision maker|"
    r"owner)|(?:it'?s|that'?s) (?:my|up to me)|my decision|i have the final say|"
    r"i call the shots)\b",
    re.I,
)
NO_AUTHORITY = re.compile(r"\bi (?:have|got) no say\b|\bjust (?:researching|looking) for\b", re.I)
PREFERENCE = re.compile(
    r"\b((?:(?:next|this|on)\s+)?(?:mon|tues|wednes|thurs|fri|satur|sun)day"
    r"(?:\s+(?:morning|afternoon|evening))?|tomorrow(?:\s+(?:morning|afternoon|evening))?|"
    r"(?:in the )?(?:morning|afternoon|evening)s?|next week)\b",
    re.I,
)
ORDINALS = (
    (re.compile(r"\b(?:first|1st|earliest|number one|option 1)\b", re.I), 1),
    (re.compile(r"\b(?:second|2nd|number two|option 2)\b", re.I), 2),
    (re.compile(r"\b(?:third|3rd|number three|option 3)\b", re.I), 3),
)
CURRENCIES = {"$": "USD", "€": "EUR", "£": "GBP", "dollars": "USD", "euros": "EUR", "pounds": "GBP"}


def _amount(text: str) -> tuple[float, str | None] | None:
    match = MONEY.search(text)
    if match is None:
        return None
    groups = match.groupdict()
    number = next(groups[k] for k in ("num", "num2", "num3", "num4") if groups[k])
    thousands = any(groups[k] for k in ("k", "k2", "k3", "k4"))
    digits = number.rstrip(".,").replace(",", "")
    try:
        amount = float(digits)
    except ValueError:
        return None
    currency = groups["cur"] or groups["cur2"]
    code = CURRENCIES.get((currency or "").lower(), currency.upper() if currency else None)
    return (amount * 1000 if thousands else amount), code


def _phone(text: str) -> str | None:
    for match in PHONE.finditer(text):
        candidate = match.group(0).strip()
        if len(re.sub(r"\D", "", candidate)) >= 7 and not re.search(r"\d[.,]\d{3}\b", candidate):
            return candidate
    return None


def _name(text: str, asked: str | None) -> str | None:
    for match in NAME.finditer(text):
        if not NOT_A_NAME.match(match.group(1)):
            return match.group(1)
    if match := GREETED_NAME.match(text):
        return match.group(1)
    if asked and re.search(r"\bname\b", asked, re.I) and (match := ONLY_A_NAME.match(text)):
        return match.group(1)
    return None


def _company(text: str) -> str | None:
    for match in COMPANY.finditer(text):
        words = match.group(1).split()
        while words and NOT_A_COMPANY.match(words[-1]):
            words.pop()
        if words and not NOT_A_COMPANY.match(words[0]):
            return " ".join(words)
    return None


def _authority(text: str) -> str | None:
    if INFLUENCER.search(text):
        return "influencer"
    if DECISION_MAKER.search(text):
        return "decision_maker"
    if NO_AUTHORITY.search(text):
        return "none"
    return None


def _service(text: str) -> str | None:
    web, marketing = WEB.search(text), MARKETING.search(text)
    if web and (not marketing or web.start() < marketing.start()):
        return "web_development"
    return "digital_marketing" if marketing else None


def rule_facts(message: str, asked: str | None = None) -> Facts:
    """The facts the rules can read in one visitor message."""
    text = EMAIL.sub(" ", message)  # an address is no name, company or phone number
    own = [m.group(0) for m in EMAIL.finditer(message) if not someone_elses(m.group(0), message)]
    facts = Facts(
        name=_name(text, asked),
        email=own[0] if own else None,
        phone=_phone(text),
        company=_company(text),
        role=next(g for g in match.groups() if g) if (match := ROLE.search(text)) else None,
        authority=_authority(text),  # type: ignore[arg-type]
        timeline=match.group(0) if (match := TIMELINE.search(text)) else None,
        need=need_of(text),
        service=_service(text),  # type: ignore[arg-type]
        meeting_preference=match.group(1) if (match := PREFERENCE.search(text)) else None,
        wants_call=True if MEETING.search(text) else None,
        slot_choice=next((index for pattern, index in ORDINALS if pattern.search(text)), None),
    )
    if facts.phone and (money := _amount(text)) and str(int(money[0])) in facts.phone:
        facts.phone = None
    if (money := _amount(text)) is not None and not (
        facts.phone and money[0] and str(int(money[0])) in re.sub(r"\D", "", facts.phone)
    ):
        facts.budget_amount, facts.budget_currency = money
        facts.budget_currency = facts.budget_currency or "USD"
        facts.budget_period = (
            "monthly" if MONTHLY.search(text) else "yearly" if YEARLY.search(text) else "one_time"
        )
    return facts
