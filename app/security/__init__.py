"""Who may do what: operators (JWT, or loopback), sites (site keys and origins) and
visitors (conversation tokens)."""

from app.security.access import Caller, ChatCallerDep, Security
from app.security.operators import OPERATOR_ONLY, Operator, OperatorDep, issue_token
from app.security.sites import cors_origins

__all__ = [
    "OPERATOR_ONLY",
    "Caller",
    "ChatCallerDep",
    "Operator",
    "OperatorDep",
    "Security",
    "cors_origins",
    "issue_token",
]
