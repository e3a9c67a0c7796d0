"""Progress lines for long jobs: `step k/N`, elapsed time and an ETA from a moving average of the step time.

One plain line per event, so log files stay greppable (no carriage returns); the same helper serves training,
LMDB builds, landscape crunching and the benchmark."""
import time


def duration(seconds):
    """h:mm:ss, or m:ss under an hour."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class Progress:
    """Counts work items from `done` to `total`; `tick()` after each returns 'k/N | elapsed .. | eta ..'."""

    def __init__(self, total, done=0, smoothing=0.1, clock=time.monotonic):
        self.total, self.done, self.smoothing, self.clock = total, done, smoothing, clock
        self.started = self.last = clock()
        self.average = None  # seconds per item, exponential moving average

    def tick(self, count=1):
        now = self.clock()
        per_item = (now - self.last) / count
        self.average = per_item if self.average is None else (
            self.smoothing * per_item + (1 - self.smoothing) * self.average)
        self.done, self.last = self.done + count, now
        return self.describe()

    @property
    def eta(self):
        return None if self.average is None else self.average * max(0, self.total - self.done)

    def describe(self):
        eta = "?" if self.eta is None else duration(self.eta)
        return f"{self.done}/{self.total} | elapsed {duration(self.clock() - self.started)} | eta {eta}"
