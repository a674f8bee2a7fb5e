"""How much work one mbatchd turn may take on: slots to place and sbatchd reports to apply.

A turn's cost grows with that work (the commit writes a few pages per job changed, then one
message per host goes out), and what a job costs depends on the machine and on how busy its
CPUs are. Fixed caps would be too large on a loaded machine and needlessly small on an idle
one, so the budget follows the measured length of the turns that used all of it: it aims at
TARGET seconds, well under the 100 ms goal for a turn, so that a turn slowed by a busy CPU or
an SQLite checkpoint still stays under it. The work left over waits for the next turn.
"""
TARGET = 0.05                      # seconds a full turn should last
PLACE_MIN, PLACE_MAX = 50, 2000    # slots placed per turn: the budget's bounds
REPORTS_PER_PLACE = 2              # each job started comes back as a START and an EXIT report


class TurnBudget:
    def __init__(self, places=500):
        self.places = places

    @property
    def reports(self):
        return self.places * REPORTS_PER_PLACE

    def full_turn(self, seconds):
        """A turn that stopped at its budget (reports or slots left) took `seconds`: move the
        budget halfway to what would have taken TARGET, at most doubling it."""
        want = self.places * min(2.0, TARGET / max(seconds, 1e-6))
        self.places = int(min(PLACE_MAX, max(PLACE_MIN, (self.places + want) / 2)))
