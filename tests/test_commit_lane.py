"""The commit lane: blocking calls run one after another on a thread of their own."""

from __future__ import annotations

import asyncio
import threading

import pytest

from licensing_server.loop import ServerLoop


def test_the_lane_runs_calls_in_order_and_hands_back_results_and_errors() -> None:
    server_loop = ServerLoop(2)
    try:
        ran: list[int] = []

        def step(n: int) -> int:
            ran.append(n)
            return n * 10

        def fail() -> None:
            raise ValueError("no")

        async def scenario() -> list[int]:
            lane = server_loop.commit_lane
            results = await asyncio.gather(*(lane(lambda n=n: step(n)) for n in range(5)))
            with pytest.raises(ValueError, match="no"):
                await lane(fail)
            return results

        assert server_loop.run(scenario(), timeout=10) == [0, 10, 20, 30, 40]
        assert ran == [0, 1, 2, 3, 4]
    finally:
        server_loop.close()


def test_a_caller_that_stops_waiting_leaves_the_lane_serving_the_next() -> None:
    server_loop = ServerLoop(2)
    try:
        release = threading.Event()

        async def scenario() -> str:
            lane = server_loop.commit_lane
            held = lane(lambda: release.wait(5))
            held.cancel()  # only the waiting stops: the call runs to its end
            release.set()
            return await asyncio.wait_for(lane(lambda: "next"), 5)

        assert server_loop.run(scenario(), timeout=10) == "next"
    finally:
        server_loop.close()
