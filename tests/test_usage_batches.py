"""The storage's group commit: a long queue is written in transactions of a bounded size."""

from __future__ import annotations

import threading

from licensing_server.storage import GroupCommit


def test_a_long_queue_is_written_in_bounded_batches_each_succeeding_or_failing_on_its_own() -> None:
    written: list[list[int]] = []

    def write(items: list[int]) -> None:
        if 5 in items:
            raise RuntimeError("the database refused this one")
        written.append(items)

    commits = GroupCommit(threading.Lock(), write, max_batch=3)
    tickets = [commits.enqueue(n) for n in range(8)]
    commits.flush()
    assert written == [[0, 1, 2], [6, 7]]
    assert all(t.done for t in tickets)
    assert [n for n, t in enumerate(tickets) if t.error is not None] == [3, 4, 5]


def test_without_a_bound_everything_queued_is_one_batch() -> None:
    written: list[list[int]] = []
    commits = GroupCommit(threading.Lock(), written.append)
    for n in range(1000):
        commits.enqueue(n)
    commits.flush()
    assert written == [list(range(1000))]


def test_a_flush_writes_what_was_queued_when_it_began_not_what_arrives_meanwhile() -> None:
    commits: GroupCommit[int]
    written: list[list[int]] = []

    def write(items: list[int]) -> None:
        written.append(items)
        commits.enqueue(100 + len(written))  # a report recorded while this batch is written

    commits = GroupCommit(threading.Lock(), write, max_batch=2)
    for n in range(4):
        commits.enqueue(n)
    commits.flush()
    assert written == [[0, 1], [2, 3]]
    assert [ticket.item for ticket in commits.queue] == [101, 102]
