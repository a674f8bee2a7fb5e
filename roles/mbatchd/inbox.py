"""sbatchd reports waiting for a turn.

A turn applies at most a budget of reports, oldest first; the rest wait in arrival order for
the next turn. With 10,000 hosts a loop iteration can bring thousands of report frames at once:
applied together, their commit and acknowledgements held one turn for hundreds of ms. Order is
what matters: the reports of one job come from one host over one connection, in order, and
this queue is FIFO, so they are applied in the order sbatchd sent them.
"""

from collections import deque
from collections.abc import Iterator
from typing import Any

from lavalite.messages import JobReport, Report
from lavalite.peer import Peer


class Inbox:
    def __init__(self) -> None:
        self.frames: deque[list[Any]] = (
            deque()
        )  # [peer, msg, index of its first report not yet applied]
        self.waiting = 0  # reports not yet applied

    def __bool__(self) -> bool:
        return bool(self.frames)

    def put(self, peer: Peer, msg: Report, reports: list[JobReport]) -> None:
        self.frames.append([peer, msg, 0])
        self.waiting += len(reports)

    def take(self, budget: int) -> Iterator[tuple[Peer, Report, list[JobReport]]]:
        """Yield (peer, msg, reports) for at most `budget` reports in all. A frame larger than
        what is left of the budget is split: its tail stays first in line."""
        while self.frames and budget > 0:
            entry = self.frames[0]
            peer, msg, start = entry
            reports = msg["reports"]
            end = min(len(reports), start + budget)
            if end == len(reports):
                self.frames.popleft()
            else:
                entry[2] = end
            budget -= end - start
            self.waiting -= end - start
            yield peer, msg, reports[start:end]
