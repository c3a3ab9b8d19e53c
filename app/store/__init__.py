"""Durable storage behind one protocol; SQLite is the embedded default."""

from app.config import Settings
from app.store.base import Store, StoreUnavailable
from app.store.sqlite import SQLiteStore

__all__ = ["SQLiteStore", "Store", "StoreUnavailable", "create_store"]


def create_store(settings: Settings) -> Store:
    """The store the settings ask for (Postgres and Supabase REST arrive with their issue)."""
    if settings.database_url or settings.supabase_url:
        raise ValueError(
            "DATABASE_URL / SUPABASE_URL are not supported by this version yet; "
            "unset them to use the embedded SQLite store."
        )
    return SQLiteStore(settings.sqlite_path)
