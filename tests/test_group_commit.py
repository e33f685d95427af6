"""The group commit on the event loop: every report is carried by a commit, and reports that
arrive together share one."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from licensing_server.group_commit import GATHER_SECONDS, MAX_GATHER_SECONDS, GroupCommit


class Ticket:
    def __init__(self) -> None:
        self.done = False


class Queue:
    """What the store does: a commit carries every ticket queued when it starts."""

    def __init__(self) -> None:
        self.queued: list[Ticket] = []
        self.commits: list[int] = []
        self.pool: ThreadPoolExecutor | None = None  # the pool commits run in
        self.takes = 0.0  # seconds a commit takes
        self._lock = threading.Lock()

    def record(self) -> Ticket:
        ticket = Ticket()
        with self._lock:
            self.queued.append(ticket)
        return ticket

    def commit(self) -> None:
        with self._lock:
            batch, self.queued = self.queued, []
        time.sleep(self.takes)
        self.commits.append(len(batch))
        for ticket in batch:
            ticket.done = True


POOL_WORKERS = 2


def run(scenario: Callable[[GroupCommit, Queue], Any], **settings: float) -> Queue:
    queue = Queue()
    with ThreadPoolExecutor(POOL_WORKERS) as pool:
        queue.pool = pool

        async def main() -> None:
            loop = asyncio.get_running_loop()

            def offload(function: Callable[[], None]) -> Any:
                return loop.run_in_executor(pool, function)

            await scenario(GroupCommit(queue.commit, offload, **settings), queue)

        asyncio.run(main())
    return queue


def test_a_lone_report_gets_a_commit_of_its_own_at_once() -> None:
    async def scenario(group: GroupCommit, queue: Queue) -> None:
        for _ in range(3):
            ticket = queue.record()
            await group.wait(ticket)
            assert ticket.done

    assert run(scenario).commits == [1, 1, 1]


def test_reports_arriving_together_share_commits_and_each_is_carried() -> None:
    async def scenario(group: GroupCommit, queue: Queue) -> None:
        async def report() -> Ticket:
            ticket = queue.record()
            await group.wait(ticket)
            return ticket

        for _ in range(5):
            tickets = await asyncio.gather(*(report() for _ in range(32)))
            assert all(ticket.done for ticket in tickets)

    commits = run(scenario).commits
    assert sum(commits) == 5 * 32
    assert len(commits) < 5 * 32 / 4


def test_a_report_recorded_while_a_commit_runs_is_carried_by_the_next() -> None:
    async def scenario(group: GroupCommit, queue: Queue) -> None:
        first = queue.record()
        waiting = asyncio.ensure_future(group.wait(first))
        await asyncio.sleep(0)  # the first commit is on its way
        second = queue.record()
        await group.wait(second)
        await waiting
        assert first.done and second.done

    assert sum(run(scenario).commits) == 2


def test_a_caller_that_gives_up_while_leading_a_commit_strands_no_one() -> None:
    async def scenario(group: GroupCommit, queue: Queue) -> None:
        first = queue.record()
        leader = asyncio.ensure_future(group.wait(first))
        await asyncio.sleep(0)  # the first caller leads a commit
        second = queue.record()
        follower = asyncio.ensure_future(group.wait(second))
        await asyncio.sleep(0)
        leader.cancel()
        await asyncio.wait_for(follower, 5)
        assert second.done

    assert sum(run(scenario).commits) == 2


def test_a_lone_report_whose_caller_gives_up_before_its_commit_runs_is_still_committed() -> None:
    async def scenario(group: GroupCommit, queue: Queue) -> None:
        loop = asyncio.get_running_loop()
        release = threading.Event()
        # both workers of the pool busy: the commit waits in the pool's queue
        busy = [loop.run_in_executor(queue.pool, release.wait, 5) for _ in range(POOL_WORKERS)]
        ticket = queue.record()
        leader = asyncio.ensure_future(group.wait(ticket))
        await asyncio.sleep(0)
        leader.cancel()  # cancels the commit before it ran
        release.set()
        await asyncio.gather(*busy)
        for _ in range(500):
            if ticket.done:
                break
            await asyncio.sleep(0.01)
        assert ticket.done

    run(scenario)


def test_reports_arriving_together_gather_as_long_as_a_commit_usually_takes_up_to_a_bound() -> None:
    async def scenario(group: GroupCommit, queue: Queue) -> None:
        assert group.gather_seconds == GATHER_SECONDS
        queue.takes = 0.004  # a store whose commit makes round trips
        for _ in range(10):
            await group.wait(queue.record())
        assert 0.003 <= group.gather_seconds <= 0.005 + GATHER_SECONDS
        queue.takes = 2 * MAX_GATHER_SECONDS
        for _ in range(10):
            await group.wait(queue.record())
        assert group.gather_seconds == MAX_GATHER_SECONDS
        queue.takes = 0.0
        for _ in range(10):
            await group.wait(queue.record())
        assert group.gather_seconds < MAX_GATHER_SECONDS  # back down with the commits

    run(scenario)


def test_one_slow_commit_does_not_make_the_next_gather_as_long() -> None:
    async def scenario(group: GroupCommit, queue: Queue) -> None:
        queue.takes = 0.004
        for _ in range(10):
            await group.wait(queue.record())
        queue.takes = 0.2  # PostgreSQL, or the host, busy for a moment
        await group.wait(queue.record())
        assert group.gather_seconds < 0.1

    run(scenario, max_gather_seconds=1.0)
