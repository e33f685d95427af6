"""What a refusal carries, and what it may echo of the input it refuses."""

from __future__ import annotations

from licensing_server.domain.refusal import Refused, quote


def test_a_refusal_carries_its_reason_code_and_its_sentence() -> None:
    refused = Refused("INVALID_CORES", "cores must be 1 to 4096")
    assert (refused.reason, refused.message, str(refused)) == (
        "INVALID_CORES",
        "cores must be 1 to 4096",
        "cores must be 1 to 4096",
    )


def test_a_refused_value_is_echoed_as_a_short_escaped_prefix() -> None:
    assert quote("route") == "'route'"
    assert quote("a\nb\u202ec\ud800") == "'a\\nb\\u202ec\\ud800'"
    long = quote("x" * 100_000)
    assert long == "'" + "x" * 40 + "'... (100000 characters)"
    assert quote(7) == "7"
    listed = quote(["k"] * 10_000)
    assert listed.startswith("['k', ")
    assert len(listed) < 80


def test_text_of_40_characters_is_echoed_whole_and_longer_text_is_cut_to_40() -> None:
    assert quote("x" * 40) == "'" + "x" * 40 + "'"
    assert quote("x" * 41) == "'" + "x" * 40 + "'... (41 characters)"
    assert quote("x" * 9, limit=8) == "'xxxxxxxx'... (9 characters)"


def test_any_other_value_is_echoed_as_its_repr_cut_to_40_characters() -> None:
    assert quote(None) == "None"
    assert quote(["k"] * 8) == "['k', 'k', 'k', 'k', 'k', 'k', 'k', 'k']"  # 40 characters
    assert quote(["k"] * 9) == "['k', 'k', 'k', 'k', 'k', 'k', 'k', 'k',... (45 characters)"
    assert quote({"a": 1}, limit=3) == "{'a... (8 characters)"


def test_a_value_nested_too_deeply_to_repr_is_named_by_its_type() -> None:
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    assert quote(deep) == "a deeply nested list"
