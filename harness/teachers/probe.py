"""``harness teacher probe``: does a teacher hold layer-specific knowledge?

Per layer (front-end output, hidden states 0..L): a linear phone probe (frame level) and a
linear speaker probe (utterance level, mean pooled), each repeated over seeds to measure
run-to-run noise, plus linear CKA between all layer pairs. The same is measured on a
random-init twin (same architecture, untrained) as the control. Writes ``probe.json`` and
``probe.png`` into the output folder.

The checks (``probe.json["checks"]``, what the embedded teacher must show):
* ``best_phone_layer_is_transformer``: the best phone layer is one of layers 1..L, and it
  beats the front-end output by more than ``2 * sqrt(std_best^2 + std_frontend^2)``
  (seed-to-seed standard deviations);
* ``profiles_differ``: the phone and speaker per-layer profiles (mean accuracy over layers
  0..L) correlate below 0.5 (Pearson); their peak layers are reported too;
* ``cka_min_below_0.8``: the smallest CKA between two transformer layers is below 0.8.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from harness.analysis import phone_probe, speaker_probe
from harness.provenance import git_commit, hardware, now_iso
from harness.teachers.base import load_teacher


def _profile(probe: dict, names: list[str]) -> list[float]:
    return [probe[n]["mean"] for n in names]


def checks(result: dict) -> dict:
    """The layer-specificity checks of one upstream's ``{"phone": ..., "speaker": ...}``."""
    ph, spk = result["phone"]["probe"], result["speaker"]["probe"]
    layers = [n for n in ph if n.startswith("layer_")]
    tf = layers[1:]  # transformer layers 1..L
    best = max(ph, key=lambda n: ph[n]["mean"])
    out: dict = {"best_phone_layer": best}
    if "frontend" in ph:
        best_tf = max(tf, key=lambda n: ph[n]["mean"])
        margin = ph[best_tf]["mean"] - ph["frontend"]["mean"]
        noise = 2 * float(np.hypot(ph[best_tf]["std"], ph["frontend"]["std"]))
        out.update(
            best_transformer_phone_layer=best_tf, phone_margin_over_frontend=margin, phone_noise_2sd=noise,
            best_phone_layer_is_transformer=bool(best in tf and margin > noise),
        )
    p, s = np.array(_profile(ph, layers)), np.array(_profile(spk, layers))
    corr = float(np.corrcoef(p, s)[0, 1]) if p.std() > 0 and s.std() > 0 else 1.0
    best_spk = layers[int(np.argmax(s))]
    out.update(
        best_speaker_layer=best_spk, phone_speaker_profile_corr=corr,
        profiles_differ=bool(corr < 0.5),
    )
    names = result["phone"]["layers"]
    cka = np.array(result["phone"]["cka"])
    idx = [names.index(n) for n in tf]
    vals = [cka[i, j] for a, i in enumerate(idx) for j in idx[a + 1 :]]
    adj = [cka[idx[a], idx[a + 1]] for a in range(len(idx) - 1)]
    out.update(
        cka_min_transformer=float(min(vals)) if vals else None,
        cka_adjacent_mean=float(np.mean(adj)) if adj else None,
        **{"cka_min_below_0.8": bool(vals and min(vals) < 0.8)},
    )
    return out


def probe_upstream(
    upstream, data_dir: str | Path, seeds: Sequence[int], max_utts: int, max_frames: int, speaker_utts: int = 0
) -> dict:
    t = time.perf_counter()
    res = {
        "id": getattr(upstream, "id", "?"),
        "phone": phone_probe(upstream, data_dir, seeds=seeds, max_utts=max_utts, max_frames=max_frames),
        "speaker": speaker_probe(upstream, data_dir, seeds=seeds, max_utts=speaker_utts or 10**9),
    }
    res["checks"] = checks(res)
    res["seconds"] = round(time.perf_counter() - t, 1)
    return res


def probe_teacher(
    spec: str, data_dir: str | Path, out_dir: str | Path, seeds: Sequence[int] = (0, 1, 2),
    twin: bool = True, max_utts: int = 400, max_frames: int = 40_000, threads: int = 2, log_fn=print,
    speaker_utts: int = 0,
) -> dict:
    """Probe a teacher (and its random-init twin); write ``probe.json`` and ``probe.png``.

    Raises:
        FileNotFoundError: the data folder lacks ``asr_*`` / ``sid_*`` manifests.
    """
    torch.set_num_threads(threads)
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    for split in ("asr_train", "asr_test", "sid_train", "sid_test"):
        if not (data_dir / f"{split}.jsonl").is_file():
            raise FileNotFoundError(f"{data_dir / (split + '.jsonl')}: the probe needs asr_* and sid_* manifests in --data")
    teacher = load_teacher(spec)
    out = {"teacher": spec, "data": str(data_dir), "seeds": list(seeds), "start": now_iso()}
    out["upstream"] = probe_upstream(teacher, data_dir, seeds, max_utts, max_frames, speaker_utts)
    log_fn(format_result("teacher", out["upstream"]))
    if twin and hasattr(teacher, "cfg"):
        from harness.teachers.embedded import random_twin

        out["random_twin"] = probe_upstream(random_twin(teacher, seed=0), data_dir, seeds, max_utts, max_frames, speaker_utts)
        log_fn(format_result("random twin", out["random_twin"]))
    out.update(end=now_iso(), hardware=hardware(), git_commit=git_commit())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "probe.json").write_text(json.dumps(out, indent=2) + "\n")
    plot(out, out_dir / "probe.png")
    log_fn(f"wrote {out_dir / 'probe.json'} and {out_dir / 'probe.png'}")
    return out


def format_result(title: str, res: dict) -> str:
    ph, spk = res["phone"]["probe"], res["speaker"]["probe"]
    lines = [f"{title} ({res['id']}): layer  phone acc (mean +- sd)  speaker acc (mean +- sd)"]
    for n in ph:
        lines.append(f"  {n:<10} {ph[n]['mean']:.3f} +- {ph[n]['std']:.3f}    {spk[n]['mean']:.3f} +- {spk[n]['std']:.3f}")
    lines.append("  checks: " + json.dumps(res["checks"]))
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Phone and speaker accuracy per layer (teacher vs random twin) and both CKA maps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [("teacher", result["upstream"], "C0")]
    if "random_twin" in result:
        runs.append(("random-init twin", result["random_twin"], "C7"))
    names = result["upstream"]["phone"]["layers"]
    labels = ["FE" if n == "frontend" else n.split("_")[1] for n in names]
    x = np.arange(len(names))
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    for ax, task, title in ((axes[0, 0], "phone", "phone probe (frame level)"), (axes[0, 1], "speaker", "speaker probe (utterance level)")):
        for label, res, color in runs:
            pr = res[task]["probe"]
            m = np.array([pr[n]["mean"] for n in names])
            s = np.array([pr[n]["std"] for n in names])
            ax.errorbar(x, m, yerr=s, marker="o", color=color, label=label, capsize=3)
        ax.set_xticks(x, labels)
        ax.set_xlabel("layer (FE = front-end output, 0 = encoder input)")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{title}, {result['upstream'][task]['classes']} classes")
        ax.grid(alpha=0.3)
        ax.legend()
    for ax, (label, res, _) in zip(axes[1], runs):
        cka = np.array(res["phone"]["cka"])
        im = ax.imshow(cka, vmin=0, vmax=1, cmap="viridis", origin="lower")
        ax.set_xticks(x, labels)
        ax.set_yticks(x, labels)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{cka[i, j]:.2f}", ha="center", va="center", fontsize=6.5,
                        color="white" if cka[i, j] < 0.6 else "black")
        mn = res["checks"].get("cka_min_transformer")
        ax.set_title(f"linear CKA, {label} (min over layers 1..L: {mn:.2f})" if mn is not None else f"linear CKA, {label}")
        fig.colorbar(im, ax=ax, fraction=0.046)
    if len(runs) == 1:
        axes[1, 1].axis("off")
    fig.suptitle(f"layer-specific knowledge: {result['teacher']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
