"""One log line per unit of a long job (epoch, chunk), so a person watching sees it is alive.

    train shapes-lstm-target-s0: epoch 12/45 (27%) loss=1.234 elapsed 14.2s ETA 38.9s

Lines go through ``logging``; ``m4i.workflow.run`` sends them to the rule's log file and stderr.
"""
from __future__ import annotations

import logging
import time


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Progress:
    """Progress of ``total`` units; ``start`` units were done before this run (a resumed run),
    so the ETA uses only this run's pace. ``min_interval_s`` throttles many small chunks (the
    last unit is always logged)."""

    def __init__(self, what: str, total: int, unit: str = "epoch", logger: logging.Logger | None = None,
                 start: int = 0, min_interval_s: float = 0.0, clock=time.monotonic):
        self.what, self.total, self.unit, self.start = what, int(total), unit, int(start)
        self.log = logger or logging.getLogger("m4i.progress")
        self.min_interval_s = float(min_interval_s)
        self._clock = clock
        self._t0 = clock()
        self._last = None

    def line(self, done: int, **values) -> str:
        elapsed = self._clock() - self._t0
        pct = f" ({100.0 * done / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.what}: {self.unit} {done}/{self.total}{pct}"]
        parts += [f"{k}={_fmt(v)}" for k, v in values.items()]
        parts.append(f"elapsed {elapsed:.1f}s")
        ran = done - self.start
        if ran > 0 and done < self.total:
            parts.append(f"ETA {elapsed / ran * (self.total - done):.1f}s")
        return " ".join(parts)

    def update(self, done: int, **values) -> None:
        now = self._clock()
        last = done >= self.total
        if not last and self._last is not None and now - self._last < self.min_interval_s:
            return
        self._last = now
        self.log.info("%s", self.line(done, **values))

    def resumed(self, from_done: int, path: str) -> None:
        self.log.info("%s: resumed from %s %d (%s)", self.what, self.unit, from_done, path)
