"""Durable storage behind one protocol: SQLite (embedded default), Postgres, Supabase REST."""

from app.config import Settings
from app.errors import StoreUnavailable
from app.store.base import Store
from app.store.sqlite import SQLiteStore

__all__ = ["SQLiteStore", "Store", "StoreUnavailable", "create_store"]


def create_store(settings: Settings) -> Store:
    """DATABASE_URL: Postgres (asyncpg); else SUPABASE_URL + SUPABASE_KEY: Supabase's REST
    API; else the SQLite file under DATA_DIR."""
    if settings.database_url:
        from app.store.postgres import PostgresStore

        return PostgresStore(
            settings.database_url,
            statement_cache_size=settings.database_statement_cache_size,
            min_size=settings.database_pool_min_size,
            max_size=settings.database_pool_max_size,
            connect_timeout=settings.database_connect_timeout_seconds,
            migrate=settings.migrate_on_start,
        )
    if settings.supabase_url or settings.supabase_key:
        if not (settings.supabase_url and settings.supabase_key):
            raise ValueError(
                "The Supabase REST store needs both SUPABASE_URL and SUPABASE_KEY "
                "(the service_role key); set both, or DATABASE_URL instead."
            )
        from app.store.supabase_rest import SupabaseRestStore

        return SupabaseRestStore(settings.supabase_url, settings.supabase_key)
    return SQLiteStore(settings.sqlite_path)
