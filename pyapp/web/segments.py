"""/v3/segments: audience definitions (ODP calls them segments), private keys only.

A passthrough segment's definition is ``{"external": {"external_audience_id": "..."}}``, with an optional
``ttl_seconds`` (membership expiry, sql/functions/100_expiry.sql). This module
reads that shape out of the request body (unknown definition kinds and fields are refused, naming
the field) and hands the values to the SQL functions, which own every rule about them: segment ids
(``[a-z0-9_]+``), lengths, conflicts, revisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from psycopg.types.json import Jsonb
from starlette.requests import Request

from pyapp.web.auth import Scope, authorized_connection, authorized_read, require_scope
from pyapp.jsontypes import json_type
from pyapp.web.body import read_json_body
from pyapp.web.config import ApiConfig
from pyapp.web.database import connection
from pyapp.feed import iso_utc
from pyapp.web.responses import ApiError, JSONResponse

EXTERNAL_KIND = "external"
BODY_FIELDS = ("definition", "description", "metadata", "ttl_seconds", "revision")  # revision is read-only, ignored
EXTERNAL_FIELDS = ("external_audience_id",)
# SQL's page size (NULL: its default), and SQL says where the next page starts
LIST_PAGE_SQL = (
    "SELECT p.has_next_page, p.next_after, l.name FROM passthrough.audience_page_info(NULL, %(after)s) p "
    "LEFT JOIN passthrough.list_audiences(NULL, %(after)s) WITH ORDINALITY l ON true ORDER BY l.ordinality"
)
CREATE_SQL = "SELECT passthrough.create_audience(%s, %s, %s, %s, %s)"
PUT_SQL = "SELECT passthrough.put_audience(%s, %s, %s, %s, %s, %s)"
VALIDATE_SQL = "SELECT passthrough.validate_audience(%s, %s, %s, %s, %s)"


@dataclass(frozen=True)
class SegmentInput:
    external_audience_id: str | None
    description: str | None
    metadata: Any
    ttl_seconds: int | None
    ttl_given: bool  # the body named ttl_seconds (null included)

    def sql_args(self, segment_id: str) -> tuple[Any, ...]:
        ttl = None if self.ttl_seconds is None else timedelta(seconds=self.ttl_seconds)
        return (segment_id, self.external_audience_id, self.description, Jsonb(self.metadata, dumps=_dumps), ttl)


async def list_segments(request: Request) -> JSONResponse:
    segment_ids: list[str] = []
    # the key checked on the same connection, or on the primary when the listing reads a replica (auth.py)
    async with authorized_read(request, Scope.PRIVATE) as (conn, _):
        async with conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")  # one snapshot
            after, more = None, True
            while more:
                cursor = await conn.execute(LIST_PAGE_SQL, {"after": after})
                page = await cursor.fetchall()
                segment_ids.extend(name for _, _, name in page if name is not None)
                more, after = page[0][0], page[0][1]
    return JSONResponse({"segment_ids": segment_ids})


async def get_segment(request: Request) -> JSONResponse:
    async with authorized_connection(request, Scope.PRIVATE) as (conn, _):
        cursor = await conn.execute(
            "SELECT name, external_audience_id, description, metadata, revision, is_ready, size, created_at,"
            " updated_at, ttl FROM passthrough.get_audience(%s)",
            (_segment_id(request),),
        )
        name, external_id, description, metadata, revision, is_ready, size, created_at, updated_at, ttl = (
            await cursor.fetchone()
        )
    return JSONResponse(
        {
            "segment_id": name,
            "revision": revision,
            "description": description,
            "metadata": metadata,
            "definition": {EXTERNAL_KIND: {"external_audience_id": external_id}},
            "is_ready": is_ready,
            "size": size,
            "ttl_seconds": None if ttl is None else int(ttl.total_seconds()),
            "created_at": iso_utc(created_at),
            "updated_at": iso_utc(updated_at),
        }
    )


async def create_segment(request: Request) -> JSONResponse:
    return await _save(request, CREATE_SQL)


async def put_segment(request: Request) -> JSONResponse:
    return await _save(request, PUT_SQL, put=True)


async def delete_segment(request: Request) -> JSONResponse:
    segment_id = _segment_id(request)
    async with authorized_connection(request, Scope.PRIVATE) as (conn, _):
        await conn.execute("SELECT passthrough.delete_audience(%s)", (segment_id,))
    return JSONResponse({"segment_id": segment_id, "deleted": True})


async def validate_segment(request: Request) -> JSONResponse:
    await require_scope(request, Scope.PRIVATE)  # before the body is read, on a connection of its own (auth.py)
    segment = await _read_segment(request)
    async with connection(request) as conn:
        await conn.execute(VALIDATE_SQL, segment.sql_args(_segment_id(request)))
    return JSONResponse({"segment_id": _segment_id(request), "valid": True})


async def _save(request: Request, save_sql: str, put: bool = False) -> JSONResponse:
    await require_scope(request, Scope.PRIVATE)
    segment = await _read_segment(request)
    args = segment.sql_args(_segment_id(request))
    if put:  # a PUT that leaves ttl_seconds out keeps the stored ttl; "ttl_seconds": null removes it
        args += (not segment.ttl_given,)
    async with connection(request) as conn:
        cursor = await conn.execute(save_sql, args)
        (revision,) = await cursor.fetchone()
    return JSONResponse({"revision": revision})


def _segment_id(request: Request) -> str:
    return request.path_params["segment_id"]


async def _read_segment(request: Request) -> SegmentInput:
    config: ApiConfig = request.app.state.config
    body = (await read_json_body(request, max_bytes=config.max_body_bytes)).value
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_audience", f"the body must be a JSON object, got {json_type(body)}")
    _refuse_unknown_fields(body, BODY_FIELDS, prefix="")
    description = body.get("description")
    if description is not None and not isinstance(description, str):
        raise _invalid_field("description", f"must be a string or null, got {json_type(description)}")
    ttl_seconds = body.get("ttl_seconds")
    if ttl_seconds is not None and (not isinstance(ttl_seconds, int) or isinstance(ttl_seconds, bool)):
        raise _invalid_field("ttl_seconds", f"must be a whole number of seconds or null, got {json_type(ttl_seconds)}")
    # the range is SQL's (passthrough._check_audience, PT007 naming ttl); only a number too large to send is refused here
    try:
        timedelta(seconds=ttl_seconds or 0)
    except OverflowError:
        raise _invalid_field("ttl_seconds", f"must be a number of seconds an interval can hold, got {ttl_seconds}") from None
    return SegmentInput(
        external_audience_id=_external_audience_id(body.get("definition")),
        description=description,
        metadata=body.get("metadata", {}),
        ttl_seconds=ttl_seconds,
        ttl_given="ttl_seconds" in body,
    )


def _external_audience_id(definition: Any) -> str | None:
    """The external audience id of {"external": {"external_audience_id": ...}}; None when absent."""
    if definition is None:
        return None
    if not isinstance(definition, dict):
        raise _invalid_field(
            "definition",
            f'must be an object like {{"external": {{"external_audience_id": "..."}}}}, got {json_type(definition)}',
        )
    for kind in definition:
        if kind != EXTERNAL_KIND:
            raise _invalid_field(
                f"definition.{kind}",
                f"unknown definition kind {kind!r}: passthrough segments are defined as "
                '{"external": {"external_audience_id": "..."}}',
            )
    external = definition.get(EXTERNAL_KIND)
    if external is None:
        return None
    if not isinstance(external, dict):
        raise _invalid_field("definition.external", f"must be an object, got {json_type(external)}")
    _refuse_unknown_fields(external, EXTERNAL_FIELDS, prefix="definition.external.")
    external_id = external.get("external_audience_id")
    if external_id is not None and not isinstance(external_id, str):
        raise _invalid_field(
            "definition.external.external_audience_id", f"must be a string, got {json_type(external_id)}"
        )
    return external_id


def _refuse_unknown_fields(obj: dict[str, Any], allowed: tuple[str, ...], *, prefix: str) -> None:
    for key in obj:
        if key not in allowed:
            raise _invalid_field(f"{prefix}{key}", f"unknown field; allowed: {', '.join(allowed)}")


def _invalid_field(field: str, problem: str) -> ApiError:
    return ApiError(400, "invalid_audience", f"{field}: {problem}", field=field)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")
