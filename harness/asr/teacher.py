"""The ASR teacher: a Whisper-architecture model, trained here or loaded from a folder.

Two sources, one in-memory form (:class:`AsrModel`):

* ``harness asr train-teacher --profile {tiny,embedded}`` trains a small
  ``WhisperForConditionalGeneration`` from scratch on the profile's ``asr_train`` split
  with the character tokenizer of :mod:`harness.asr.tokenizer` (objective ``ce``), and
  saves it with ``save_pretrained`` next to its tokenizer files and
  ``preprocessor_config.json`` (a ``WhisperFeatureExtractor``): the folder is a
  self-contained Whisper checkpoint.
* :func:`load_asr_model` loads any such folder, including a real Whisper checkpoint on
  disk (``local_files_only``: it never downloads). A real checkpoint decodes with the
  prompt ``<|startoftranscript|><|en|><|transcribe|><|notimestamps|>``; a character
  checkpoint with ``<s>``.

Feature extraction is Whisper's own (log-mel, fixed-length input of ``chunk_length``
seconds). The embedded presets use a 20 ms hop (``hop_length`` 320) instead of Whisper's
10 ms: the encoder then runs at 25 Hz, halving its cost on a 2-core CPU, which is still
twice the character rate of the embedded corpus' speech (~12 characters per second).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.data.audio import SAMPLE_RATE

# Shapes of the teachers trained here. Whisper tiny (39M) is 4+4 layers x 384: these are
# narrower so that the embedded study (teacher + 9 students) fits 20 minutes on 2 cores.
TEACHER_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=64, encoder_layers=2, decoder_layers=2, heads=2, ffn=256, n_mels=40,
                 hop_length=320, max_target_positions=160, chunk_seconds=0, dropout=0.0),
    "embedded": dict(d_model=96, encoder_layers=2, decoder_layers=3, heads=4, ffn=384, n_mels=80,
                     hop_length=320, max_target_positions=160, chunk_seconds=4, dropout=0.0),
}
# chunk_seconds: the fixed input length (0 = the longest utterance of the corpus, rounded
# up). Whisper has no input mask, so every utterance costs the full chunk. The embedded
# corpus' read sentences average ~3.2 s; 4 s holds 71% of them (6 s: 98%), longer ones are
# skipped and counted: the embedded profile trades data for a study that fits 2 cores.

PROMPT_TOKENS = ("<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>")
META_FILE = "harness_asr.json"


@dataclass
class AsrModel:
    """A Whisper-class recogniser with everything needed to run it.

    Attributes:
        model: ``WhisperForConditionalGeneration``.
        tokenizer: its tokenizer (``decode(ids, skip_special_tokens=True)``).
        features: its ``WhisperFeatureExtractor`` (wavs -> ``(B, n_mels, frames)``).
        prompt: decoder prompt ids (``[<s>]`` for character models).
        eos_id: the end-of-transcript id.
        name: where it came from (a folder, or a description).
    """

    model: Any
    tokenizer: Any
    features: Any
    prompt: list[int]
    eos_id: int
    name: str = ""

    @property
    def max_target_positions(self) -> int:
        return int(self.model.config.max_target_positions)

    @property
    def chunk_samples(self) -> int:
        """Input length in samples (Whisper pads/truncates every utterance to it)."""
        return int(self.features.n_samples)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def whisper_config(profile: str, vocab_size: int, default_chunk: int = 0, **shape: Any):
    """A ``WhisperConfig`` for a teacher preset (``shape`` overrides preset entries).

    Args:
        profile: ``tiny`` or ``embedded``.
        vocab_size: tokenizer size.
        default_chunk: fixed input length in seconds (Whisper has no input mask), used
            when the preset's (or ``shape``'s) ``chunk_seconds`` is 0.

    Returns:
        ``(WhisperConfig, WhisperFeatureExtractor)``.
    """
    from transformers import WhisperConfig, WhisperFeatureExtractor

    if profile not in TEACHER_PRESETS:
        raise ValueError(f"no ASR teacher preset for profile {profile!r}; choose from {', '.join(TEACHER_PRESETS)}")
    p = {**TEACHER_PRESETS[profile], **shape}
    chunk = int(p["chunk_seconds"] or default_chunk)
    if chunk < 1:
        raise ValueError("the input length is unset: give chunk_seconds (preset or shape) or default_chunk")
    fe = WhisperFeatureExtractor(feature_size=p["n_mels"], sampling_rate=16000, hop_length=p["hop_length"],
                                 chunk_length=chunk, n_fft=400)
    # conv1 keeps the frame rate, conv2 halves it: encoder positions = frames / 2.
    cfg = WhisperConfig(
        vocab_size=vocab_size, num_mel_bins=p["n_mels"], d_model=p["d_model"],
        encoder_layers=p["encoder_layers"], decoder_layers=p["decoder_layers"],
        encoder_attention_heads=p["heads"], decoder_attention_heads=p["heads"],
        encoder_ffn_dim=p["ffn"], decoder_ffn_dim=p["ffn"],
        max_source_positions=fe.nb_max_frames // 2, max_target_positions=p["max_target_positions"],
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
        suppress_tokens=None, begin_suppress_tokens=None, dropout=float(p["dropout"]),
        attention_dropout=float(p["dropout"]), activation_dropout=float(p["dropout"]),
        tie_word_embeddings=True,
    )
    return cfg, fe


def new_char_model(profile: str, default_chunk: int = 0, seed: int = 0, **shape: Any) -> AsrModel:
    """A freshly initialised character-level Whisper for a profile (seeded)."""
    from transformers import WhisperForConditionalGeneration

    from harness.asr.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    cfg, fe = whisper_config(profile, len(tok), default_chunk, **shape)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(cfg)
    return AsrModel(model, tok, fe, [tok.bos_token_id], tok.eos_token_id, name=f"char-whisper-{profile}")


def save_asr_model(asr: AsrModel, folder: str | Path, extra: dict | None = None) -> Path:
    """Save model (``save_pretrained``), tokenizer files and feature extractor config.

    ``extra`` goes into ``harness_asr.json`` (provenance; the folder loads without it).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    asr.model.save_pretrained(str(folder))
    asr.tokenizer.save_pretrained(str(folder))
    asr.features.save_pretrained(str(folder))
    meta = {"prompt": asr.prompt, "eos_id": asr.eos_id, **(extra or {})}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2))
    return folder


def _prompt_for(tok, cfg) -> list[int]:
    """Decoder prompt: Whisper's English transcription prompt when the vocabulary has it."""
    vocab = tok.get_vocab()
    if PROMPT_TOKENS[0] in vocab:
        return [vocab[t] for t in PROMPT_TOKENS if t in vocab]
    return [int(cfg.decoder_start_token_id)]


def load_asr_model(path: str | Path, device: str | torch.device = "cpu") -> AsrModel:
    """Load a Whisper checkpoint folder (config, weights, tokenizer, preprocessor config).

    Never downloads (``local_files_only``). Works for folders written by
    :func:`save_asr_model` and for real Whisper checkpoints saved with ``save_pretrained``.

    Raises:
        FileNotFoundError: one line naming the missing folder or file.
    """
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    from harness.asr.tokenizer import load_tokenizer

    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such Whisper checkpoint folder "
                                "(train one with 'harness asr train-teacher' or give a local checkpoint)")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}/config.json: missing; not a save_pretrained Whisper checkpoint")
    if not (folder / "preprocessor_config.json").is_file():
        raise FileNotFoundError(f"{folder}/preprocessor_config.json: missing; save the WhisperFeatureExtractor "
                                "with the checkpoint")
    model = WhisperForConditionalGeneration.from_pretrained(str(folder), local_files_only=True)
    model.to(device).float().eval()  # a shipped fp16 checkpoint (harness/assets) runs in float32
    tok = load_tokenizer(folder)
    fe = WhisperFeatureExtractor.from_pretrained(str(folder), local_files_only=True)
    meta_path = folder / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    prompt = [int(i) for i in meta.get("prompt") or _prompt_for(tok, model.config)]
    eos = meta.get("eos_id", tok.eos_token_id if tok.eos_token_id is not None else model.config.eos_token_id)
    return AsrModel(model, tok, fe, prompt, int(eos), name=str(folder))


def chunk_seconds_for(records: list[dict], cap: int = 30) -> int:
    """Smallest whole number of seconds holding every utterance (Whisper's fixed input)."""
    longest = max((int(r["num_samples"]) for r in records), default=SAMPLE_RATE)
    return max(1, min(cap, math.ceil(longest / SAMPLE_RATE)))
