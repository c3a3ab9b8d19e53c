"""A loopback double of Supabase's REST API: the part of PostgREST's documented grammar the
REST store uses, executed on a real Postgres that holds the real migrations.

Mounted with respx, it answers what postgrest-py sends: `GET/POST/PATCH/DELETE
/rest/v1/<table>` with `select`, `order`, `limit`, `offset`, `on_conflict`, `columns` and
column filters (`eq`, `neq`, `gt`, `gte`, `lt`, `lte`, `in`, `is`), the Prefer header
(`return=`, `count=exact`, `resolution=`), and `POST /rest/v1/rpc/<function>`. Like
PostgREST, it runs each request in a transaction as the role of the API key (`SET LOCAL
ROLE`), so grants and Row Level Security apply, and it maps Postgres errors to PostgREST's
JSON error body and status. Anything outside this grammar is a 400, so the store cannot
rely on something this double does not check. Every request is kept in `requests`.
"""

import json
import re
from typing import Any

import asyncpg
import httpx

FILTER_OPS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
RESERVED = {"select", "order", "limit", "offset", "on_conflict", "columns"}
NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _ident(name: str) -> str:
    if not NAME.match(name):
        raise Refused(400, "PGRST100", f'"{name}" is not a column name')
    return f'"{name}"'


def _prefer(request: httpx.Request) -> dict[str, str]:
    prefs: dict[str, str] = {}
    for value in request.headers.get_list("prefer", split_commas=True):
        key, _, setting = value.strip().partition("=")
        prefs[key] = setting
    return prefs


def _in_values(raw: str) -> list[str]:
    if not (raw.startswith("(") and raw.endswith(")")):
        raise Refused(400, "PGRST100", f"malformed in filter: {raw}")
    values, current, quoted, escaped = [], "", False, False
    for char in raw[1:-1]:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            values.append(current)
            current = ""
        else:
            current += char
    values.append(current)
    return values


class PostgrestDouble:
    def __init__(self, dsn: str, keys: dict[str, str]) -> None:
        self.dsn = dsn
        self.keys = keys  # API key -> Postgres role
        self.requests: list[httpx.Request] = []
        self._pool: asyncpg.Pool | None = None
        self._columns: dict[str, dict[str, str]] = {}

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        try:
            role = self._role(request)
            if self._pool is None:
                self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4)
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(f"SET LOCAL ROLE {role}")
                return await self._handle(conn, request)
        except Refused as exc:
            return self._error(exc.status, exc.code, exc.message)
        except asyncpg.PostgresError as exc:
            code = exc.sqlstate or "XX000"
            status = {"42501": 403 if role != "anon" else 401, "23505": 409, "23503": 409}.get(
                code, 404 if code == "42P01" else 400
            )
            return self._error(status, code, str(exc))

    @staticmethod
    def _error(status: int, code: str, message: str) -> httpx.Response:
        body = {"code": code, "details": None, "hint": None, "message": message}
        return httpx.Response(status, json=body)

    def _role(self, request: httpx.Request) -> str:
        key = request.headers.get("apikey")
        if key not in self.keys:
            raise Refused(401, "PGRST301", "Invalid API key")
        if request.headers.get("authorization") != f"Bearer {key}":
            raise Refused(401, "PGRST301", "The Authorization header does not carry the key")
        for header in ("accept-profile", "content-profile"):
            if request.headers.get(header, "public") != "public":
                raise Refused(406, "PGRST106", "Only the public schema is exposed")
        return self.keys[key]

    async def _handle(self, conn: asyncpg.Connection, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/rest/v1/")
        if path.startswith("rpc/"):
            if request.method != "POST":
                raise Refused(405, "PGRST101", "Only POST calls functions here")
            return await self._rpc(conn, path.removeprefix("rpc/"), json.loads(request.content))
        table = path
        columns = await self._table_columns(conn, table)
        where, args = self._where(request, columns)
        prefer = _prefer(request)
        if request.method == "GET":
            return await self._select(conn, request, table, columns, where, args, prefer)
        body = json.loads(request.content) if request.content else None
        if request.method == "POST":
            return await self._insert(conn, request, table, columns, body, prefer)
        returning = " RETURNING *" if prefer.get("return") == "representation" else ""
        if request.method == "PATCH":
            if not isinstance(body, dict):
                raise Refused(400, "PGRST102", "PATCH takes one JSON object")
            names = ", ".join(_ident(c) for c in body)
            sql = (
                f'UPDATE "{table}" SET ({names}) = (SELECT {names} FROM '
                f'json_populate_record(NULL::"{table}", ${len(args) + 1}::json)){where}{returning}'
            )
            args.append(json.dumps(body))
        elif request.method == "DELETE":
            sql = f'DELETE FROM "{table}"{where}{returning}'
        else:
            raise Refused(405, "PGRST117", f"{request.method} is not supported")
        return await self._written(conn, sql, args, returning, ok=200)

    async def _table_columns(self, conn: asyncpg.Connection, table: str) -> dict[str, str]:
        if table not in self._columns:
            rows = await conn.fetch(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type "
                "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                "WHERE c.relname = $1 AND c.relnamespace = 'public'::regnamespace "
                "AND a.attnum > 0 AND NOT a.attisdropped",
                table,
            )
            if not rows:
                raise Refused(
                    404,
                    "PGRST205",
                    f"Could not find the table 'public.{table}' in the schema cache",
                )
            self._columns[table] = {r["attname"]: r["type"] for r in rows}
        return self._columns[table]

    def _where(self, request: httpx.Request, columns: dict[str, str]) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        for name, raw in request.url.params.multi_items():
            if name in RESERVED:
                continue
            if name not in columns:
                raise Refused(400, "42703", f"column {name} does not exist")
            op, _, value = raw.partition(".")
            column, kind = _ident(name), columns[name]
            if op in FILTER_OPS:
                args.append(value)
                clauses.append(f"{column} {FILTER_OPS[op]} CAST(${len(args)}::text AS {kind})")
            elif op == "in":
                args.append(_in_values(value))
                clauses.append(f"{column} = ANY(CAST(${len(args)}::text[] AS {kind}[]))")
            elif op == "is" and value in ("null", "true", "false"):
                clauses.append(f"{column} IS {value.upper()}")
            else:
                raise Refused(400, "PGRST100", f"unsupported filter {name}={raw}")
        return (f" WHERE {' AND '.join(clauses)}" if clauses else ""), args

    async def _select(
        self,
        conn: asyncpg.Connection,
        request: httpx.Request,
        table: str,
        columns: dict[str, str],
        where: str,
        args: list[Any],
        prefer: dict[str, str],
    ) -> httpx.Response:
        params = request.url.params
        wanted = params.get("select", "*")
        if wanted == "*":
            select = "*"
        else:
            select = ", ".join(_ident(c) for c in wanted.split(","))
            for c in wanted.split(","):
                if c not in columns:
                    raise Refused(400, "42703", f"column {table}.{c} does not exist")
        order = ""
        if "order" in params:
            terms = []
            for term in params["order"].split(","):
                name, *modifiers = term.split(".")
                if name not in columns or not set(modifiers) <= {
                    "asc",
                    "desc",
                    "nullsfirst",
                    "nullslast",
                }:
                    raise Refused(400, "PGRST100", f"malformed order term {term}")
                words = [m.replace("nulls", "NULLS ").upper() for m in modifiers]
                terms.append(" ".join([_ident(name), *words]))
            order = " ORDER BY " + ", ".join(terms)
        offset = int(params.get("offset", "0"))
        limit = f" LIMIT {int(params['limit'])}" if "limit" in params else ""
        sql = f'SELECT {select} FROM "{table}"{where}{order}{limit} OFFSET {offset}'
        rows = await conn.fetchval(f"SELECT coalesce(json_agg(t), '[]') FROM ({sql}) t", *args)
        found = json.loads(rows)
        headers = {"content-type": "application/json; charset=utf-8"}
        if prefer.get("count") == "exact":
            total = await conn.fetchval(f'SELECT count(*) FROM "{table}"{where}', *args)
            span = f"{offset}-{offset + len(found) - 1}" if found else "*"
            headers["content-range"] = f"{span}/{total}"
        else:
            headers["content-range"] = f"{offset}-{offset + len(found) - 1}/*" if found else "*/*"
        return httpx.Response(200, content=json.dumps(found).encode(), headers=headers)

    async def _insert(
        self,
        conn: asyncpg.Connection,
        request: httpx.Request,
        table: str,
        columns: dict[str, str],
        body: Any,
        prefer: dict[str, str],
    ) -> httpx.Response:
        rows = body if isinstance(body, list) else [body]
        if not rows or not all(isinstance(r, dict) for r in rows):
            raise Refused(400, "PGRST102", "POST takes a JSON object or an array of them")
        given = request.url.params.get("columns")
        names = (
            [n.strip('"') for n in given.split(",")]
            if given
            else list(dict.fromkeys(k for r in rows for k in r))
        )
        for name in names:
            if name not in columns:
                raise Refused(400, "PGRST204", f"Could not find the '{name}' column of '{table}'")
        cols = ", ".join(_ident(n) for n in names)
        sql = (
            f'INSERT INTO "{table}" ({cols}) SELECT {cols} '
            f'FROM json_populate_recordset(NULL::"{table}", $1::json)'
        )
        resolution = prefer.get("resolution")
        if resolution:
            target = request.url.params.get("on_conflict") or ",".join(
                await self._primary_key(conn, table)
            )
            conflict = ", ".join(_ident(c) for c in target.split(","))
            if resolution == "ignore-duplicates":
                sql += f" ON CONFLICT ({conflict}) DO NOTHING"
            elif resolution == "merge-duplicates":
                updates = ", ".join(f"{_ident(n)} = excluded.{_ident(n)}" for n in names)
                sql += f" ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
            else:
                raise Refused(400, "PGRST100", f"unknown resolution {resolution}")
        returning = " RETURNING *" if prefer.get("return") == "representation" else ""
        return await self._written(conn, sql + returning, [json.dumps(rows)], returning, ok=201)

    async def _primary_key(self, conn: asyncpg.Connection, table: str) -> list[str]:
        rows = await conn.fetch(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::regclass AND i.indisprimary",
            f"public.{table}",
        )
        return [r["attname"] for r in rows]

    @staticmethod
    async def _written(
        conn: asyncpg.Connection, sql: str, args: list[Any], returning: str, ok: int
    ) -> httpx.Response:
        if not returning:
            await conn.execute(sql, *args)
            return httpx.Response(201 if ok == 201 else 204)
        rows = await conn.fetchval(
            f"WITH written AS ({sql}) SELECT coalesce(json_agg(written), '[]') FROM written", *args
        )
        return httpx.Response(
            ok, content=rows.encode(), headers={"content-type": "application/json"}
        )

    async def _rpc(
        self, conn: asyncpg.Connection, function: str, params: dict[str, Any]
    ) -> httpx.Response:
        _ident(function)
        signature = await conn.fetchrow(
            "SELECT p.proargnames AS names, "
            "array(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) AS t) AS types "
            "FROM pg_proc p WHERE p.proname = $1 AND p.pronamespace = 'public'::regnamespace",
            function,
        )
        if signature is None:
            raise Refused(
                404,
                "PGRST202",
                f"Could not find the function public.{function} in the schema cache",
            )
        types = dict(zip(signature["names"], signature["types"], strict=True))
        if unknown := set(params) - set(types):
            raise Refused(404, "PGRST202", f"{function} has no parameter {sorted(unknown)}")
        named = []
        for name in params:
            kind = types[name]
            take = "->" if kind in ("json", "jsonb") else "->>"
            named.append(f"{_ident(name)} => CAST($1::json {take} '{name}' AS {kind})")
        result = await conn.fetchval(
            f"SELECT to_json({_ident(function)}({', '.join(named)}))", json.dumps(params)
        )
        return httpx.Response(
            200, content=(result or "null").encode(), headers={"content-type": "application/json"}
        )
