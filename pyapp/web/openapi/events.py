"""POST /v3/events."""

from __future__ import annotations

from typing import Any

from pyapp.web.config import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_EVENTS
from pyapp.web.openapi.parts import TIMESTAMP, error, ok, operation, ref

EVENTS_DESCRIPTION = f"""\
Applies a batch of ODP events as one all-or-nothing transaction and answers 202 once it is committed.
The body is one event object or a JSON array of at most {DEFAULT_MAX_EVENTS} (by default); it may be sent with
`Content-Encoding: gzip`, and may be at most {DEFAULT_MAX_BODY_BYTES} bytes (by default) before and after
decompression. Events whose `type` is not `passthrough` (such as the `fullstack`/`identified` events the
Optimizely SDKs send) are acknowledged and not stored, and counted in `ignored`; a public key may send those,
but passthrough events only while the setting `public_passthrough_events` is on. A batch with any invalid
passthrough event is refused with 400, listing every invalid event in `detail.invalids`; nothing of it is stored."""


PATHS: dict[str, Any] = {
    "/v3/events": {
        "post": operation(
            "postEvents",
            "Send ODP events (passthrough qualify/disqualify).",
            description=EVENTS_DESCRIPTION,
            scope="public",
            body="EventsBody",
            responses={
                "202": ok("The batch is committed.", "Accepted"),
                "400": error(
                    "Invalid events (`detail.invalids` lists every one; nothing was stored), or a malformed body: "
                    "wrong Content-Type or Content-Encoding, malformed JSON or gzip, empty body."
                ),
                "403": error("Passthrough is disabled (`passthrough_disabled`: an operator enables it with "
                              "`passthrough enable`), or a public key sent passthrough events "
                              "(`public_key_passthrough_events`: send them with a private key, or allow public keys "
                              "with `passthrough settings set public_passthrough_events on`). Nothing was stored."),
                "413": error(
                    f"More events than the limit ({DEFAULT_MAX_EVENTS} by default), or a body over the size limit."
                ),
            },
        )
    },
}

SCHEMAS: dict[str, Any] = {
    "Accepted": {
        "type": "object",
        "required": ["title", "status", "timestamp"],
        "properties": {
            "title": {"const": "Accepted"},
            "status": {"const": 202},
            "timestamp": TIMESTAMP,
            "accepted": {"type": "integer", "description": "Passthrough events stored."},
            "ignored": {"type": "integer", "description": "Events of another type, acknowledged and not stored."},
            "changed": {"type": "integer", "description": "(identifier, audience) pairs whose state changed."},
        },
    },
    "Event": {
        "type": "object",
        "description": "An ODP event. Only type passthrough is stored; its rules are in docs/semantics.md.",
        "properties": {
            "type": {"type": "string", "examples": ["passthrough"]},
            "action": {"type": "string", "enum": ["qualify", "disqualify"]},
            "identifiers": {
                "type": "object",
                "description": "Exactly one high-confidence identifier, e.g. {\"fs_user_id\": \"user-1\"}.",
                "additionalProperties": {"type": "string"},
            },
            "data": {
                "type": "object",
                "properties": {
                    "audience_id": {"type": "string", "description": "The external audience id."},
                    "ts": {"type": "number", "description": "Event time, seconds since the Unix epoch."},
                    "idempotence_id": {"type": "string"},
                },
            },
        },
    },
    "EventsBody": {"oneOf": [ref("Event"), {"type": "array", "items": ref("Event")}]},
}
