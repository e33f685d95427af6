"""Service time: the wall clock, never running backwards and never standing still.

And the manual clock the tests move it with, which must keep its own promises
(advance and set forward let time pass; set back and step move the wall clock
alone) for any test of a time rule to mean something.
"""

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


def test_service_time_raised_to_another_replicas_later_time_never_runs_behind_it() -> None:
    clock = ManualClock(START)
    time = ServiceTime(clock, high_water_at=0)
    time.raise_to(START + 60)  # another replica, whose clock is ahead, has seen this
    assert time.now() == START + 60
    clock.advance(5)
    assert time.now() == START + 65
    time.raise_to(START)  # an earlier time moves nothing
    assert time.now() == START + 65


def test_service_time_starts_at_the_stored_high_water_mark_when_the_clock_is_behind_it() -> None:
    clock = ManualClock(START - DAY)
    time = ServiceTime(clock, high_water_at=START)
    # the wall clock it started from is known before time is first read
    assert time.last_wall == START - DAY
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


def test_a_wall_clock_up_to_a_second_ahead_of_the_time_that_passed_is_not_a_clock_step() -> None:
    clock = ManualClock(START)
    time = ServiceTime(clock, high_water_at=0)
    clock.step(START + 1.0)
    assert time.now() == START + 1.0
    assert time.span_started_at == START
    clock.step(START + 2.5)
    assert time.now() == START + 2.5
    assert time.span_started_at == START + 2.5
    assert time.take_closed_spans() == [(START, START + 1.0)]


# --- the manual clock -------------------------------------------------------------------


def test_a_manual_clock_advanced_moves_the_wall_clock_and_the_time_that_passed() -> None:
    clock = ManualClock(START)
    origin = clock.monotonic()
    assert clock.advance(90) == START + 90
    assert clock.advance(30) == START + 120
    assert clock.now() == START + 120
    assert clock.monotonic() - origin == 120


def test_a_manual_clock_set_forward_lets_the_time_in_between_pass() -> None:
    clock = ManualClock(START)
    origin = clock.monotonic()
    clock.set(START + 10)
    clock.set(START + 30)
    assert clock.now() == START + 30
    assert clock.monotonic() - origin == 30


def test_a_manual_clock_set_back_steps_the_wall_clock_while_no_time_passes() -> None:
    clock = ManualClock(START)
    origin = clock.monotonic()
    clock.set(START - DAY)
    assert clock.now() == START - DAY
    assert clock.monotonic() == origin
    # set forward again, only the time after the step back passes
    clock.set(START - DAY + 60)
    assert clock.monotonic() - origin == 60


def test_a_manual_clock_stepped_moves_the_wall_clock_alone_either_way() -> None:
    clock = ManualClock(START)
    origin = clock.monotonic()
    clock.step(START + DAY)
    assert clock.now() == START + DAY
    clock.step(START - DAY)
    assert clock.now() == START - DAY
    assert clock.monotonic() == origin
