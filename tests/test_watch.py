"""WatchEnforcement: the decision table pushed to subscribers, through a real server on port 0.

The manual clock moves time; `Harness.advance_to` lets the service do what the
time brings (midnights, takeovers), as its evaluator thread would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest
from conftest import (
    ADMIN_TOKEN,
    CONTROL_PLANE_TOKEN,
    DAY,
    GATEWAY_TOKEN,
    START,
    Harness,
    Vendor,
    harness_for,
    midnight_after,
    server_config,
)
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from licensing.client import LicensingClient, LicensingError, Operation
from licensing.decision import NORMAL, Enforcement, LicenseInForce
from licensing.snapshot import timestamp
from licensing.v1 import licensing_pb2 as pb
from watching import ARRIVES_WITHIN, Subscriber

from licensing_server.domain.clock import ManualClock
from licensing_server.watch import EnforcementFeed

SUBSCRIBED = pb.WATCH_ENFORCEMENT_EVENT_SUBSCRIBED
CHANGED = pb.WATCH_ENFORCEMENT_EVENT_CHANGED
TIME_PASSED = pb.WATCH_ENFORCEMENT_EVENT_TIME_PASSED
HEARTBEAT = pb.WATCH_ENFORCEMENT_EVENT_HEARTBEAT
SERVICE = "/licensing.v1.LicenseService/"


@pytest.fixture
def watcher(harness: Harness) -> Iterator[Subscriber]:
    with Subscriber(harness.control_plane) as subscriber:
        yield subscriber


def test_the_first_message_is_the_snapshot_in_force_sent_at_once(
    harness: Harness, watcher: Subscriber
) -> None:
    first = watcher.next_change()
    assert first.event == SUBSCRIBED
    assert first.snapshot.version >= 1
    assert not first.snapshot.HasField("license")
    assert first.snapshot.state == pb.RUNTIME_STATE_NORMAL
    assert first.send_time == timestamp(START)
    assert 0 < first.heartbeat_interval.ToTimedelta().total_seconds() <= 15


def test_an_upload_reaches_a_subscriber_as_a_new_snapshot(
    harness: Harness, vendor: Vendor, watcher: Subscriber
) -> None:
    first = watcher.next_change()
    harness.admin.upload(vendor.issue(max_dp_cores=16, features=["api7-gateway", "api7-portal"]))
    changed = watcher.next_change()
    assert changed.event == CHANGED
    assert changed.snapshot.version == first.snapshot.version + 1
    snapshot = changed.snapshot
    assert snapshot.license.serial_number == "LIC-0001"
    assert snapshot.license.max_dp_cores == 16
    assert list(snapshot.license.features) == ["api7-gateway", "api7-portal"]
    assert snapshot.license.end_time == timestamp(START + 365 * DAY)
    assert snapshot.state == pb.RUNTIME_STATE_NORMAL
    assert snapshot.expiry_warning_days == 30
    assert snapshot.expiry_warning_start_time == timestamp(START + 335 * DAY)
    assert not snapshot.HasField("takeover_time")


def test_a_pending_license_and_its_takeover_reach_a_subscriber(
    harness: Harness, vendor: Vendor, watcher: Subscriber
) -> None:
    harness.admin.upload(vendor.issue())
    watcher.until(lambda m: m.snapshot.HasField("license"))
    renewal_at = START + 2 * DAY + 0.25
    harness.admin.upload(
        vendor.issue(
            serial_number="LIC-0002",
            effective_at=renewal_at,
            expires_at=START + 400 * DAY,
            max_dp_cores=32,
        )
    )
    pending = watcher.next_change()
    assert pending.event == CHANGED
    assert pending.snapshot.license.serial_number == "LIC-0001"
    assert pending.snapshot.takeover_time == timestamp(renewal_at)
    assert pending.snapshot.successor.license.serial_number == "LIC-0002"
    assert pending.snapshot.successor.license.max_dp_cores == 32

    harness.advance_to(renewal_at)
    took_over = watcher.next_change()
    assert took_over.event == CHANGED
    assert took_over.snapshot.license.serial_number == "LIC-0002"
    assert not took_over.snapshot.HasField("successor")


def test_a_midnight_state_change_reaches_a_subscriber(
    harness: Harness, vendor: Vendor, watcher: Subscriber
) -> None:
    harness.admin.upload(vendor.issue(max_dp_cores=16))
    harness.gateway.report_usage("gw-1", 20)
    watcher.until(lambda m: m.snapshot.HasField("license"))
    midnight = midnight_after(START)
    harness.advance_to(midnight)
    changed = watcher.next_change()
    assert changed.event == CHANGED
    assert changed.snapshot.state == pb.RUNTIME_STATE_DP_CORE_EXCEEDED
    assert changed.snapshot.grace_end_time == timestamp(midnight + 7 * DAY)


def test_a_midnight_that_changes_nothing_sends_nothing(
    harness: Harness, vendor: Vendor, watcher: Subscriber
) -> None:
    harness.admin.upload(vendor.issue())
    before = watcher.until(lambda m: m.snapshot.HasField("license"))
    harness.advance_to(midnight_after(START, 3))
    harness.admin.upload(vendor.issue(serial_number="LIC-0002"))
    after = watcher.next_change()
    assert after.snapshot.license.serial_number == "LIC-0002"
    assert after.snapshot.version == before.snapshot.version + 1


def test_the_warning_window_and_the_license_end_are_announced_as_they_pass(
    harness: Harness, vendor: Vendor, watcher: Subscriber
) -> None:
    ends_at = START + 40 * DAY + 0.5
    harness.admin.upload(vendor.issue(expires_at=ends_at))
    licensed = watcher.until(lambda m: m.snapshot.HasField("license"))

    harness.advance_to(ends_at - 30 * DAY + 1)
    window = watcher.next_change()
    assert window.event == TIME_PASSED
    assert window.snapshot == licensed.snapshot
    assert window.send_time == timestamp(ends_at - 30 * DAY + 1)

    harness.advance_to(ends_at)
    ended = watcher.next_change()
    assert ended.event == TIME_PASSED
    assert ended.snapshot == licensed.snapshot


def test_a_quiet_stream_carries_heartbeats(harness: Harness) -> None:
    harness.running.feed.heartbeat_interval = 0.05
    with Subscriber(harness.control_plane) as watcher:
        first = watcher.next_change()
        beat = watcher.next()
        assert beat is not None
        assert beat.event == HEARTBEAT
        assert beat.snapshot == first.snapshot
        assert beat.heartbeat_interval == Duration(nanos=50_000_000)


@pytest.mark.parametrize("token", [ADMIN_TOKEN, CONTROL_PLANE_TOKEN, GATEWAY_TOKEN])
def test_admins_control_planes_and_gateways_may_watch(harness: Harness, token: str) -> None:
    with harness.client(token) as client, Subscriber(client) as watcher:
        assert watcher.next_change().event == SUBSCRIBED


def test_watching_needs_a_token(harness: Harness) -> None:
    with (
        harness.client(None) as client,
        Subscriber(client) as watcher,
        pytest.raises(LicensingError) as refused,
    ):
        watcher.next()
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.reason == "MISSING_TOKEN"


def test_watchers_beyond_the_limit_are_refused_while_other_calls_are_answered(
    harness: Harness,
) -> None:
    harness.running.feed.max_watchers = 2
    with ExitStack() as stack:
        for _ in range(2):
            stack.enter_context(Subscriber(harness.control_plane)).next_change()
        third = stack.enter_context(Subscriber(harness.control_plane))
        with pytest.raises(LicensingError) as refused:
            third.next()
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.value.reason == "TOO_MANY_WATCHERS"
        assert harness.control_plane.check_write("route", Operation.READ).allowed


def test_idle_watchers_do_not_stall_other_calls(harness: Harness) -> None:
    """300 streams that never read, on connections of their own: the others are answered."""
    watchers, per_channel = 300, 50
    metadata = (("authorization", f"Bearer {CONTROL_PLANE_TOKEN}"),)
    with ExitStack() as stack:
        for _ in range(watchers // per_channel):
            # a connection of its own: channels to one target share one by default
            channel = stack.enter_context(
                grpc.insecure_channel(harness.target, [("grpc.use_local_subchannel_pool", 1)])
            )
            watch = channel.unary_stream(
                SERVICE + "WatchEnforcement",
                request_serializer=pb.WatchEnforcementRequest.SerializeToString,
                response_deserializer=pb.WatchEnforcementResponse.FromString,
            )
            for _ in range(per_channel):
                call = watch(pb.WatchEnforcementRequest(), metadata=metadata)
                stack.callback(call.cancel)
        deadline = time.monotonic() + ARRIVES_WITHIN
        while harness.running.feed.watchers < watchers and time.monotonic() < deadline:
            time.sleep(0.01)
        assert harness.running.feed.watchers == watchers
        with grpc.insecure_channel(harness.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with LicensingClient(harness.target, token=CONTROL_PLANE_TOKEN, timeout=1.0) as client:
            assert client.check_write("route", Operation.READ).allowed


def test_stopping_the_server_ends_every_stream_at_once(
    tmp_path: Path, vendor: Vendor, clock: ManualClock
) -> None:
    config = server_config(tmp_path / "data", vendor)
    with harness_for(config, clock) as harness:
        watcher = Subscriber(harness.control_plane)
        watcher.next_change()
        began = time.monotonic()
        harness.running.stop(grace=60)
        stopped_in = time.monotonic() - began
        assert watcher.next() is None
        watcher.close()
    # a liveness bound: the drain did not wait out its grace for the stream
    assert stopped_in < 30


def test_a_watcher_that_does_not_read_is_owed_one_message_however_many_changes_it_missed() -> None:
    async def scenario() -> None:
        now = START
        feed = EnforcementFeed(asyncio.get_running_loop(), lambda: now, max_watchers=10)
        feed.enforcement_replaced(Enforcement(None, None, NORMAL, 30), now)
        watcher = feed.subscribe()
        first = await watcher.next_message()
        assert first is not None and first.event == SUBSCRIBED
        for n in range(1000):
            lic = LicenseInForce(f"LIC-{n:04d}", 16, ())
            feed.enforcement_replaced(Enforcement(lic, now + DAY, NORMAL, 30), now)
        await asyncio.sleep(0)  # one turn of the loop runs the wake-ups the changes queued
        assert watcher.owed == CHANGED
        latest = await watcher.next_message()
        assert latest is not None and latest.event == CHANGED
        assert latest.snapshot.license.serial_number == "LIC-0999"
        assert latest.snapshot.version == first.snapshot.version + 1000
        assert watcher.owed is None

    asyncio.run(scenario())
