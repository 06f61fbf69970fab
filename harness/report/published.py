"""Published figures and known teachers, as data: the report shows them beside its own numbers.

Nothing here is measured by the harness. Each entry says where it was read.
"""

from __future__ import annotations

# Kim & Lee, "Fast Speech Foundation Model Distillation Using Interleaved Stacking"
# (arXiv 2606.11766, Interspeech 2026). Read in secondary summaries of the paper, not in the
# paper itself (/work/shared/PAPERS.md): treat as likely, not as quoted.
PAPER = {
    "title": "Kim & Lee, Fast Speech Foundation Model Distillation Using Interleaved Stacking "
             "(arXiv 2606.11766, Interspeech 2026)",
    "source": "read in secondary summaries of the paper, not in the paper itself",
    "setup": {
        "teacher": "HuBERT Base (94.68 M parameters)",
        "student": "12 layers x 384 wide (26.87 M parameters)",
        "data": "LibriSpeech 960 h",
        "schedule": "B = 4 stages adding 3 layers each (3 -> 6 -> 9 -> 12), prop-1 schedule",
    },
    # metric key in this harness -> (label, published value for interleaved, unit, how ours compares)
    "interleaved": {
        "speedup": ("training speedup (prop-1)", 1.16, "x", "ours: the schedule's theoretical speedup and, "
                    "when a bench file is given, the measured one"),
        "task.pr": ("PR PER", 8.88, "%", "lower is better"),
        "task.asr": ("ASR WER", 9.99, "%", "lower is better"),
        "task.sf": ("SF F1", 85.70, "%", "higher is better"),
        "task.sid": ("SID accuracy", 73.60, "%", "higher is better"),
    },
}

# Teachers whose make-up the report can state (by the start of the teacher id in summary.json).
KNOWN_TEACHERS = {
    "embedded": (
        "the shipped embedded teacher (harness/assets/README.md): a HuBERT-style model, fbank front-end + "
        "8 post-LN transformer layers, width 192, 3.09 M parameters, pretrained on the synthetic embedded "
        "corpus on a 2-core CPU: two HuBERT k-means iterations (29 min), then a supervised phone-target "
        "iteration (32 min) and a speaker-contrastive utterance iteration (28 min); tiny and briefly "
        "trained next to HuBERT Base"
    ),
    "dummy": "the dummy teacher (random, deterministic weights): a plumbing check, not a speech model",
}

# What the embedded profile's data are (harness/data/synth.py, harness/superb/tasks.py).
EMBEDDED_DATA = (
    "a synthetic corpus generated locally with eSpeak NG (many voice variants, pitch, rate and noise "
    "variation) — not LibriSpeech, and not the SUPERB corpora: every task is scored on synthetic speech"
)
ER_PROXY = ("ER on the embedded corpus is a prosody proxy: four speaking styles made from pitch, pitch range, "
            "rate, pauses and loudness — not IEMOCAP emotions")
