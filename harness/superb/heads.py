"""SUPERB task heads and greedy CTC decoding.

* :class:`UtteranceHead` (KS, IC, SID, ER): mean pooling over valid frames + linear. The
  weighted sum, the optional projector and mean pooling are all linear, so pooling each
  hidden state first and then taking the weighted sum gives exactly the same result as
  s3prl's "weighted sum -> projector -> mean pool -> linear"; the evaluation therefore
  caches per-layer mean-pooled vectors and the head sees ``(B, D)``.
* :class:`LinearCTC` (PR): one linear layer from each frame to phone logits + blank.
* :class:`BiLSTMCTC` (ASR): 2-layer bidirectional LSTM then linear to characters + blank.

CTC blank is index 0 everywhere; labels are ``1..V``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

BLANK = 0


class UtteranceHead(nn.Module):
    """Linear classifier over a mean-pooled utterance vector.

    Args:
        in_dim: ``D``.
        num_classes: ``C``.
        proj_dim: optional projector width before the classifier (0 = none).
    """

    def __init__(self, in_dim: int, num_classes: int, proj_dim: int = 0) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, proj_dim) if proj_dim else nn.Identity()
        self.out = nn.Linear(proj_dim or in_dim, num_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` pooled features -> ``(B, C)`` logits."""
        return self.out(self.proj(pooled))


class LinearCTC(nn.Module):
    """Frame-wise linear layer to ``num_tokens + 1`` CTC classes (blank = 0)."""

    def __init__(self, in_dim: int, num_tokens: int) -> None:
        super().__init__()
        self.out = nn.Linear(in_dim, num_tokens + 1)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)``, ``(B,)`` -> ``(B, T, V + 1)`` logits."""
        return self.out(feats)


class BiLSTMCTC(nn.Module):
    """2-layer BiLSTM + linear to ``num_tokens + 1`` CTC classes (blank = 0).

    Args:
        in_dim: ``D``.
        num_tokens: ``V`` (characters).
        hidden: LSTM units per direction (SUPERB: 1024).
        layers: LSTM layers (SUPERB: 2).
    """

    def __init__(self, in_dim: int, num_tokens: int, hidden: int = 1024, layers: int = 2) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, num_layers=layers, bidirectional=True, batch_first=True)
        self.out = nn.Linear(2 * hidden, num_tokens + 1)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)``, ``(B,)`` valid frames -> ``(B, T, V + 1)`` logits."""
        packed = pack_padded_sequence(feats, lengths.cpu().clamp_min(1), batch_first=True,
                                      enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=feats.shape[1])
        return self.out(out)


def ctc_loss(logits: torch.Tensor, lengths: torch.Tensor, targets: list[list[int]]) -> torch.Tensor:
    """Mean CTC loss per utterance (normalised by target length, as torch's ``mean``).

    Args:
        logits: ``(B, T, V + 1)``.
        lengths: ``(B,)`` valid frames.
        targets: ``B`` label lists with values in ``1..V``.
    """
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, V+1)
    flat = torch.tensor([t for seq in targets for t in seq], dtype=torch.long)
    target_lengths = torch.tensor([len(seq) for seq in targets], dtype=torch.long)
    return nn.functional.ctc_loss(log_probs, flat, lengths.cpu(), target_lengths, blank=BLANK,
                                  reduction="mean", zero_infinity=True)


def greedy_ctc_decode(logits: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best path decoding: argmax per frame, merge repeats, drop blanks.

    Args:
        logits: ``(B, T, V + 1)`` (or log-probabilities).
        lengths: ``(B,)`` valid frames.

    Returns:
        ``B`` label lists (values ``1..V``).
    """
    best = logits.argmax(-1).cpu()
    out = []
    for row, n in zip(best.tolist(), lengths.tolist()):
        seq, prev = [], BLANK
        for tok in row[: int(n)]:
            if tok != prev and tok != BLANK:
                seq.append(tok)
            prev = tok
        out.append(seq)
    return out
