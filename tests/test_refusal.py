"""What a refusal may echo of the input it refuses."""

from __future__ import annotations

from licensing_server.domain.refusal import quote


def test_a_refused_value_is_echoed_as_a_short_escaped_prefix() -> None:
    assert quote("route") == "'route'"
    assert quote("a\nb\u202ec\ud800") == "'a\\nb\\u202ec\\ud800'"
    long = quote("x" * 100_000)
    assert long == "'" + "x" * 40 + "'... (100000 characters)"
    assert quote(7) == "7"
    listed = quote(["k"] * 10_000)
    assert listed.startswith("['k', ")
    assert len(listed) < 80
