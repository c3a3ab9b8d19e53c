"""HubSpot, SendGrid and Google Calendar played by one loopback HTTP server.

Parley talks to it through its ordinary settings (`HUBSPOT_BASE_URL`, `SENDGRID_BASE_URL`,
`GOOGLE_CALENDAR_BASE_URL` and a service-account key whose `token_uri` points here), so the
eval exercises the real clients end to end. The double answers with the documented shapes,
checks credentials like the vendors do, and records every request so each conversation's
side effects (CRM writes, mails, bookings) can be counted.
"""

import itertools
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt

CALENDAR_ID = "team@example.com"
SALES_INBOX = "sales@example.com"
EMAIL_FROM = "hello@example.com"
CRM_KEY = "eval-hubspot-token"
EMAIL_KEY = "eval-sendgrid-key"
CLIENT_EMAIL = "parley-eval@example.iam.gserviceaccount.com"


@dataclass(frozen=True)
class Recorded:
    """One request the double answered."""

    service: str  # hubspot, sendgrid or google
    method: str
    path: str
    status: int
    body: Any = None


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Route = Callable[[re.Match[str], Any], Reply]


def _google_error(status: int, message: str, reason: str) -> Reply:
    error = {"code": status, "message": message, "errors": [{"reason": reason}]}
    return Reply(status, {"error": error})


class VendorState:
    """What the fake vendors hold: contacts, deals and calendar events, behind one lock."""

    def __init__(self, public_key: str) -> None:
        self.public_key = public_key
        self.lock = threading.Lock()
        self.records: list[Recorded] = []
        self.contacts: dict[str, str] = {}  # email -> contact id
        self.upserted_deals: dict[str, str] = {}  # unique property value -> deal id
        self.events: dict[str, dict[str, Any]] = {}  # event id -> event
        self.tokens: set[str] = set()
        self.ids = itertools.count(101)

    def routes(self) -> list[tuple[str, str, str, Route]]:
        """(service, method, path pattern, handler), tried in order."""
        calendar = r"/calendar/v3/calendars/(?P<cal>[^/]+)"
        return [
            ("google", "POST", r"/token", self.token),
            ("google", "POST", r"/calendar/v3/freeBusy", self.free_busy),
            ("google", "GET", calendar, self.calendar),
            ("google", "POST", calendar + r"/events", self.insert_event),
            ("google", "GET", calendar + r"/events/(?P<id>[^/]+)", self.get_event),
            ("google", "PATCH", calendar + r"/events/(?P<id>[^/]+)", self.patch_event),
            ("google", "DELETE", calendar + r"/events/(?P<id>[^/]+)", self.delete_event),
            ("hubspot", "GET", r"/crm/v3/objects/contacts", self.list_contacts),
            ("hubspot", "POST", r"/crm/v3/objects/contacts/batch/upsert", self.upsert_contacts),
            ("hubspot", "PATCH", r"/crm/v3/objects/contacts/(?P<id>\d+)", self.patch_object),
            ("hubspot", "POST", r"/crm/v3/objects/deals", self.create_deal),
            ("hubspot", "POST", r"/crm/v3/objects/deals/batch/upsert", self.upsert_deals),
            ("hubspot", "PATCH", r"/crm/v3/objects/deals/(?P<id>\d+)", self.patch_object),
            (
                "hubspot",
                "PUT",
                r"/crm/v4/objects/deals/(?P<deal>\d+)/associations/default/contacts/(?P<c>\d+)",
                self.associate,
            ),
            ("sendgrid", "POST", r"/v3/mail/send", self.send_mail),
            ("sendgrid", "GET", r"/v3/scopes", self.scopes),
        ]

    def authorised(self, service: str, path: str, authorization: str) -> bool:
        """Each vendor's own credential: the API keys, or a token bought at /token."""
        token = authorization.removeprefix("Bearer ").strip()
        if service == "hubspot":
            return token == CRM_KEY
        if service == "sendgrid":
            return token == EMAIL_KEY
        return path == "/token" or token in self.tokens

    # -- Google ---------------------------------------------------------------------------

    def token(self, match: re.Match[str], body: Any) -> Reply:
        """The JWT bearer grant: the assertion must be signed by the service account's key."""
        form = body if isinstance(body, dict) else {}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return Reply(400, {"error": "unsupported_grant_type"})
        try:
            claims = jwt.decode(
                str(form.get("assertion", "")),
                self.public_key,
                algorithms=["RS256"],
                options={"verify_aud": False},
            )
        except jwt.JWTError as exc:
            return Reply(400, {"error": "invalid_grant", "error_description": str(exc)})
        if claims.get("iss") != CLIENT_EMAIL:
            return Reply(400, {"error": "invalid_grant", "error_description": "unknown issuer"})
        token = f"ya29.eval-{uuid.uuid4().hex}"
        self.tokens.add(token)
        return Reply(200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"})

    def free_busy(self, match: re.Match[str], body: Any) -> Reply:
        """Always free: every slot Parley finds is offered."""
        items = body.get("items", []) if isinstance(body, dict) else []
        calendars = {item.get("id", ""): {"busy": []} for item in items}
        return Reply(200, {"kind": "calendar#freeBusy", "calendars": calendars})

    def calendar(self, match: re.Match[str], body: Any) -> Reply:
        return Reply(200, {"id": unquote(match["cal"]), "timeZone": "UTC"})

    def insert_event(self, match: re.Match[str], body: Any) -> Reply:
        event = dict(body) if isinstance(body, dict) else {}
        event_id = str(event.get("id") or uuid.uuid4().hex)
        known = self.events.get(event_id)
        if known is not None:
            return _google_error(409, "The requested identifier already exists.", "duplicate")
        event.update(
            id=event_id,
            status="confirmed",
            htmlLink=f"https://calendar.example/event?eid={event_id}",
        )
        self.events[event_id] = event
        return Reply(200, event)

    def get_event(self, match: re.Match[str], body: Any) -> Reply:
        event = self.events.get(match["id"])
        if event is None:
            return _google_error(404, "Not Found", "notFound")
        return Reply(200, event)

    def patch_event(self, match: re.Match[str], body: Any) -> Reply:
        event = self.events.get(match["id"])
        if event is None:
            return _google_error(404, "Not Found", "notFound")
        event.update(body if isinstance(body, dict) else {})
        return Reply(200, event)

    def delete_event(self, match: re.Match[str], body: Any) -> Reply:
        event = self.events.get(match["id"])
        if event is None or event.get("status") == "cancelled":
            return _google_error(410, "Resource has been deleted", "deleted")
        event["status"] = "cancelled"
        return Reply(204)

    # -- HubSpot --------------------------------------------------------------------------

    def list_contacts(self, match: re.Match[str], body: Any) -> Reply:
        return Reply(200, {"results": []})

    def upsert_contacts(self, match: re.Match[str], body: Any) -> Reply:
        results = []
        for item in body.get("inputs", []) if isinstance(body, dict) else []:
            email = str(item.get("id", "")).lower()
            new = email not in self.contacts
            contact_id = self.contacts.setdefault(email, str(next(self.ids)))
            props = item.get("properties", {})
            results.append({"id": contact_id, "new": new, "properties": props})
        if not results:
            return Reply(400, {"category": "VALIDATION_ERROR", "message": "no inputs"})
        return Reply(200, {"status": "COMPLETE", "results": results})

    def create_deal(self, match: re.Match[str], body: Any) -> Reply:
        props = body.get("properties", {}) if isinstance(body, dict) else {}
        return Reply(201, {"id": str(next(self.ids)), "properties": props})

    def upsert_deals(self, match: re.Match[str], body: Any) -> Reply:
        results = []
        for item in body.get("inputs", []) if isinstance(body, dict) else []:
            key = str(item.get("id", ""))
            new = key not in self.upserted_deals
            deal_id = self.upserted_deals.setdefault(key, str(next(self.ids)))
            results.append({"id": deal_id, "new": new, "properties": item.get("properties", {})})
        return Reply(200, {"status": "COMPLETE", "results": results})

    def patch_object(self, match: re.Match[str], body: Any) -> Reply:
        props = body.get("properties", {}) if isinstance(body, dict) else {}
        return Reply(200, {"id": match["id"], "properties": props})

    def associate(self, match: re.Match[str], body: Any) -> Reply:
        result = {"fromObjectId": match["deal"], "toObjectId": match["c"]}
        return Reply(200, {"status": "COMPLETE", "results": [result]})

    # -- SendGrid -------------------------------------------------------------------------

    def send_mail(self, match: re.Match[str], body: Any) -> Reply:
        if not isinstance(body, dict) or not body.get("personalizations"):
            errors = [{"field": "personalizations", "message": "required"}]
            return Reply(400, {"errors": errors})
        return Reply(202, None, {"X-Message-Id": f"eval-{uuid.uuid4().hex[:16]}"})

    def scopes(self, match: re.Match[str], body: Any) -> Reply:
        return Reply(200, {"scopes": ["mail.send"]})


def _handler(state: VendorState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the vendors' own servers do

        def log_message(self, format: str, *args: Any) -> None:  # quiet: requests are recorded
            return

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            kind = self.headers.get("Content-Type", "")
            if kind.startswith("application/x-www-form-urlencoded"):
                return {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            try:
                return json.loads(raw) if raw else None
            except ValueError:
                return raw.decode(errors="replace")

        def _answer(self) -> None:
            path = urlsplit(self.path).path
            body = self._body()
            service, reply = "unknown", Reply(404, {"message": f"no route for {path}"})
            with state.lock:
                for name, method, pattern, route in state.routes():
                    match = re.fullmatch(pattern, path)
                    if method != self.command or match is None:
                        continue
                    service = name
                    auth = self.headers.get("Authorization", "")
                    if not state.authorised(name, path, auth):
                        reply = Reply(401, {"message": "authentication credentials not valid"})
                    else:
                        reply = route(match, body)
                    break
                state.records.append(Recorded(service, self.command, path, reply.status, body))
            payload = json.dumps(reply.body).encode() if reply.body is not None else b""
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if payload:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    return Handler


def _rsa_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


class VendorDouble:
    """The three vendors on one free 127.0.0.1 port, served from a thread."""

    def __init__(self) -> None:
        self._private_key, public_key = _rsa_pair()
        self.state = VendorState(public_key)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the double first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "VendorDouble":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "VendorDouble":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def mark(self) -> int:
        """A position in the request log; `since(mark)` is what came after it."""
        with self.state.lock:
            return len(self.state.records)

    def since(self, mark: int) -> list[Recorded]:
        with self.state.lock:
            return list(self.state.records[mark:])

    def service_account(self) -> str:
        """A service-account key file's JSON whose token endpoint is this double."""
        account = {
            "type": "service_account",
            "client_email": CLIENT_EMAIL,
            "private_key_id": "eval-key",
            "private_key": self._private_key,
            "token_uri": f"{self.base_url}/token",
        }
        return json.dumps(account)

    def parley_env(self) -> dict[str, str]:
        """Settings that point Parley's three clients here, with hours open all week and day,
        so a slot is always on offer."""
        return {
            "CRM_API_KEY": CRM_KEY,
            "HUBSPOT_BASE_URL": self.base_url,
            "EMAIL_API_KEY": EMAIL_KEY,
            "EMAIL_FROM": EMAIL_FROM,
            "SALES_INBOX": SALES_INBOX,
            "SENDGRID_BASE_URL": self.base_url,
            "CALENDAR_API_KEY": self.service_account(),
            "GOOGLE_CALENDAR_ID": CALENDAR_ID,
            "GOOGLE_CALENDAR_BASE_URL": self.base_url,
            "BUSINESS_TIME_ZONE": "UTC",
            "BUSINESS_DAYS": "0,1,2,3,4,5,6",
            "BUSINESS_HOURS_START": "00:00",
            "BUSINESS_HOURS_END": "23:59",
            "MEETING_MIN_NOTICE_MINUTES": "0",
        }


# -- reading the log ------------------------------------------------------------------------

_EVENTS_PATH = re.compile(r"/calendar/v3/calendars/[^/]+/events")


def calendar_inserts(records: list[Recorded]) -> int:
    """Events created: an insert the calendar accepted (a 409 duplicate is not one)."""
    return sum(
        1
        for r in records
        if r.method == "POST" and _EVENTS_PATH.fullmatch(r.path) and 200 <= r.status < 300
    )


def mail_recipients(records: list[Recorded]) -> list[str]:
    """Every address a sent mail went to (to, cc and bcc), lower-cased."""
    found: list[str] = []
    for r in records:
        if r.path != "/v3/mail/send" or r.status != 202 or not isinstance(r.body, dict):
            continue
        for part in r.body.get("personalizations", []):
            for kind in ("to", "cc", "bcc"):
                found += [str(a.get("email", "")).lower() for a in part.get(kind, [])]
    return found


def crm_writes(records: list[Recorded]) -> int:
    """HubSpot writes that succeeded (contacts, deals, associations)."""
    writes = (r for r in records if r.service == "hubspot" and r.method != "GET")
    return sum(1 for r in writes if r.status < 300)
