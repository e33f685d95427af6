"""The usage rules hold for any report stream: the tracker and the peak sweep against a slow model.

The model reads the rule as the SPEC states it, with nothing clever: an
instance counts from a report until its next report, or until `ttl` after its
last report, or until it reports that it is stopping. The total at an instant
is the sum of the cores counting then, and a day's peak is the largest total
at any instant of the day, found by trying every instant where a total can
change and every instant between two of them.

Report times are multiples of half a second, so ties, reports exactly one TTL
apart and the midpoints the model tries are all exact.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from licensing_server.domain.usage import (
    FleetView,
    IntervalRow,
    UsageInterval,
    UsageTracker,
    peak_between,
)

TTL = 30.0
BASE = 1_000_000.0
INSTANCES = ("gw-a", "gw-b", "gw-c", "gw-d")
# gaps between steps: ties, TTL lapses to the half second either side, and long silences
GAPS = (0.0, 0.0, 0.5, 1.0, 10.0, TTL - 0.5, TTL, TTL + 0.5, 95.0)
EXAMPLES = settings(max_examples=300)


# --- the slow model --------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    instance_id: str
    cores: int
    stopping: bool
    at: float


@dataclass(frozen=True)
class Span:
    """While one report's cores count: [starts, ends)."""

    starts: float
    ends: float
    instance_id: str
    cores: int


def counting_spans(reports: list[Report], ttl: float) -> list[Span]:
    """Each report counts until the instance's next report, `ttl` after it, or not at all."""
    spans = []
    for n, report in enumerate(reports):
        if report.stopping:
            continue
        following = [r.at for r in reports[n + 1 :] if r.instance_id == report.instance_id]
        ends = min([report.at + ttl, *following[:1]])
        if report.at < ends:
            spans.append(Span(report.at, ends, report.instance_id, report.cores))
    return spans


def counting_at(spans: list[Span], instant: float) -> list[tuple[str, int]]:
    return sorted((s.instance_id, s.cores) for s in spans if s.starts <= instant < s.ends)


def total_at(spans: list[Span], instant: float) -> int:
    return sum(cores for _, cores in counting_at(spans, instant))


def slow_peak(spans: list[Span], start: float, end: float) -> tuple[int, float | None]:
    """The largest total at any instant of [start, end), and the first instant it is reached."""
    boundaries = sorted({start, end, *(s.starts for s in spans), *(s.ends for s in spans)})
    between = [(a + b) / 2 for a, b in itertools.pairwise(boundaries)]
    instants = sorted(t for t in {*boundaries, *between} if start <= t < end)
    peak = max((total_at(spans, t) for t in instants), default=0)
    if peak == 0:
        return 0, None
    return peak, next(t for t in instants if total_at(spans, t) == peak)


# --- the code under test, driven the way the service drives it ----------------------------


@dataclass(frozen=True)
class Step:
    """What happens `gap` seconds after the step before: a report, an expiry sweep, a restart."""

    gap: float
    kind: str
    instance_id: str = ""
    cores: int = 0
    stopping: bool = False


class StoredFleet:
    """A tracker and the rows it asked to store, restarted from them the way the service starts;
    beside it, the view a replica sharing the database keeps: following the rows it stores,
    and read afresh (the intervals still counting) where the tracker restarts."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.tracker = UsageTracker(ttl)
        self.view = FleetView(ttl)
        self.rows: dict[int, IntervalRow] = {}

    def keep(self, rows: list[IntervalRow]) -> None:
        for row in rows:
            self.rows[row[0]] = row
        self.view.follow(rows)

    def restart(self, now: float) -> None:
        live = [UsageInterval(*row) for row in self.rows.values() if row[5] is None]
        self.tracker = UsageTracker(self.ttl, live, next_id=max(self.rows, default=0) + 1)
        counting = [i for i in live if now < i.last_seen_at + self.ttl]
        self.view = FleetView(
            self.ttl,
            [i.instance_id for i in counting],
            [i.cores for i in counting],
            [i.started_at for i in counting],
            [i.last_seen_at for i in counting],
        )


report_steps = st.builds(
    Step,
    gap=st.sampled_from(GAPS),
    kind=st.just("report"),
    instance_id=st.sampled_from(INSTANCES),
    cores=st.integers(1, 8),
    stopping=st.booleans(),
)
sweep_steps = st.builds(
    Step, gap=st.sampled_from(GAPS), kind=st.sampled_from(["expire", "restart"])
)
streams = st.lists(st.one_of(report_steps, report_steps, report_steps, sweep_steps), max_size=40)


@dataclass
class Run:
    fleet: StoredFleet
    reports: list[Report]
    # after every step: its instant, the reports made so far, and the tracker's current total
    current_totals: list[tuple[float, int, tuple[int, int]]]
    # the view's current total after every step
    followed_totals: list[tuple[int, int]]


def run(steps: list[Step], ttl: float = TTL) -> Run:
    fleet = StoredFleet(ttl)
    reports: list[Report] = []
    current_totals = []
    followed_totals = []
    now = BASE
    for step in steps:
        now += step.gap
        if step.kind == "report":
            reports.append(Report(step.instance_id, step.cores, step.stopping, now))
            fleet.keep(fleet.tracker.report(step.instance_id, step.cores, step.stopping, now))
        elif step.kind == "expire":
            fleet.keep(fleet.tracker.expire(now))
        else:
            fleet.restart(now)
        current_totals.append((now, len(reports), fleet.tracker.current_total(now)))
        followed_totals.append(fleet.view.current_total(now))
    return Run(fleet, reports, current_totals, followed_totals)


@st.composite
def streams_and_days(draw: st.DrawFn) -> tuple[list[Step], float, float]:
    """A stream of steps and a day window, often starting or ending where a total changes."""
    steps = draw(streams)
    instants, now = [BASE], BASE
    for step in steps:
        now += step.gap
        instants += [now, now + TTL]
    anywhere = st.integers(-60, int(now - BASE) + 60).map(lambda s: BASE + s / 2)
    start = draw(st.one_of(st.sampled_from(instants), anywhere))
    end = draw(
        st.one_of(
            st.sampled_from([t for t in instants if t >= start] or [start]),
            st.integers(0, 2_000).map(lambda s: start + s / 2),
            st.just(start + 86_400.0),
        )
    )
    return steps, start, end


# --- the rules ---------------------------------------------------------------------------


@EXAMPLES
@given(streams_and_days())
def test_the_peak_is_the_largest_total_at_any_instant_of_the_day(
    stream_and_day: tuple[list[Step], float, float],
) -> None:
    steps, start, end = stream_and_day
    done = run(steps)
    peak = peak_between(done.fleet.rows.values(), start, end, TTL)
    expected, _ = slow_peak(counting_spans(done.reports, TTL), start, end)
    assert peak.peak_cores == expected


@EXAMPLES
@given(streams_and_days())
def test_the_peak_names_the_first_instant_it_was_reached_and_the_instances_counting_then(
    stream_and_day: tuple[list[Step], float, float],
) -> None:
    steps, start, end = stream_and_day
    done = run(steps)
    peak = peak_between(done.fleet.rows.values(), start, end, TTL)
    spans = counting_spans(done.reports, TTL)
    _, first_reached = slow_peak(spans, start, end)
    assert peak.peak_at == first_reached
    if first_reached is None:
        assert peak.instances == ()
    else:
        assert list(peak.instances) == counting_at(spans, first_reached)
        assert sum(cores for _, cores in peak.instances) == peak.peak_cores


@EXAMPLES
@given(streams)
def test_the_current_total_is_the_sum_of_the_instances_counting_now(steps: list[Step]) -> None:
    done = run(steps)
    for now, made, (total, instances) in done.current_totals:
        spans = counting_spans(done.reports[:made], TTL)
        assert total == total_at(spans, now)
        assert instances == len(counting_at(spans, now))


@EXAMPLES
@given(streams)
def test_a_replica_following_the_rows_it_stores_counts_the_instances_counting_now(
    steps: list[Step],
) -> None:
    done = run(steps)
    for (now, made, _), followed in zip(done.current_totals, done.followed_totals, strict=True):
        spans = counting_spans(done.reports[:made], TTL)
        assert followed == (total_at(spans, now), len(counting_at(spans, now)))


@EXAMPLES
@given(streams_and_days(), st.integers(0, 4_000))
def test_a_days_peak_is_the_larger_of_the_peaks_of_any_two_parts_it_is_cut_into(
    stream_and_day: tuple[list[Step], float, float], cut_at: int
) -> None:
    steps, start, end = stream_and_day
    rows = run(steps).fleet.rows.values()
    cut = min(max(start, BASE + cut_at / 2), end)
    whole = peak_between(rows, start, end, TTL).peak_cores
    parts = [peak_between(rows, a, b, TTL).peak_cores for a, b in ((start, cut), (cut, end))]
    assert whole == max(parts)


@EXAMPLES
@given(streams, st.sampled_from([1.0, 10.0, 30.0, 90.0]))
def test_the_peak_holds_for_any_ttl(steps: list[Step], ttl: float) -> None:
    done = run(steps, ttl)
    start, end = BASE, BASE + 86_400.0
    peak = peak_between(done.fleet.rows.values(), start, end, ttl)
    expected, first_reached = slow_peak(counting_spans(done.reports, ttl), start, end)
    assert (peak.peak_cores, peak.peak_at) == (expected, first_reached)
