"""The Ray adapter: spreads a sweep's unfinished trials over CPUs, GPUs and machines.

Everything here is Ray plumbing (start or join a cluster, one Tune trial per payload,
optional ASHA); what a trial does, and what counts as done, is :mod:`harness.sweep.trials`'
and :mod:`harness.runs`'. Without Ray the same payloads run in-process.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from harness import failures
from harness.config import ConfigError
from harness.sweep.grid import Sweep
from harness.sweep.trials import run_trial


def _ray_trainable(config: dict) -> None:
    import ray
    from ray import tune

    ctx = ray.get_runtime_context()  # where the trial ran: trial.json "node" (one IP can hold several nodes)
    node = {"id": ctx.get_node_id(), "ip": ray.util.get_node_ip_address()}

    def on_log(metrics: dict) -> None:
        tune.report({k: v for k, v in metrics.items() if isinstance(v, (int, float))})

    result = run_trial({**config["trial"], "node": node}, on_log=on_log)
    memo = result.pop("summary", None)  # a failure its run folder could not take (a full disk)
    if memo is not None:
        result["memo_status"], result["memo_failure"] = memo["status"], memo.get("failure")
    tune.report({"done": 1, **{k: v for k, v in result.items() if v is not None}})


_DRIVER_MEMORY = 256 * 2**20  # bytes: what a data-parallel trial's driver reserves
_RAY_SOCKET_TAIL = "/session_2026-11-23_16-26-23_309369_4194304/sockets/plasma_store"  # 7-digit pid


def _ray_temp_dir(out: Path) -> str:
    # Ray puts unix sockets under its temp dir, e.g. <temp>/session_2026-11-23_16-26-23_309369_24976/
    # sockets/plasma_store, and a unix socket path must stay under 107 bytes: keep the temp dir
    # under the sweep folder only when the longest such path still fits.
    cand = out / "_ray"
    if len(str(cand)) + len(_RAY_SOCKET_TAIL) <= 107:
        cand.mkdir(parents=True, exist_ok=True)
        return str(cand)
    short = Path(tempfile.gettempdir()) / f"hray-{hashlib.sha1(str(out).encode()).hexdigest()[:8]}"
    short.mkdir(parents=True, exist_ok=True)
    return str(short)


def run_ray(sweep: Sweep, todo: list[dict], res: dict, address: str | None, log: Callable) -> list[dict]:
    """Run the payloads ``todo`` as Ray Tune trials.

    Returns:
        Per payload (in order), ``{}`` or ``{"summary": {...}}`` for a failure the trial
        could not write into its run folder (reported from the worker's memory).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray
    from ray import tune

    from harness.sweep.ray_events import TrialEvents

    address = address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        else:
            ray.init(
                num_cpus=os.cpu_count(), include_dashboard=False, ignore_reinit_error=True,
                _temp_dir=_ray_temp_dir(sweep.out_dir), log_to_driver=False,
            )
    except Exception as err:  # one line for the user; finished trials are on disk already
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise ConfigError(
            f"sweep {sweep.config.name!r}: could not start {where} ({type(err).__name__}: {first}); "
            "finished trials are kept: fix the cause and rerun with --resume, or run in-process with --local"
        ) from None
    try:
        # a data-parallel trial's driver only starts its Ray Train group, whose workers hold
        # the CPUs and GPUs (resources.workers x cpu / gpus_per_worker): the driver takes
        # none, only some memory (Tune refuses a trial that asks for nothing)
        grouped = any(p.get("group") for p in todo)
        trainable = tune.with_resources(_ray_trainable, {"cpu": 0, "gpu": 0, "memory": _DRIVER_MEMORY}
                                        if grouped else res)
        tune_dir = sweep.out_dir / "_tune"
        scheduler = None
        if sweep.config.scheduler.type == "asha":
            from ray.tune.schedulers import ASHAScheduler

            s = sweep.config.scheduler
            scheduler = ASHAScheduler(
                metric=s.metric, mode=s.mode, grace_period=s.grace_period,
                reduction_factor=s.reduction_factor, time_attr="training_iteration",
            )
        # Trials that were already finished are filtered out above; a fresh Tuner over the
        # rest is simpler and sturdier after kill -9 than Ray's own experiment state. The
        # earlier Tune folder (its event files and logs) is kept beside it, not deleted.
        if tune_dir.exists():
            n = 1
            while (sweep.out_dir / f"_tune.{n}").exists():
                n += 1
            try:
                tune_dir.rename(sweep.out_dir / f"_tune.{n}")
            except OSError:
                shutil.rmtree(tune_dir, ignore_errors=True)
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(todo)},
            tune_config=tune.TuneConfig(
                reuse_actors=True, scheduler=scheduler,
                trial_dirname_creator=lambda t: t.config["trial"]["run_id"][:80],
            ),
            run_config=tune.RunConfig(
                name="_tune", storage_path=str(sweep.out_dir), verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
                callbacks=[TrialEvents(log, len(todo))],  # a line per trial start / finish / failure
            ),
        )
        try:
            results = tuner.fit()
        except Exception as err:  # Ray keeps its own state and logs in the sweep folder too
            if not failures.is_no_space(err):
                raise
            raise failures.NoSpaceError(
                f"{failures.no_space_message(sweep.out_dir)} (Ray's state and logs are written there too; "
                "finished trials are kept: rerun with --resume)") from None
        memo: dict[str, dict] = {}
        for r in results:
            rid = r.config["trial"]["run_id"] if r.config else "?"
            metrics = r.metrics or {}
            if metrics.get("memo_status"):
                memo[rid] = {"summary": {"run_id": rid, "sweep": sweep.config.name, "status": metrics["memo_status"],
                                         "failure": metrics.get("memo_failure")}}
        return [memo.get(p["run_id"], {}) for p in todo]
    finally:
        ray.shutdown()
