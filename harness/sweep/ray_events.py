"""A Ray Tune callback that prints one line per trial event while a sweep runs.

The driver process gets Tune's trial events (workers' own output stays in their logs under
``results/<sweep>/_ray/session_latest/logs/``)::

    [sweep] started objective=kd-s0 (1 running, 0/15 done)
    [sweep] finished objective=kd-s0: ok in 1:32, loss 2.84 (1/15 done, 2 running, ETA 10:44)
    [sweep] failed objective=kd-s1 after 0:03: failed: non-finite loss at step 3 (2/15 done, ...)

ETA = trials left x the mean duration of the finished ones / the trials that ran at once
(the most seen running together): the time left if the rest cost what the finished cost.

Imported only by :mod:`harness.sweep.ray_adapter` (it imports Ray).
"""

from __future__ import annotations

import time
from typing import Callable

from ray.tune import Callback

from harness.progress import eta

KEYS = (("train_seconds", "train {:.0f} s"), ("loss", "loss {:.4g}"), ("superb_score", "SUPERB {:.1f}"),
        ("wer", "WER {:.3f}"), ("speedup", "{:.2f}x the teacher's speed"))


def _rid(trial) -> str:
    try:
        return trial.config["trial"]["run_id"]
    except (KeyError, TypeError):
        return str(trial)


class TrialEvents(Callback):
    """Prints started / finished / failed lines with the sweep's ETA (see the module docstring).

    Args:
        log: where lines go (``print`` when unpickled: Tune may save its callbacks).
        total: trials in this run of the sweep.
        done: trials already finished before it (a resumed sweep), counted in ``x/N done``.
    """

    def __init__(self, log: Callable[[str], None], total: int, done: int = 0) -> None:
        self.log, self.total, self.before = log, total, done
        self.started: dict[str, float] = {}
        self.durations: list[float] = []
        self.most = 0

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "log"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.log = print

    def _tail(self) -> str:
        done = len(self.durations)
        running = len(self.started)
        left = self.total - done
        if self.durations and left:
            est = left * (sum(self.durations) / done) / max(1, self.most)
            when = f", ETA {eta(est)}"
        else:
            when = ""
        return f"({self.before + done}/{self.before + self.total} done, {running} running{when})"

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started[_rid(trial)] = time.perf_counter()
        self.most = max(self.most, len(self.started))
        self.log(f"[sweep] started {_rid(trial)} {self._tail()}")

    def _end(self, trial) -> float:
        t0 = self.started.pop(_rid(trial), None)
        dt = time.perf_counter() - t0 if t0 is not None else 0.0
        self.durations.append(dt)
        return dt

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        dt = self._end(trial)
        res = trial.last_result or {}
        status = res.get("status", "?")
        parts = [fmt.format(res[k]) for k, fmt in KEYS if isinstance(res.get(k), (int, float))]
        more = (", " + ", ".join(parts)) if parts and status == "ok" else ""
        self.log(f"[sweep] finished {_rid(trial)}: {status} in {eta(dt)}{more} {self._tail()}")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        dt = self._end(trial)
        why = str(getattr(trial, "error_msg", None) or "the worker died (killed, or out of memory)")
        self.log(f"[sweep] failed {_rid(trial)} after {eta(dt)}: {why.strip().splitlines()[-1][:200]} {self._tail()}")
