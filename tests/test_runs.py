"""harness.runs: every run-folder file round-trips; writes are atomic; summaries carry a schema."""

from __future__ import annotations

import json

import pytest

from harness import runs
from harness.config import RunConfig, from_dict
from harness.fsio import atomic_write


def _cfg() -> RunConfig:
    return from_dict(RunConfig, {"profile": "tiny", "stacking": {"variant": "top"}, "train": {"steps": 20}})


def test_config_round_trip_typed_with_given_keys(tmp_path):
    cfg = _cfg()
    runs.write_config(tmp_path, cfg)
    stored = runs.read_config(tmp_path)
    assert stored.config == cfg and isinstance(stored.config, RunConfig)
    assert stored.get("stacking.variant") == "top" and stored.get("teacher.spec") == cfg.teacher.spec
    (tmp_path / "config.yaml").write_text("profile: tiny\n")  # a hand-written partial config
    part = runs.read_config(tmp_path)
    assert part.get("profile") == "tiny" and part.get("teacher.spec") is None
    assert part.config.teacher.spec == RunConfig().teacher.spec  # typed: defaults filled
    assert runs.read_config(tmp_path / "nowhere") is None


def test_config_with_an_unknown_key_is_one_line(tmp_path):
    (tmp_path / "config.yaml").write_text("stacking:\n  varaint: top\n")
    with pytest.raises(runs.RunFormatError) as err:
        runs.read_config(tmp_path)
    assert "\n" not in str(err.value) and "stacking.varaint" in str(err.value)


def test_summary_round_trip_stamps_the_schema(tmp_path):
    summary = {"run_id": "r", "sweep": "s", "seed": 0, "status": "ok", "started": "a", "ended": "b"}
    written = runs.write_summary(tmp_path, summary)
    assert written is summary and summary["schema"] == runs.SCHEMA
    assert json.loads((tmp_path / "summary.json").read_text())["schema"] == runs.SCHEMA
    assert runs.read_summary(tmp_path) == summary
    assert runs.load_summary(tmp_path) == (summary, None)


def test_old_summary_spelling_and_no_schema_read_as_schema_1(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"status": "ok", "start_time": "a", "end_time": "b"}))
    s = runs.read_summary(tmp_path)
    assert s["started"] == "a" and s["ended"] == "b" and "start_time" not in s


def test_unknown_schema_is_a_one_line_error(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"schema": 99, "status": "ok"}))
    with pytest.raises(runs.RunFormatError) as err:
        runs.read_summary(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "schema 99" in msg and "summary.json" in msg
    summary, why = runs.load_summary(tmp_path)  # the report's reader lists it, never raises
    assert summary is None and "schema 99" in why


def test_missing_and_malformed_files(tmp_path):
    assert runs.read_summary(tmp_path) is None and runs.load_summary(tmp_path) == (None, "missing")
    (tmp_path / "summary.json").write_text('{"status": ')
    assert runs.read_summary(tmp_path) is None
    assert runs.load_summary(tmp_path)[1].startswith("not valid JSON")
    (tmp_path / "summary.json").write_text("[1, 2]")
    assert "not a mapping" in runs.load_summary(tmp_path)[1]


def test_metrics_round_trip_and_trim(tmp_path):
    with runs.open_metrics(tmp_path) as fh:
        for step in (1, 2, 3):
            runs.append_metrics(fh, {"step": step, "loss": 1.0 / step})
    rows, bad = runs.read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3] and bad == 0
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write("not json\n")
    assert runs.read_metrics(tmp_path / "metrics.jsonl")[1] == 1
    runs.open_metrics(tmp_path, keep_until_step=2).close()  # a resume from step 2
    assert [r["step"] for r in runs.read_metrics(tmp_path)[0]] == [1, 2]


def test_superb_analysis_trial_round_trip(tmp_path):
    superb = {"upstream": "x", "tasks": {"ks": {"value": 0.5}}, "score": {"score": 10.0}}
    runs.write_superb(tmp_path, superb)
    assert runs.load_superb(tmp_path) == (superb, None)
    runs.write_superb(tmp_path / "memo" / "b.json", superb)  # a baseline's memo file
    assert json.loads((tmp_path / "memo" / "b.json").read_text()) == superb
    analysis = {"cka_teacher": [[1.0, 0.5]], "cka_self": [[1.0]]}
    runs.write_analysis(tmp_path, analysis)
    assert runs.load_analysis(tmp_path) == (analysis, None)
    trial = {"sweep": "s", "run_id": "r", "overrides": {"loss.w": 0.5}, "evaluate": ["ks"], "threads": 2}
    assert runs.write_trial(tmp_path, trial, reused_from="elsewhere") == {
        "sweep": "s", "run_id": "r", "overrides": {"loss.w": 0.5}, "evaluate": ["ks"], "reused_from": "elsewhere"}
    assert runs.read_trial(tmp_path)["reused_from"] == "elsewhere"


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "summary.json"
    runs.write_summary(tmp_path, {"status": "ok", "n": 1})
    before = path.read_text()
    def boom(tmp):  # killed half-way through writing the temporary file
        tmp.write_text('{"half": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, boom)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]  # no temporary left


def test_trial_done(tmp_path):
    assert not runs.trial_done(tmp_path, [])
    runs.write_summary(tmp_path, {"status": "running"})
    assert not runs.trial_done(tmp_path, [])
    runs.write_summary(tmp_path, {"status": "ok", "tasks": {"ks": {}}})
    assert runs.trial_done(tmp_path, ["ks"]) and not runs.trial_done(tmp_path, ["ks", "sid"])
    runs.write_summary(tmp_path, {"status": "failed: boom"})
    assert runs.trial_done(tmp_path, ["ks"])


def test_flatten_keeps_or_encodes_lists():
    d = {"a": {"b": 1, "c": [1, 2]}, "d": "x"}
    assert runs.flatten(d) == {"a.b": 1, "a.c": [1, 2], "d": "x"}
    assert runs.flatten(d, json_lists=True) == {"a.b": 1, "a.c": "[1, 2]", "d": "x"}


def test_keep_tasks_rescores_with_superb_score(tmp_path):
    runs.write_superb(tmp_path, {"tasks": {"ks": {}, "sid": {}},
                                 "score": {"score": 600.0, "per_task": {"ks": 400.0, "sid": 800.0},
                                           "tasks": ["ks", "sid"], "skipped": {"er": "no value"}}})
    summary = {"status": "ok", "tasks": {"ks": {}, "sid": {}}, "superb_score": 600.0}
    runs.keep_tasks(tmp_path, summary, ["ks", "er"])
    assert summary["superb_score"] == 400.0 and list(summary["tasks"]) == ["ks"]
    score = runs.load_superb(tmp_path)[0]["score"]
    assert score == {"score": 400.0, "per_task": {"ks": 400.0}, "tasks": ["ks"], "skipped": {"er": "no value"}}


def test_runs_csv_from_run_folders(tmp_path):
    for rid, status in (("a-s0", "ok"), ("b-s0", "failed: x")):
        run = tmp_path / rid
        runs.write_trial(run, {"sweep": "s", "run_id": rid, "overrides": {"train.seed": 0}, "evaluate": []})
        runs.write_summary(run, {"status": status, "variant": "top", "seed": 0,
                                 "tasks": {"ks": {"metric": "accuracy", "direction": "higher", "value": 0.5, "n": 4}}
                                 if status == "ok" else {}})
    import pandas as pd

    df = pd.read_csv(runs.write_runs_csv(tmp_path))
    assert list(df.columns[: len(runs.RUN_COLUMNS)]) == runs.RUN_COLUMNS and "grid.train.seed" in df.columns
    assert list(df["task"].fillna("")) == ["ks", ""] and not list(tmp_path.glob("*.tmp*"))


def test_report_lists_an_unknown_schema_in_one_line(tmp_path):
    from harness.report.collect import collect

    run = tmp_path / "s" / "r-s0"
    runs.write_config(run, _cfg())
    (run / "summary.json").write_text(json.dumps({"schema": 7, "status": "ok"}))
    r = collect([tmp_path / "s"])
    status = r.runs.iloc[0]["status"]
    assert not r.runs.iloc[0]["ok"] and "schema 7" in status and "\n" not in status
    assert r.runs.iloc[0]["cfg.stacking.variant"] == "top"  # config.yaml read typed all the same


def test_config_changes_names_the_keys(tmp_path):
    from harness.config import RunConfig, to_dict

    want = to_dict(RunConfig())
    assert runs.config_changes(tmp_path, want) == []  # no config.yaml: nothing to differ
    runs.write_config(tmp_path, RunConfig())
    assert runs.config_changes(tmp_path, want) == []
    changed = {**want, "train": {**want["train"], "steps": want["train"]["steps"] + 1}}
    assert runs.config_changes(tmp_path, changed) == [f"train.steps: {want['train']['steps']} -> "
                                                      f"{want['train']['steps'] + 1}"]
    (tmp_path / "config.yaml").write_text("train:\n  stepz: 3\n")
    (msg,) = runs.config_changes(tmp_path, want)
    assert msg.startswith("its config.yaml is not one this harness reads (") and "stepz" in msg
