"""ASR batches: a manifest split -> Whisper log-mel features + character targets.

A batch (:class:`AsrBatch`) holds, for ``B`` utterances:

* ``features`` ``(B, n_mels, frames)`` float32: Whisper log-mel features, every
  utterance padded (or truncated) to the model's fixed input length
  (``chunk_length`` seconds; ``frames = chunk_length * 16000 / hop_length``);
* ``decoder_input`` ``(B, U)`` int64: the prompt then the transcript's tokens;
* ``labels`` ``(B, U)`` int64: the same sequence shifted left, ending in ``</s>``;
  ``-100`` marks padding and prompt positions (ignored by the losses);
* ``ids``, ``texts`` (reference transcripts), ``num_samples`` ``(B,)`` (audio length
  in samples at 16 kHz, for real-time factors).

Utterances longer than the model's input are skipped (counted, with a summary), not
silently truncated: a truncated utterance's transcript would no longer match its audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from harness.data.audio import load_audio
from harness.data.manifest import SkipLog, audio_path, read_manifest


@dataclass
class AsrBatch:
    features: torch.Tensor
    decoder_input: torch.Tensor
    labels: torch.Tensor
    ids: list[str]
    texts: list[str]
    num_samples: torch.Tensor


def target_ids(asr, text: str) -> list[int]:
    """Token ids of a transcript, clipped so prompt + text + ``</s>`` fits the decoder."""
    from harness.asr.tokenizer import encode

    ids = encode(asr.tokenizer, text)
    room = asr.max_target_positions - len(asr.prompt) - 1
    return ids[:room]


def make_targets(asr, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(decoder_input, labels)`` for token sequences (see the module docstring)."""
    p = list(asr.prompt)
    u = max(len(p) + len(s) for s in seqs)
    dec = torch.full((len(seqs), u), asr.tokenizer.pad_token_id or 0, dtype=torch.long)
    lab = torch.full((len(seqs), u), -100, dtype=torch.long)
    for i, s in enumerate(seqs):
        full = p + list(s)
        dec[i, : len(full)] = torch.tensor(full)
        tgt = list(s) + [asr.eos_id]
        lab[i, len(p) - 1 : len(p) - 1 + len(tgt)] = torch.tensor(tgt)
    return dec, lab


def featurize(asr, wavs: list[np.ndarray]) -> torch.Tensor:
    """Whisper log-mel features ``(B, n_mels, frames)`` of 16 kHz float32 waveforms."""
    out = asr.features([np.asarray(w, dtype=np.float32) for w in wavs], sampling_rate=16000,
                       return_tensors="pt", device="cpu")
    return out.input_features.float()


class AsrSplit:
    """One manifest split, ready to batch for a given model.

    Args:
        manifest: ``<corpus>/asr_<part>.jsonl``.
        asr: the :class:`~harness.asr.teacher.AsrModel` whose input length and tokenizer apply.
        max_utterances: keep the first N usable utterances (0 = all).
    """

    def __init__(self, manifest: str | Path, asr, max_utterances: int = 0):
        self.manifest = Path(manifest)
        if not self.manifest.is_file():
            raise FileNotFoundError(f"{self.manifest}: no such ASR manifest (build the corpus with "
                                    "'harness data build' or import LibriSpeech)")
        self.root = self.manifest.parent
        self.skips = SkipLog()
        records = []
        for rec in read_manifest(self.manifest):
            if not str(rec.get("text", "")).strip():
                self.skips.add(rec["id"], "no transcript")
            elif int(rec["num_samples"]) > asr.chunk_samples:
                self.skips.add(rec["id"], f"longer than the model input ({asr.chunk_samples / 16000:.0f} s)")
            else:
                records.append(rec)
            if max_utterances and len(records) >= max_utterances:
                break
        if not records:
            raise ValueError(f"{self.manifest}: no usable utterance ({self.skips.summary(limit=3)})")
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def wav(self, i: int) -> np.ndarray:
        return load_audio(audio_path(self.records[i], self.root))

    def batch(self, asr, index: list[int], targets: dict[str, list[int]] | None = None) -> AsrBatch:
        """Build the batch of records ``index``; ``targets`` (id -> token ids) replaces the
        reference transcripts as training targets (pseudo-labels)."""
        recs = [self.records[i] for i in index]
        wavs = [self.wav(i) for i in index]
        seqs = [targets[r["id"]] if targets is not None else target_ids(asr, r["text"]) for r in recs]
        dec, lab = make_targets(asr, seqs)
        return AsrBatch(
            features=featurize(asr, wavs), decoder_input=dec, labels=lab,
            ids=[r["id"] for r in recs], texts=[r["text"] for r in recs],
            num_samples=torch.tensor([len(w) for w in wavs]),
        )

    def epochs(self, batch_size: int, seed: int) -> Iterator[list[int]]:
        """Endless shuffled index batches (a new permutation per epoch, seeded)."""
        epoch = 0
        while True:
            order = np.random.default_rng([seed, epoch]).permutation(len(self.records))
            for s in range(0, len(order) - batch_size + 1 if len(order) >= batch_size else 1, batch_size):
                yield [int(i) for i in order[s : s + batch_size]]
            epoch += 1
