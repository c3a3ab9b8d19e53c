"""Supabase's REST API (PostgREST) as the REST store reads and writes it: the client, its
errors sorted into outages and refusals, and lists read page by page."""

from collections.abc import Callable
from typing import Any

import httpx
from postgrest import APIError, APIResponse, ReturnMethod
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from app.errors import StoreUnavailable
from app.store.migrate import migration_files
from app.store.rows import from_row

# Errors that mean "the database cannot be reached now" rather than "the request is
# wrong": PostgREST's connection errors (PGRST000-003), Postgres shutting down or out of
# connections, and gateway statuses (postgrest-py reports a non-JSON error by its status).
TRANSIENT_CODES = frozenset(
    {"PGRST000", "PGRST001", "PGRST002", "PGRST003", "57P01", "57P02", "57P03", "53300"}
    | {"500", "502", "503", "504", "520", "521", "522", "523", "524"}
)
MINIMAL = ReturnMethod.minimal
# Supabase's PostgREST returns at most this many rows per request (its `max-rows`), so
# lists are read page by page, each in a fully determined order.
PAGE = 1000


class SupabaseError(RuntimeError):
    """PostgREST refused a request (a wrong key, a missing table, a constraint)."""


def _is_transient(exc: APIError) -> bool:
    return (exc.code or "") in TRANSIENT_CODES or (exc.code or "").startswith("08")


class Postgrest:
    """The connection of the REST store: requests, their errors, pages of rows."""

    name: str

    def __init__(self, url: str, key: str, timeout: float = 10.0) -> None:
        self.url = url
        self.key = key
        self.timeout = timeout
        self._client: AsyncClient | None = None
        self._http: httpx.AsyncClient | None = None

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            raise RuntimeError(f"{type(self).__name__} used before open()")
        return self._client

    async def open(self) -> None:
        self._http = httpx.AsyncClient(timeout=self.timeout, http2=True, follow_redirects=True)
        options = AsyncClientOptions(
            httpx_client=self._http,
            # Failures surface at once as StoreUnavailable; the run manager decides.
            postgrest_client_retry=False,
            auto_refresh_token=False,
            persist_session=False,
        )
        self._client = await acreate_client(self.url, self.key, options)
        await self._check_migrations()

    async def _check_migrations(self) -> None:
        try:
            rows = await self._data(self._table("parley_migrations").select("version"))
        except SupabaseError as exc:
            raise SupabaseError(
                f"The Supabase database has no Parley schema ({exc}); apply migrations/*.sql "
                "first: `DATABASE_URL=<its Postgres URL> python run.py migrate`, or psql."
            ) from exc
        missing = {p.stem for p in migration_files()} - {r["version"] for r in rows}
        if missing:
            raise SupabaseError(
                f"The Supabase database lacks migrations {sorted(missing)}; apply them with "
                "`DATABASE_URL=<its Postgres URL> python run.py migrate` (or psql)."
            )

    async def close(self) -> None:
        self._client = None
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    async def ping(self) -> None:
        if self._client is None:
            raise StoreUnavailable(f"the {self.name} store is closed")
        await self._data(self._table("conversations").select("id").limit(1))

    def _table(self, name: str) -> Any:
        return self.client.table(name)

    async def _execute(self, query: Any) -> APIResponse:
        try:
            return await query.execute()
        except httpx.TransportError as exc:
            raise StoreUnavailable(f"Supabase is unreachable: {exc!r}") from exc
        except APIError as exc:
            if _is_transient(exc):
                raise StoreUnavailable(
                    f"Supabase cannot reach its database: {exc.message}"
                ) from exc
            raise SupabaseError(f"Supabase refused the request: {exc.code} {exc.message}") from exc

    async def _data(self, query: Any) -> Any:
        return (await self._execute(query)).data

    async def _rpc(self, function: str, params: dict[str, Any]) -> Any:
        """Call one of the SQL functions of migrations/: one transaction."""
        return await self._data(self.client.rpc(function, params))

    async def _pages(
        self, build: Callable[[], Any], limit: int | None = None, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int | None]:
        """The rows of `build()` (a query with its order): all of them, or `limit` from
        `offset`, read PAGE at a time; and the count PostgREST gave, if one was asked."""
        rows: list[dict[str, Any]] = []
        count = None
        while limit is None or len(rows) < limit:
            size = PAGE if limit is None else min(PAGE, limit - len(rows))
            start = offset + len(rows)
            response = await self._execute(build().range(start, start + size - 1))
            count = response.count if count is None else count
            rows += [from_row(r) for r in response.data]
            if len(response.data) < size:
                break
        return rows, count

    async def _all(self, build: Callable[[], Any], limit: int | None = None) -> list[dict]:
        return (await self._pages(build, limit))[0]

    async def _select(
        self,
        table: str,
        filters: dict[str, Any],
        order: tuple[str, ...],
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """The rows whose columns equal the given (not None) filters, in `order` (each
        `column` or `column desc`)."""

        def build() -> Any:
            query = self._filtered(self._table(table).select("*"), filters)
            for column in order:
                name, _, direction = column.partition(" ")
                query = query.order(name, desc=direction == "desc")
            return query

        return await self._all(build, limit)

    async def _one(self, table: str, column: str, value: str) -> dict[str, Any] | None:
        data = await self._data(self._table(table).select("*").eq(column, value))
        return from_row(data[0]) if data else None

    @staticmethod
    def _filtered(query: Any, filters: dict[str, Any]) -> Any:
        for column, value in filters.items():
            if value is not None:
                query = query.eq(column, value)
        return query
