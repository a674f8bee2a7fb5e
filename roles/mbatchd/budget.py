"""How much work one mbatchd turn may take on: sbatchd reports to apply and slots to place.

A turn's cost grows with that work (each report or placement changes a job, the commit writes
a few pages per job changed, then messages go out), and what one costs depends on the machine,
on how busy its CPUs are and on the store's size. So the budget is not a fixed count: it is
TARGET seconds divided by the measured cost of one unit of work (a report applied or a slot
placed, averaged over recent turns). TARGET is well under the 100 ms goal for a turn, so that
a turn slowed by a busy CPU or an SQLite checkpoint still stays under it. Work left over
waits for the next turn.
"""

TARGET = 0.035  # seconds a turn should last at most, on average
PLACE_MIN, PLACE_MAX = 50, 2000  # slots placed per turn: the budget's bounds
REPORTS_PER_PLACE = 2  # each job started comes back as a START and an EXIT report
SAMPLE = 100  # units of work a turn must do to count in the estimate


class TurnBudget:
    def __init__(self, unit: float = 50e-6) -> None:
        self.unit = unit  # seconds per unit of work, a moving average

    @property
    def places(self) -> int:
        units = TARGET / self.unit
        return int(min(PLACE_MAX, max(PLACE_MIN, units / (1 + REPORTS_PER_PLACE))))

    @property
    def reports(self) -> int:
        return self.places * REPORTS_PER_PLACE

    def turn(self, seconds: float, work: int) -> None:
        """A turn that applied and placed `work` reports and slots took `seconds`."""
        if work >= SAMPLE:
            self.unit += (seconds / work - self.unit) / 4
