"""Progress with an ETA for the long steps (distill, ASR training, corpus build, sweeps).

One library, ``tqdm``: on a terminal a live bar (steps, rate, ETA, and the latest loss /
depth as its postfix); on a pipe or a log file (``./run_all.sh > log``, CI, a Ray worker)
one plain line per update, e.g.::

    [distill] step 300/900 (33%), depth 4, loss 0.4123, 4.1 steps/s, ETA 2:26

The rate is measured over this process's own updates (a resumed run does not count the
steps it skipped), so the ETA is the time left at the recent pace: a run that grows deeper
slows down later, and its ETA grows with it.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Optional, TextIO


def eta(seconds: Optional[float]) -> str:
    """``2:26`` / ``1:02:03`` (tqdm's format), ``?`` when unknown."""
    from tqdm import tqdm

    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    return tqdm.format_interval(seconds)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class Progress:
    """Progress of ``total`` units of work.

    Args:
        total: units to do (steps, utterances, trials).
        desc: the prefix (``distill``, ``asr``, ``corpus``).
        unit: what a unit is, for the plain line (``step``).
        stream: where it goes (default stderr).
        tty: force the bar (True) or the plain lines (False); default: ``stream.isatty()``.
        start: units already done before this process; None: unknown yet (a run that may
            resume), taken from the first update, which then shows no rate.
    """

    def __init__(self, total: int, desc: str, unit: str = "step", stream: Optional[TextIO] = None,
                 tty: Optional[bool] = None, start: Optional[int] = 0) -> None:
        self.total, self.desc, self.unit = int(total), desc, unit
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._anchor = start is None
        self.t0, self.start = time.perf_counter(), int(start or 0)
        self.done = self.start
        self._bar = None
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self.start, desc=desc, unit=unit, file=self.stream,
                             dynamic_ncols=True, leave=True)

    def rate(self) -> Optional[float]:
        """Units per second over this process's updates (None before the first)."""
        dt = time.perf_counter() - self.t0
        n = self.done - self.start
        return n / dt if n > 0 and dt > 0 else None

    def eta_seconds(self) -> Optional[float]:
        r = self.rate()
        return (self.total - self.done) / r if r else None

    def line(self, **info: Any) -> str:
        """The plain progress line (what a pipe gets)."""
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        parts = [f"[{self.desc}] {self.unit} {self.done}/{self.total}{pct}"]
        parts += [f"{k} {_fmt(v)}" for k, v in info.items() if v is not None]
        r = self.rate()
        if r:
            parts.append(f"{r:.3g} {self.unit}s/s" if r >= 0.1 else f"{1 / r:.3g} s/{self.unit}")
        parts.append(f"ETA {eta(self.eta_seconds())}")
        return ", ".join(parts)

    def tick(self, done: int, **info: Any) -> str:
        """Set the units done (absolute) and return the plain line without showing it, for
        a caller that routes its lines through its own log (the cache build, pretraining)."""
        if self._anchor:
            self._anchor, self.t0, self.start = False, time.perf_counter(), int(done)
        self.done = max(self.done, int(done))
        return self.line(**info)

    def update(self, done: int, **info: Any) -> str:
        """Set the units done so far (absolute) and show the progress; returns the plain line."""
        if self._anchor:  # the first update of a run that may have resumed: the rate starts here
            self._anchor, self.t0, self.start = False, time.perf_counter(), int(done)
            if self._bar is not None:
                self._bar.update(int(done) - self.done)
            self.done = int(done)
        done = max(self.done, int(done))
        if self._bar is not None:
            self._bar.update(done - self.done)
            self.done = done
            if info:
                self._bar.set_postfix({k: _fmt(v) for k, v in info.items() if v is not None}, refresh=True)
            return self.line(**info)
        self.done = done
        text = self.line(**info)
        print(text, file=self.stream, flush=True)
        return text

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
