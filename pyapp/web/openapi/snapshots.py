"""POST /v3/audiences/{audience_id}/snapshot."""

from __future__ import annotations

from typing import Any

from pyapp.ingest.snapshot import MAX_LINE_CHARS, MIN_ROW_BYTES
from pyapp.web.config import DEFAULT_MAX_SNAPSHOT_BYTES, DEFAULT_MAX_SNAPSHOT_UPLOADS
from pyapp.web.openapi.parts import TIMESTAMP, error, ok, operation, query, ref
from pyapp.web.snapshots import SNAPSHOT_SOURCE

SNAPSHOT_DESCRIPTION = f"""\
Replaces the membership of one audience with a full list of its members at time T: the HTTP twin of
`passthrough import`. `audience_id` is the external audience id (the one events carry in `data.audience_id`).
The body is the ODP snapshot file: a CSV, gzip or plain, whose header names `type, action, audience_id, ts`
and exactly one identifier column (e.g. `fs_user_id`), one row per member
(`passthrough,qualify,<audience_id>,<ts or empty>,<identifier>`). Send it with `Content-Type: application/gzip`
(gzip), `text/csv` or `application/octet-stream` (gzip when it starts with the gzip magic bytes, else plain);
`Content-Encoding: gzip` is accepted too. At most {DEFAULT_MAX_SNAPSHOT_BYTES} bytes (by default,
`--max-snapshot-bytes`) as sent and again decompressed; the upload is spooled to a temporary file, not held in
memory. A line may have at most {MAX_LINE_CHARS} characters, and a snapshot at most one line per
{MIN_ROW_BYTES} bytes of that limit, blank lines included. Each server process takes at most
{DEFAULT_MAX_SNAPSHOT_UPLOADS} uploads at once (by default, `--max-snapshot-uploads`); one more is 503.

Listed identifiers are qualified (with their row's `ts`, else T); members not listed whose deciding event is
older than T are disqualified as of T; events at or after T stand. T is `at`, else the newest `ts` in the
file. It is one transaction, logged as one batch (source `{SNAPSHOT_SOURCE}`): readers see the old membership or
the new one, and 200 comes only after the commit. A snapshot with an invalid row is refused whole (400,
`detail.invalids` lists up to 100 rows by their line in the CSV, the header being line 1), and so is one whose
rows all name one other audience (400 `snapshot_of_another_audience`, once). An empty snapshot (a header and no
rows), or one that would disqualify more than `max_disqualify_share` of the members, is refused with 422 unless
`force=true`. With `dry_run=true` nothing is applied and the answer lists the changes it would make, up to
`diff_limit`; a dry run is for looking, so a guard does not refuse it: `refused_by` names the guards that would
refuse the import (`refusal_reasons` says why), and is empty when none would."""



SNAPSHOT_PARAMETERS = [
    {
        "name": "audience_id",
        "in": "path",
        "required": True,
        "description": "The external audience id: every row's `audience_id` must be this. Percent-encoded, as any path "
        "parameter: an id holding `/` is sent with `%2F`.",
        "schema": {"type": "string", "maxLength": 255, "examples": ["crm-vip"]},
    },
    query("at", "The snapshot time T in seconds since the Unix epoch (`--at`); default: the newest `ts` in "
           "the file, else now.", {"type": "number", "examples": [1735689600]}),
    query("dry_run", "Compute the changes and answer them in `diff`, and the guards that would refuse the import "
           "in `refused_by` (200, not 422); apply nothing (`--dry-run`).",
           {"type": "boolean", "default": False}),
    # the ranges and defaults are passthrough.snapshot_diff's and import_snapshot's (PT010, 400 naming the field)
    query("diff_limit", "At most this many changes in a dry run's `diff` (`--diff-limit`), 0 to 100000, as "
           "`passthrough.snapshot_diff` allows; 400 without `dry_run=true`, since only a dry run lists a diff.",
           {"type": "integer", "minimum": 0, "maximum": 100000, "default": 50}),
    query("max_disqualify_share", "Refuse (422) a snapshot that would disqualify more than this share of the "
           "current members (`--max-disqualify-share`), 0 to 1.",
           {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5}),
    query("force", "Apply an empty snapshot, or one over `max_disqualify_share`, anyway (`--force`).",
           {"type": "boolean", "default": False}),
]

SNAPSHOT_BODY = {
    "required": True,
    "description": "The snapshot CSV (header `type,action,audience_id,ts,<identifier type>`), gzip or plain.",
    "content": {
        media_type: {"schema": {"type": "string", "contentMediaType": media_type}}
        for media_type in ("application/gzip", "text/csv", "application/octet-stream")
    },
}

PATHS: dict[str, Any] = {
    "/v3/audiences/{audience_id}/snapshot": {
        "post": operation(
            "importSnapshot",
            "Replace one audience's membership with a full list of its members (an ODP snapshot file).",
            description=SNAPSHOT_DESCRIPTION,
            scope="private",
            parameters=SNAPSHOT_PARAMETERS,
            request_body=SNAPSHOT_BODY,
            responses={
                "200": ok("Imported and committed, or (`dry_run`) what the import would do and which guards would "
                          "refuse it.", "SnapshotResult"),
                "400": error(
                    "Nothing was changed. Invalid rows (`invalid_rows`: `detail.invalids` lists them by line), a "
                    "header without exactly one identifier column besides type, action, audience_id and ts "
                    "(`invalid_csv_header`), a body that is not UTF-8 CSV (`malformed_csv`) or not the gzip it "
                    "claims to be (`malformed_gzip`), rows that all name one other audience than `audience_id` "
                    "(`snapshot_of_another_audience`), an empty body, a wrong Content-Type or Content-Encoding, or "
                    "a query parameter that is unknown or invalid (`invalid_argument`, `detail.field` names it)."
                ),
                "403": error(
                    "The key is public and this operation needs a private key (`insufficient_scope`), or "
                    "passthrough is disabled (`passthrough_disabled`; a dry run works regardless)."
                ),
                "413": error(
                    "Nothing was changed. The body is larger than the limit, as sent or decompressed "
                    f"(`body_too_large`); a line is longer than {MAX_LINE_CHARS} characters (`line_too_long`, "
                    "refused as soon as it is; the message names the line); or there are more lines, blank ones "
                    "included, than a "
                    f"snapshot within the limit can have, one per {MIN_ROW_BYTES} bytes (`too_many_lines`)."
                ),
                "503": error(
                    "Nothing was changed; retry after `Retry-After` seconds. This server process is already "
                    "handling as many snapshot uploads as it takes at once (`snapshot_uploads_busy`, "
                    f"`--max-snapshot-uploads`, {DEFAULT_MAX_SNAPSHOT_UPLOADS} by default; answered before the body "
                    "is read), or the database is unavailable or busy (transient)."
                ),
                "507": error("`insufficient_storage`: the server's TMPDIR is full, so the upload could not be "
                              "spooled. Nothing was changed; retry later."),
                "422": error(
                    "Refused by a guard, nothing changed: the snapshot is empty (`empty_snapshot`) or would "
                    "disqualify more than `max_disqualify_share` of the members (`snapshot_disqualifies_too_many`). "
                    "Check the export; `force=true` applies it anyway. Never for a dry run: it answers 200 naming "
                    "the guards in `refused_by`."
                ),
            },
        )
    },
}

SCHEMAS: dict[str, Any] = {
    "SnapshotResult": {
        "type": "object",
        "required": ["audience_id", "applied", "snapshot_at", "listed", "to_qualify", "to_disqualify", "unchanged",
                     "kept_newer", "members_before", "batch_id", "changed", "refused_by", "refusal_reasons"],
        "properties": {
            "audience_id": {"type": "string"},
            "applied": {"type": "boolean", "description": "False for a dry run."},
            "snapshot_at": {**TIMESTAMP, "description": "T (UTC, with a Z)."},
            "listed": {"type": "integer", "description": "Distinct identifiers in the snapshot."},
            "to_qualify": {"type": "integer", "description": "Listed and not qualified now: they become members."},
            "to_disqualify": {"type": "integer",
                              "description": "Qualified by an event older than T and not listed: they leave."},
            "unchanged": {"type": "integer", "description": "Listed and qualified now."},
            "kept_newer": {"type": "integer",
                           "description": "Where the snapshot disagrees with an event at or after T, which stands."},
            "members_before": {"type": "integer", "description": "Qualified members before the import."},
            "batch_id": {"type": ["integer", "null"], "description": "The batch holding the import's events."},
            "changed": {"type": "integer", "description": "(identifier, audience) pairs whose state changed."},
            "refused_by": {
                "type": "array",
                "items": {"type": "string", "enum": ["empty_snapshot", "snapshot_disqualifies_too_many"]},
                "description": "Dry run: the guards that would refuse this import (the codes of its 422 errors), "
                "in the order they are checked; an import raises the first. Empty when none would, with "
                "`force=true`, and for an import that was applied.",
            },
            "refusal_reasons": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Why each guard in `refused_by` would refuse, in the same order, e.g. \"it would "
                "disqualify 3 of 4 members (75.0%), more than the allowed 50.0%\".",
            },
            "diff": {
                "type": "array",
                "description": "Dry run only: the changes, by change, identifier type and identifier, up to "
                "`diff_limit` (unchanged members are left out).",
                "items": ref("SnapshotChange"),
            },
            "diff_truncated": {"type": "boolean", "description": "Dry run only: `diff` was cut at `diff_limit`."},
        },
    },
    "SnapshotChange": {
        "type": "object",
        "required": ["change", "identifier_type", "identifier", "current_ts", "snapshot_ts"],
        "properties": {
            "change": {"type": "string", "enum": ["qualify", "disqualify", "kept_newer"]},
            "identifier_type": {"type": "string"},
            "identifier": {"type": "string"},
            "current_ts": {**TIMESTAMP, "type": ["string", "null"],
                           "description": "The deciding event's time now; null for an identifier not known yet."},
            "snapshot_ts": {**TIMESTAMP, "description": "The time the snapshot gives it: its row's ts, else T."},
        },
    },
}
