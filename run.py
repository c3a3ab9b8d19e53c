"""Start Parley: `python run.py [--host H] [--port P] [--reload] [--workers N]`.

`python run.py migrate` applies the pending Postgres migrations (migrations/*.sql) to
DATABASE_URL and exits.
"""

import argparse
import asyncio
import logging
import sys

import uvicorn

from app.config import Settings


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


def main() -> None:
    settings = Settings()
    parser = argparse.ArgumentParser(description="Run the Parley server.")
    parser.add_argument(
        "command",
        nargs="?",
        choices=["serve", "migrate"],
        default="serve",
        help="serve (the default) or migrate (apply migrations/*.sql to DATABASE_URL)",
    )
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--reload", action="store_true", help="restart on code changes")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if args.command == "migrate":
        sys.exit(migrate(settings))
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
    )


if __name__ == "__main__":
    main()
