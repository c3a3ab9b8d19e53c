"""Every use case of the server, in one object the routes reach."""

import httpx

from app.service.approvals import Approvals
from app.service.conversations import Conversations
from app.service.leads import Leads
from app.service.parts import Parts
from app.service.status import Status
from app.service.turns import Turns
from app.service.webhooks import Webhooks
from app.service.workflows import Workflows


class Parley:
    def __init__(self, parts: Parts, http: httpx.AsyncClient) -> None:
        self.turns = Turns(parts)
        self.conversations = Conversations(parts)
        self.workflows = Workflows(parts)
        self.approvals = Approvals(parts)
        self.leads = Leads(parts, self.turns)
        self.status = Status(parts, http)
        self.webhooks = Webhooks(parts)
