"""The ASR track's run config (``track: asr``): data, teacher, student, loss, optimiser,
training and evaluation settings, loaded strictly from YAML (:func:`load_asr_config`).
:mod:`harness.asr.train` re-exports every name here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from harness.config import AskdConfig, ConfigError, from_dict_with_overrides, load_yaml


@dataclass
class AsrDataConfig:
    """Corpus folder and splits (``<corpus>/<split>.jsonl``)."""

    corpus: str = "data/tiny"
    train_split: str = "asr_train"
    test_split: str = "asr_test"
    max_train: int = 0  # 0 = every usable utterance
    batch_size: int = 16

    def validate(self) -> None:
        if self.batch_size < 1 or self.max_train < 0:
            raise ConfigError("batch_size must be >= 1 and max_train >= 0")


@dataclass
class AsrTeacherConfig:
    """The teacher checkpoint folder (``harness asr train-teacher`` or a local Whisper).

    In a study, an empty ``path`` means: train the profile's character-level teacher into
    ``<study folder>/teacher`` first (``train_steps``, 0 = the profile's default).
    """

    path: str = ""
    # kd/askd read the teacher's logits from teacher_logits.npz (harness.asr.logitcache),
    # computed once per study, instead of running the teacher at every step
    cache_logits: bool = True
    train_steps: int = 0
    train_lr: float = 2e-3
    shape: dict[str, int] = field(default_factory=dict)  # preset overrides, e.g. {d_model: 128}

    def __post_init__(self) -> None:
        from harness.asr.teacher import TEACHER_PRESETS

        known = set(TEACHER_PRESETS["tiny"])
        bad = [k for k in self.shape if k not in known]
        if bad:
            raise ConfigError(f"teacher.shape: unknown key {bad[0]!r}; choose from {', '.join(sorted(known))}")

    def validate(self) -> None:
        if self.train_steps < 0 or self.train_lr <= 0:
            raise ConfigError("train_steps must be >= 0 and train_lr > 0")


@dataclass
class AsrStudentConfig:
    """Distil-Whisper-style shrinking (see :mod:`harness.asr.student`)."""

    decoder_layers: int = 2
    encoder_layers: int = 0  # 0 = the teacher's encoder, whole
    freeze_encoder: bool = True  # Distil-Whisper freezes the copied encoder
    # Width: 0 = the teacher's. A narrower student keeps the teacher's most active channels
    # (harness.asr.narrow), measured on the first calib_batches training batches.
    d_model: int = 0
    ffn_dim: int = 0  # 0 = the teacher's, scaled like d_model
    calib_batches: int = 8
    # Optional depth growth of the decoder with a stacking variant of harness.stacking:
    # start at decoder_layers - (grow_stages - 1) * grow_add layers, grow at equal steps.
    grow_variant: str = "none"
    grow_stages: int = 1
    grow_add: int = 1

    def validate(self) -> None:
        if self.decoder_layers < 1 or self.encoder_layers < 0:
            raise ConfigError("decoder_layers must be >= 1 and encoder_layers >= 0")
        if self.d_model < 0 or self.ffn_dim < 0 or self.calib_batches < 1:
            raise ConfigError("d_model and ffn_dim must be >= 0 (0 = the teacher's) and calib_batches >= 1")
        if self.grow_stages < 1 or self.grow_add < 1:
            raise ConfigError("grow_stages and grow_add must be >= 1")
        if self.grow_variant != "none" and self.decoder_layers - (self.grow_stages - 1) * self.grow_add < 1:
            raise ConfigError(f"decoder_layers {self.decoder_layers} cannot grow in {self.grow_stages} stages "
                              f"of {self.grow_add} layers (the first stage would have < 1 layer)")

    def growth(self, steps: int) -> tuple[int, dict[int, list[int]]]:
        """``(first depth, {step: stacking plan})`` for the decoder (``harness.stacking.plan``).

        Raises:
            ConfigError: growth asked for but ``harness.stacking`` is not available.
        """
        if self.grow_variant == "none" or self.grow_stages == 1:
            return self.decoder_layers, {}
        try:
            from harness.stacking import plan
        except ImportError as err:
            raise ConfigError(f"student.grow_variant {self.grow_variant!r} needs harness.stacking ({err})") from None
        depth = self.decoder_layers - (self.grow_stages - 1) * self.grow_add
        first, at = depth, {}
        for stage in range(1, self.grow_stages):
            at[stage * steps // self.grow_stages] = list(plan(self.grow_variant, depth, self.grow_add))
            depth += self.grow_add
        return first, at


@dataclass
class AsrLossConfig:
    """``ce`` | ``kd`` | ``askd`` (:mod:`harness.asr.objectives`)."""

    objective: Literal["ce", "kd", "askd"] = "kd"
    temperature: float = 2.0
    ce_weight: float = 0.8  # Distil-Whisper's 0.8 x CE + 1.0 x KL
    kd_weight: float = 1.0
    pseudo_labels: bool = False  # train on the teacher's greedy transcripts instead of references
    # + ctc_weight x CTC of a training-only head on a trainable student encoder (every
    # objective alike; see fit's ctc_weight): a cut, narrowed encoder re-learns to align
    ctc_weight: float = 0.0
    # the self-teacher's memory is a tenth of the run (harness.losses.SelfTeacher), from start_frac on
    askd: AskdConfig = field(default_factory=lambda: AskdConfig(decay="cosine", ema=0.99, horizon=0.1))

    def validate(self) -> None:
        if self.temperature <= 0 or self.ce_weight < 0 or self.kd_weight < 0 or self.ctc_weight < 0:
            raise ConfigError("temperature must be > 0 and the weights >= 0")


@dataclass
class AsrOptimConfig:
    """AdamW, linear warmup then cosine decay to zero."""

    lr: float = 1e-3
    warmup_frac: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0

    def validate(self) -> None:
        if self.lr <= 0 or not 0 <= self.warmup_frac < 1:
            raise ConfigError("lr must be > 0 and warmup_frac in [0, 1)")


@dataclass
class AsrTrainConfig:
    steps: int = 100
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    log_every: int = 10

    def validate(self) -> None:
        if self.steps < 1 or self.log_every < 1 or self.threads < 0:
            raise ConfigError("steps and log_every must be >= 1, threads >= 0")


@dataclass
class AsrEvalConfig:
    """Test-set scoring and timing. Beam search is costly on CPU, so it can use a subset."""

    max_utterances: int = 0  # greedy WER on the first N test utterances (0 = all)
    beam: int = 4  # beam width (0 = no beam search)
    beam_utterances: int = 100  # beam WER on the first N test utterances (0 = all)
    latency_utterances: int = 24  # utterances timed, one at a time, teacher and student interleaved
    batch_size: int = 16

    def validate(self) -> None:
        if min(self.max_utterances, self.beam, self.beam_utterances, self.latency_utterances) < 0:
            raise ConfigError("eval counts must be >= 0")


@dataclass
class AsrRunConfig:
    """One ASR distillation run (``track: asr`` tells sweeps to use this config)."""

    track: Literal["asr"] = "asr"
    profile: Literal["tiny", "embedded", "paper"] = "tiny"
    data: AsrDataConfig = field(default_factory=AsrDataConfig)
    teacher: AsrTeacherConfig = field(default_factory=AsrTeacherConfig)
    student: AsrStudentConfig = field(default_factory=AsrStudentConfig)
    loss: AsrLossConfig = field(default_factory=AsrLossConfig)
    optim: AsrOptimConfig = field(default_factory=AsrOptimConfig)
    train: AsrTrainConfig = field(default_factory=AsrTrainConfig)
    eval: AsrEvalConfig = field(default_factory=AsrEvalConfig)

    def validate(self) -> None:
        if self.loss.ctc_weight > 0 and self.student.freeze_encoder:
            raise ConfigError("loss.ctc_weight needs a trainable student encoder: set student.freeze_encoder: false")


def load_asr_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> AsrRunConfig:
    """Load an ASR run config (YAML + ``key=value`` overrides), strictly."""
    data = load_yaml(path) if path is not None else {}
    return from_dict_with_overrides(AsrRunConfig, data, overrides, source=path or "<defaults>")


