"""passthrough.customer_audiences: which of these audiences is this customer in?"""

import pytest

from sqlhelpers import expect_error, rows


@pytest.fixture
def populated(conn):
    conn.execute("SELECT passthrough.enable()")
    for name in ("seg_a", "seg_b", "seg_c"):
        conn.execute("SELECT passthrough.put_audience(%s, %s, %s)", (name, f"ext-{name}", f"about {name}"))
    for audience, action in (("ext-seg_a", "qualify"), ("ext-seg_b", "disqualify"), ("ext-seg_c", "qualify"),
                             ("ext-undefined", "qualify")):
        conn.execute("SELECT passthrough.apply_event('fs_user_id', 'u1', %s, %s, 1700000000)", (audience, action))
    return conn


def test_all_qualified_defined_audiences_without_subset(populated):
    assert rows(
        populated, "SELECT name, state, description, is_ready, revision, size FROM passthrough.customer_audiences('fs_user_id', 'u1')"
    ) == [("seg_a", "qualified", "about seg_a", True, 1, 1), ("seg_c", "qualified", "about seg_c", True, 1, 1)]


def test_subset_limits_the_answer_and_ignores_unknown_names(populated):
    got = rows(
        populated,
        "SELECT name FROM passthrough.customer_audiences('FS-USER-ID', 'u1', ARRAY['seg_b', 'seg_c', 'nope', NULL])",
    )
    assert got == [("seg_c",)]
    assert rows(populated, "SELECT name FROM passthrough.customer_audiences('fs_user_id', 'u1', '{}')") == []


def test_unknown_customer_gets_no_rows(populated):
    assert rows(populated, "SELECT * FROM passthrough.customer_audiences('fs_user_id', 'nobody')") == []
    assert rows(populated, "SELECT * FROM passthrough.customer_audiences('vuid', 'u1')") == []


@pytest.mark.parametrize(
    "identifier_type, identifier, message",
    [
        ("phone", "u1", "invalid identifier: 'phone' is not an identifier type"),
        (None, "u1", "invalid identifier: NULL is not an identifier type"),
        ("fs_user_id", "", "invalid identifier: the identifier must be a non-empty string of at most 512 characters"),
        ("fs_user_id", None, "invalid identifier: the identifier must be a non-empty string of at most 512 characters"),
        ("fs_user_id", "x" * 513, "invalid identifier: the identifier must be a non-empty string of at most 512 characters"),
    ],
)
def test_invalid_identifiers(populated, identifier_type, identifier, message):
    error = expect_error(
        populated, "SELECT * FROM passthrough.customer_audiences(%s, %s)", (identifier_type, identifier), "PT003"
    )
    assert error.message == message


def test_a_low_confidence_type_keys_no_membership_so_its_answers_are_empty(populated):
    """The JavaScript SDK asks by vuid for anonymous visitors: an empty answer, not an error."""
    assert rows(populated, "SELECT * FROM passthrough.customer_audiences('vuid', 'u1')") == []
    # a type made low-confidence later keys no new event; what it keyed stays readable
    read = "SELECT name FROM passthrough.customer_audiences('fs_user_id', 'u1')"
    before = rows(populated, read)
    populated.execute("SELECT passthrough.add_identifier_type('fs_user_id', false)")
    assert rows(populated, read) == before and len(before) > 0


def test_subset_length_is_bounded(populated):
    error = expect_error(
        populated,
        "SELECT * FROM passthrough.customer_audiences('fs_user_id', 'u1', %s)",
        ([f"s{i}" for i in range(1001)],),
        "PT010",
    )
    assert error.message == "subset may name at most 1000 audiences, got 1001"


def test_point_read_uses_the_primary_key(populated):
    plan = "\n".join(
        line
        for (line,) in rows(
            populated,
            "EXPLAIN SELECT 1 FROM passthrough.memberships WHERE identifier_type_id = 1 AND identifier = 'u1'",
        )
    )
    assert "memberships_pkey" in plan
