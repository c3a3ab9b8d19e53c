"""Start Parley: `python run.py [--host H] [--port P] [--reload] [--workers N]`.

`python run.py migrate` applies the pending Postgres migrations (migrations/*.sql) to
DATABASE_URL and exits.

`python run.py token [--role operator] [--minutes 60] [--subject NAME]` prints an operator
token signed with JWT_SECRET (with JWT_AUDIENCE as its audience when set).
"""

import argparse
import asyncio
import sys

import uvicorn

from app.config import Settings
from app.observability.logs import configure_logging, logging_config


def migrate(settings: Settings) -> int:
    if not settings.database_url:
        print("DATABASE_URL is not set: nothing to migrate (SQLite migrates itself).")
        return 2
    from app.store.migrate import migrate as apply
    from app.store.postgres import normalize_dsn, statement_cache_size_for

    dsn = normalize_dsn(settings.database_url)
    cache = statement_cache_size_for(dsn, settings.database_statement_cache_size)
    timeout = settings.database_connect_timeout_seconds
    applied = asyncio.run(apply(dsn, statement_cache_size=cache, timeout=timeout))
    print(f"applied: {', '.join(applied)}" if applied else "the database is up to date")
    return 0


def token(settings: Settings, role: str, minutes: float, subject: str) -> int:
    if not settings.jwt_secret:
        print(
            "JWT_SECRET is not set: without it operators are the clients on this machine "
            "(loopback), and no token is needed or accepted.",
            file=sys.stderr,
        )
        return 2
    from app.security import issue_token

    print(issue_token(settings.jwt_secret, role, minutes, subject, settings.jwt_audience))
    return 0


def main() -> None:
    settings = Settings()
    parser = argparse.ArgumentParser(description="Run the Parley server.")
    parser.add_argument(
        "command",
        nargs="?",
        choices=["serve", "migrate", "token"],
        default="serve",
        help="serve (the default), migrate (apply migrations/*.sql to DATABASE_URL) or "
        "token (print an operator token signed with JWT_SECRET)",
    )
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--reload", action="store_true", help="restart on code changes")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--role", choices=["operator", "service_role"], default="operator", help="token: role"
    )
    parser.add_argument("--minutes", type=float, default=60, help="token: lifetime")
    parser.add_argument("--subject", default="operator", help="token: who it is for (sub)")
    args = parser.parse_args()
    configure_logging(settings)
    if args.command == "migrate":
        sys.exit(migrate(settings))
    if args.command == "token":
        sys.exit(token(settings, args.role, args.minutes, args.subject))
    if args.workers > 1 and not (
        settings.redis_url and (settings.database_url or settings.supabase_url)
    ):
        parser.error(
            "--workers > 1 needs REDIS_URL (shared events, stops and locks) and DATABASE_URL "
            "or SUPABASE_URL (a shared store): each worker is a separate process."
        )
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        reload=args.reload,
        workers=args.workers,
        log_level=settings.log_level,
        log_config=logging_config(settings),  # applied again in each worker
        # Running replies get SHUTDOWN_GRACE_SECONDS before uvicorn shuts down (see
        # app/api/shutdown.py); this bounds what is left after them.
        timeout_graceful_shutdown=settings.shutdown_grace_seconds + 5,
        # Frames past MAX_WS_FRAME_BYTES get an error frame; far larger ones (4x) close
        # the socket (1009) before they are buffered whole.
        ws_max_size=4 * settings.max_ws_frame_bytes,
        # A request head over MAX_HEADER_BYTES is refused (431) by the HTTP parser, before it
        # is buffered whole: uvicorn's own cap is h11's, so the httptools protocol it runs by
        # default is given the same cap (app/api/header_limit.py).
        http="app.api.header_limit:HeaderLimitedHTTP",
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )


if __name__ == "__main__":
    main()
