"""Who may do what: operators (JWT, or loopback), sites (site keys and origins) and
visitors (conversation tokens). The rules only; `app/api/callers.py` reads them off
requests and sockets."""

from app.security.access import Caller, Security
from app.security.operators import Operator, issue_token
from app.security.sites import cors_origins

__all__ = ["Caller", "Operator", "Security", "cors_origins", "issue_token"]
