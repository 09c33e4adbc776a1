"""pyapp/jsontypes.py reads event JSON as PostgreSQL's jsonb does: the same type names (the bulk loader's
problems name them as apply_events does) and numbers kept exactly (dumps_exact gives back the same jsonb)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyapp.jsontypes import dumps_exact, json_type, loads_exact

# as a CDP may write them: beyond a float's digits and range, exponents, signed zeros
NUMBERS = ["0", "-0", "-0.0", "1.50", "1e400", "-1E-400", "1700000000.020818353", "123456789012345678901234567890",
           "1.7000000000000005E9", "0.1"]


class Raw(str):
    """A number of NUMBERS, written into the JSON text as it is (json.dumps would write a float's repr)."""


# jsonb holds no NUL character (neither raw nor \u0000) and no lone surrogate: the strings leave them out
strings = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=8)
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**30, max_value=10**30),
                    st.floats(allow_nan=False, allow_infinity=False), strings,
                    st.sampled_from(NUMBERS).map(lambda n: Raw(n)))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    strings, inner, max_size=3), max_leaves=12)


def _text(value) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_text(v) for v in value) + "]"
    return json.dumps(value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=values)
def test_type_names_and_numbers_are_postgresqls(conn, value):
    text = _text(value)
    parsed = loads_exact(text)
    members = parsed.items() if isinstance(parsed, dict) else [(None, parsed)]
    for key, member in members:
        path = [] if key is None else [key]
        expected = conn.execute("SELECT jsonb_typeof(%s::jsonb #> %s::text[])", (text, path)).fetchone()[0]
        assert json_type(member) == expected
    assert conn.execute("SELECT %s::jsonb = %s::jsonb", (dumps_exact(parsed), text)).fetchone()[0]


def test_numbers_written_as_text_stay_numbers(conn):
    for number in NUMBERS:
        text = f'{{"ts": {number}, "ids": [{number}]}}'
        parsed = loads_exact(text)
        assert json_type(parsed["ts"]) == "number" and json_type(parsed["ids"][0]) == "number"
        assert conn.execute("SELECT %s::jsonb = %s::jsonb", (dumps_exact(parsed), text)).fetchone()[0], number
