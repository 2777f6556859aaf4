"""Job events wait for the hub's broker, in order, instead of being lost."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from nbrelay.errors import HubUnavailable
from nbrelay.hub.publish_queue import PublishQueue
from nbrelay.models import Event


class AwayHub:
    """A hub whose broker is away until `back` is set."""

    def __init__(self) -> None:
        self.back = asyncio.Event()
        self.published: list[str] = []
        self.tries = 0

    async def publish(self, event: Event, streams: Sequence[str]) -> list[Event]:
        self.tries += 1
        if not self.back.is_set():
            raise HubUnavailable("Redis did not answer")
        self.published.append(event.data["n"])
        return [event]


def _event(kind: str, n: str) -> Event:
    return Event(kind, {"job": 1, "n": n})


async def test_events_wait_while_the_broker_is_away_and_go_out_in_order_when_it_is_back() -> None:
    """Found from outside: during a 30 s Redis stall a job's end was published to no one, and never again."""
    hub = AwayHub()
    queue = PublishQueue(hub)  # type: ignore[arg-type]
    queue.start()
    for n, kind in enumerate(["job.progress", "job.output", "job.succeeded"]):
        queue.put(_event(kind, str(n)), ["user:a", "job:1"])  # returns at once: the recorder goes on
    await asyncio.sleep(0.5)
    assert hub.published == [] and hub.tries >= 2  # tried again, in a while
    hub.back.set()
    await queue.close(wait_s=10)
    assert hub.published == ["0", "1", "2"]


async def test_past_its_limit_the_queue_gives_up_an_output_before_a_jobs_end() -> None:
    hub = AwayHub()
    queue = PublishQueue(hub, limit=3)  # type: ignore[arg-type]
    for n, kind in enumerate(["job.succeeded", "job.output", "job.failed", "job.progress"]):
        queue.put(_event(kind, str(n)), ["user:a"])
    assert queue.dropped == 1
    hub.back.set()
    queue.start()
    await queue.close(wait_s=10)
    assert hub.published == ["0", "2", "3"]  # the output went; both ends stayed


async def test_closing_while_the_broker_stays_away_ends_after_the_wait() -> None:
    queue = PublishQueue(AwayHub())  # type: ignore[arg-type]
    queue.start()
    queue.put(_event("job.failed", "x"), ["user:a"])
    await asyncio.wait_for(queue.close(wait_s=0.3), timeout=5)
