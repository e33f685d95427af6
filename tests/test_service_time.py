"""Service time: the wall clock, never running backwards and never standing still."""

from __future__ import annotations

from licensing_server.domain.clock import ManualClock, ServiceTime

START = 1_800_000_000.0
DAY = 86_400.0


def test_service_time_is_the_wall_clock_while_the_clock_runs_forward() -> None:
    clock = ManualClock(START)
    time = ServiceTime(clock, high_water_at=START - DAY)
    assert time.now() == START
    clock.advance(10)
    assert time.now() == START + 10


def test_a_clock_set_back_never_brings_service_time_back() -> None:
    clock = ManualClock(START)
    time = ServiceTime(clock, high_water_at=0)
    time.now()
    clock.set(START - DAY)
    assert time.now() == START
    assert time.last_wall == START - DAY


def test_while_the_clock_is_behind_service_time_moves_on_with_the_monotonic_clock() -> None:
    clock = ManualClock(START)
    time = ServiceTime(clock, high_water_at=0)
    time.now()
    clock.set(START - DAY)
    clock.advance(90)
    assert time.now() == START + 90
    # once the wall clock is set right again it leads, and nothing is counted twice
    clock.step(START + 120)
    assert time.now() == START + 120


def test_service_time_starts_at_the_stored_high_water_mark_when_the_clock_is_behind_it() -> None:
    clock = ManualClock(START - DAY)
    time = ServiceTime(clock, high_water_at=START)
    assert time.now() == START
    clock.advance(5)
    assert time.now() == START + 5


def test_a_wall_clock_jumping_ahead_of_the_time_that_passed_starts_a_new_span() -> None:
    clock = ManualClock(START)
    time = ServiceTime(clock, high_water_at=0)
    clock.advance(3600)
    time.now()
    assert time.span_started_at == START
    # a host suspended for a day: the wall clock jumps, the monotonic clock does not
    clock.step(START + 3600 + DAY)
    assert time.now() == START + 3600 + DAY
    assert time.span_started_at == START + 3600 + DAY
    assert time.take_closed_spans() == [(START, START + 3600)]
    assert time.take_closed_spans() == []


def test_time_passing_in_small_steps_keeps_one_span() -> None:
    clock = ManualClock(START)
    time = ServiceTime(clock, high_water_at=0)
    for _ in range(100):
        clock.advance(30)
        time.now()
    assert time.span_started_at == START
    assert time.take_closed_spans() == []
