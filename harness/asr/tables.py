"""Markdown tables of ASR result files, for docs/benchmarks.md and the README (generated,
and checked against their files by tests/bench/test_docs_tables.py, never typed).

* :func:`format_pilots`: the student pilots (``docs/benchmarks/asr-student-pilots-*.json``);
* :func:`format_study`: an ``askd.json`` (:func:`harness.asr.study.write_study_table`):
  each arm's greedy WER with its 95% interval over seeds, its speedup, and each paired
  difference with its interval and verdict.
"""

from __future__ import annotations


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def format_pilots(data: dict) -> str:
    """One row per pilot run: shape, learning rate, CTC weight, WER, speedup, training time."""
    lines = ["| pilot | width | enc + dec layers | lr | CTC weight | params | greedy WER (%) | speedup | "
             "train s | what |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in data["rows"]:
        lines.append(f"| {r['pilot']} | {r['d_model']} | {r['encoder_layers']} + {r['decoder_layers']} | {r['lr']:g} | "
                     f"{r['ctc_weight']:g} | {r['params'] / 1e6:.2f} M | {_pct(r['wer'])} | {r['speedup']:.2f}x | "
                     f"{r['train_seconds']:.0f} | {r['note']} |")
    t = data["rows"][0]
    lines.append("")
    lines.append(f"Teacher: {t['teacher_params'] / 1e6:.2f} M parameters, greedy WER {_pct(t['teacher_wer'])} % "
                 f"on the same {t['n']} utterances.")
    return "\n".join(lines)


def format_study(data: dict) -> str:
    """The arms of an ``askd.json`` (WER mean and 95% interval, speedup), then its paired
    differences (estimate, interval, verdict): every number as the file records it."""
    st = data.get("stats") or {}
    by = data.get("by_objective") or {}
    teacher = data.get("teacher") or {}

    def ci(m):
        if not m or m.get("ci_low") is None:
            return "n/a"
        return f"[{_pct(m['ci_low'])}, {_pct(m['ci_high'])}]"

    lines = ["| model | seeds | greedy WER (%) | 95% CI | speedup (mean ± std) | params |",
             "| --- | ---: | ---: | --- | ---: | ---: |",
             f"| teacher | - | {_pct(teacher.get('wer'))} | - | 1.00x | {teacher.get('params', 0) / 1e6:.2f} M |"]
    for arm, w in (st.get("wer") or {}).items():
        m = by.get(arm) or {}
        sp = f"{m['speedup_mean']:.2f}x ± {m['speedup_std']:.2f}" if m.get("speedup_mean") is not None else "n/a"
        lines.append(f"| {arm} | {w['n']} | {_pct(w['estimate'])} | {ci(w)} | {sp} | {m.get('params', 0) / 1e6:.2f} M |")
    lines += ["", "| first - second | seeds | WER points | 95% CI | verdict |", "| --- | ---: | ---: | --- | --- |"]
    for d in st.get("differences") or []:
        est = "n/a" if d["estimate"] is None else f"{100 * d['estimate']:+.2f}"
        low = "n/a" if d.get("ci_low") is None else f"[{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}]"
        lines.append(f"| {d['first']} - {d['second']} | {d['n']} | {est} | {low} | "
                     f"{'resolved' if d.get('resolved') else 'not resolved'} |")
    return "\n".join(lines)
