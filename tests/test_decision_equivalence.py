"""A snapshot sent over the wire decides every request exactly as the service's own does.

The service decides from an `Enforcement` built from verified licenses; a client
decides from the `Enforcement` it rebuilds from the `EnforcementSnapshot` the
service sent. Hypothesis generates licenses (features, quota, end), states,
grace ends, pending licenses, warning windows, requests and times, the times
often exactly at, or one float step around, the instants where an answer
changes by itself; the two answers must be equal in every field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st
from licensing.decision import (
    LICENSE_RESOURCE,
    Enforcement,
    Operation,
    RuntimeState,
    Standing,
)
from licensing.snapshot import (
    decision_proto,
    enforcement_from_proto,
    instant,
    snapshot_proto,
    timestamp,
)
from licensing.v1 import licensing_pb2 as pb

from licensing_server.domain.license import License

DAY = 86_400.0
# 2020-01-01 to 2100-01-01: the instants a running service sees
EARLIEST = 1_577_836_800.0
LATEST = 4_102_444_800.0
FEATURES = ["api7-gateway", "api7-portal", "api7-ai", "Ümlaut-feature", "x"]

instants = st.floats(min_value=EARLIEST, max_value=LATEST, allow_nan=False)
offsets = st.floats(min_value=-400 * DAY, max_value=400 * DAY, allow_nan=False)
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=140)
feature_lists = st.lists(st.sampled_from(FEATURES) | texts.filter(bool), max_size=5)


@st.composite
def licenses(draw: st.DrawFn) -> License:
    effective_at = draw(instants)
    features = draw(feature_lists)
    return License(
        serial_number=draw(st.sampled_from(["LIC-0001", "LIC-0002"]) | texts.filter(bool)),
        customer="Example Corp",
        effective_at=effective_at,
        expires_at=effective_at + draw(st.floats(min_value=1.0, max_value=800 * DAY)),
        max_dp_cores=draw(st.integers(min_value=1, max_value=2**31 - 1)),
        features=tuple(dict.fromkeys(features)),
        deployment_id="deployment-under-test",
        free_trial=draw(st.booleans()),
        key_id="vendor-test",
        token="not-a-real-token",
        fingerprint="not-a-real-fingerprint",
    )


@st.composite
def standings(draw: st.DrawFn, around: float) -> Standing:
    state = draw(st.sampled_from(RuntimeState))
    grace_ends_at = around + draw(offsets)
    if state is RuntimeState.DP_CORE_EXCEEDED:
        return Standing(state, grace_ends_at)
    return Standing(state, draw(st.none() | st.just(grace_ends_at)))


@st.composite
def enforcements(draw: st.DrawFn, *, pending: bool = True) -> Enforcement:
    """What the service builds: the active license (or none), its end, the standing, and
    maybe a pending license's snapshot taking over at its effective time."""
    lic = draw(st.none() | licenses())
    around = lic.effective_at if lic else draw(instants)
    # the license's end here: its expiry, or earlier for a trial
    ends_at = lic.expires_at - draw(st.sampled_from([0.0, DAY, 0.5])) if lic else None
    days = draw(st.integers(min_value=1, max_value=400))
    successor = None
    if pending and draw(st.booleans()):
        incoming = draw(licenses())
        after = Enforcement(
            incoming, incoming.expires_at, draw(standings(incoming.effective_at)), days
        )
        successor = (incoming.effective_at, after)
    return Enforcement(lic, ends_at, draw(standings(around)), days, successor)


def instants_of(enforcement: Enforcement) -> list[float]:
    """Where an answer changes by itself, the successor's included."""
    found = []
    for rules in (enforcement, enforcement.successor):
        if rules is None:
            continue
        found += [
            rules.grace_ends_at,
            rules.license_ends_at,
            rules.expiry_warning_starts_at,
            rules.successor_at,
        ]
    return [i for i in found if math.isfinite(i)]


@st.composite
def moments(draw: st.DrawFn, enforcement: Enforcement) -> float:
    """Any time, or one at, just before or just after an instant where the answer changes."""
    changes = instants_of(enforcement)
    if not changes or draw(st.booleans()):
        return draw(instants)
    at = draw(st.sampled_from(changes))
    return draw(
        st.sampled_from(
            [at, math.nextafter(at, -math.inf), math.nextafter(at, math.inf), at - 1, at + 1]
        )
        | st.just(at + draw(offsets))
    )


@dataclass(frozen=True)
class Request:
    resource_type: str
    operation: Operation
    feature: str


requests = st.builds(
    Request,
    st.sampled_from([LICENSE_RESOURCE, "route", "service", "consumer"]) | texts.filter(bool),
    st.sampled_from(Operation),
    st.just("") | st.sampled_from(FEATURES) | texts,
)


def over_the_wire(enforcement: Enforcement) -> Enforcement:
    message = snapshot_proto(enforcement, version=7)
    received = pb.EnforcementSnapshot.FromString(message.SerializeToString())
    return enforcement_from_proto(received)


def assert_same_answers(
    server: Enforcement, client: Enforcement, request: Request, now: float
) -> None:
    ours = server.decide(request.resource_type, request.operation, request.feature, now)
    theirs = client.decide(request.resource_type, request.operation, request.feature, now)
    assert theirs == ours
    assert decision_proto(theirs) == decision_proto(ours)
    assert client.warnings(now) == server.warnings(now)
    assert client.at(now).standing.state is server.at(now).standing.state


@given(st.data())
def test_a_snapshot_sent_over_the_wire_decides_every_request_as_the_service_does(
    data: st.DataObject,
) -> None:
    server = data.draw(enforcements())
    client = over_the_wire(server)
    for _ in range(5):
        assert_same_answers(server, client, data.draw(requests), data.draw(moments(server)))


@given(st.data())
def test_the_answers_agree_exactly_at_the_instants_where_they_change_by_themselves(
    data: st.DataObject,
) -> None:
    server = data.draw(enforcements())
    client = over_the_wire(server)
    request = data.draw(requests)
    for at in instants_of(server):
        for now in (math.nextafter(at, -math.inf), at, math.nextafter(at, math.inf)):
            assert_same_answers(server, client, request, now)
    assert client.next_change_after(server.successor_at) == server.next_change_after(
        server.successor_at
    )


@given(st.floats(min_value=2.0**23, max_value=253_402_300_799.0, allow_nan=False))
def test_an_instant_survives_a_timestamp_exactly(when: float) -> None:
    assert instant(timestamp(when)) == when


def test_a_timestamp_carries_a_fraction_that_rounds_to_a_whole_second() -> None:
    stamp = timestamp(5.9999999999)
    assert (stamp.seconds, stamp.nanos) == (6, 0)


# --- the instants at which an answer changes by itself ------------------------------------

NOW = 1_800_000_000.0
LIC = License(
    "LIC-0001",
    "Example Corp",
    NOW - DAY,
    NOW + 40 * DAY,
    16,
    ("api7-gateway",),
    "deployment-under-test",
    False,
    "vendor-test",
    "not-a-real-token",
    "not-a-real-fingerprint",
)


def test_each_instant_where_the_answer_changes_is_the_next_change_in_turn() -> None:
    grace_end = NOW + 2 * DAY
    pending = Enforcement(LIC, NOW + 100 * DAY, Standing(RuntimeState.NORMAL), 30)
    rules = Enforcement(
        LIC,
        NOW + 40 * DAY,
        Standing(RuntimeState.DP_CORE_EXCEEDED, grace_end),
        30,
        (NOW + 50 * DAY, pending),
    )
    walk, now = [], NOW
    while math.isfinite(now := rules.next_change_after(now)):
        walk.append(now)
    assert walk == [
        grace_end,
        NOW + 10 * DAY,  # the warning window starts
        NOW + 40 * DAY,  # the license ends
        NOW + 50 * DAY,  # the pending license takes over
        NOW + 70 * DAY,  # its warning window starts
        NOW + 100 * DAY,  # it ends
    ]


def test_time_passing_an_instant_is_a_change_and_time_short_of_it_is_not() -> None:
    grace_end = NOW + 2 * DAY
    rules = Enforcement(LIC, NOW + 40 * DAY, Standing(RuntimeState.DP_CORE_EXCEEDED, grace_end), 30)
    assert not rules.changes_between(NOW, math.nextafter(grace_end, 0))
    assert rules.changes_between(NOW, grace_end)
    warning_starts = NOW + 10 * DAY
    # the warning applies from just after its start
    assert not rules.changes_between(grace_end, warning_starts)
    assert rules.changes_between(grace_end, math.nextafter(warning_starts, math.inf))
    assert rules.changes_between(warning_starts + 1, NOW + 40 * DAY)
    assert not rules.changes_between(NOW + 40 * DAY, NOW + 400 * DAY)
