"""api.inline.InlineEstimates: FIFO order, a turn for the loop between slices, errors."""

from __future__ import annotations

import asyncio

import pytest

from api.inline import InlineEstimates


def test_calls_run_in_the_order_they_were_queued() -> None:
    async def main() -> list[int]:
        queue = InlineEstimates()
        ran: list[int] = []
        calls = [queue.run(lambda n=n: ran.append(n) or n) for n in range(50)]
        results = await asyncio.gather(*calls)
        await queue.stop()
        assert results == list(range(50))
        return ran

    assert asyncio.run(main()) == list(range(50))


@pytest.mark.parametrize(("slice_s", "before"), [(0.0, 1), (60.0, 5)])
def test_the_loop_gets_a_turn_after_each_slice(slice_s: float, before: int) -> None:
    """A callback the first call schedules runs after the slice it falls in: at once with
    a zero slice, after every queued call with a long one."""

    async def main() -> list[str]:
        queue = InlineEstimates(slice_s=slice_s)
        events: list[str] = []
        loop = asyncio.get_running_loop()

        def first() -> None:
            events.append("call 0")
            loop.call_soon(events.append, "loop")

        calls = [queue.run(first)]
        calls += [queue.run(events.append, f"call {n}") for n in range(1, 5)]
        await asyncio.gather(*calls)
        await queue.stop()
        return events

    events = asyncio.run(main())
    assert events.index("loop") == before
    assert [e for e in events if e != "loop"] == [f"call {n}" for n in range(5)]


def test_an_error_reaches_its_caller_only() -> None:
    def fail() -> None:
        raise ValueError("bad layout")

    async def main() -> list[object]:
        queue = InlineEstimates()
        answers = await asyncio.gather(
            queue.run(lambda: 1), queue.run(fail), queue.run(lambda: 3), return_exceptions=True
        )
        answers.append(await queue.run(lambda: 4))  # the queue still serves
        await queue.stop()
        return answers

    first, error, third, fourth = asyncio.run(main())
    assert (first, third, fourth) == (1, 3, 4)
    assert isinstance(error, ValueError) and str(error) == "bad layout"


def test_a_cancelled_call_is_not_run() -> None:
    async def main() -> list[str]:
        queue = InlineEstimates()
        ran: list[str] = []
        waiting = asyncio.ensure_future(queue.run(ran.append, "cancelled"))
        await asyncio.sleep(0)  # queued, not yet served
        waiting.cancel()
        await queue.run(ran.append, "kept")
        await queue.stop()
        return ran

    assert asyncio.run(main()) == ["kept"]
