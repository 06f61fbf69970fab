"""A character tokenizer saved in the Hugging Face tokenizer-files format.

The embedded teacher is trained here from scratch, so a byte-pair vocabulary buys
nothing: transcripts of the embedded corpus are lower-case words and apostrophes
(``harness.data`` normalises them), and one token per character keeps the decoder's
softmax tiny. Saving it as ``tokenizer.json`` + ``tokenizer_config.json`` (a
``tokenizers`` WordLevel model over single characters, with a ``Fuse`` decoder) makes a
checkpoint folder self-contained: ``AutoTokenizer.from_pretrained(folder)`` rebuilds it
with no harness code.

Ids: ``<pad>`` 0, ``<s>`` 1 (decoder start), ``</s>`` 2 (end of transcript), ``<unk>`` 3,
then the characters in :data:`CHARS` order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
CHARS = " abcdefghijklmnopqrstuvwxyz'0123456789"


def build_char_tokenizer(chars: str | Iterable[str] = CHARS):
    """Build the character tokenizer.

    Args:
        chars: the alphabet; one token per character (duplicates ignored, order kept).

    Returns:
        A ``transformers`` fast tokenizer: ``tok(text, add_special_tokens=False).input_ids``
        is one id per character (unknown characters -> ``<unk>``); ``tok.decode(ids,
        skip_special_tokens=True)`` joins the characters back without separators.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for c in chars:
        if len(c) != 1:
            raise ValueError(f"alphabet entries must be single characters, got {c!r}")
        vocab.setdefault(c, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    # Every character is its own pre-token ('.' with DOTALL-free semantics is fine: the
    # transcripts hold no newlines), so the WordLevel model maps characters to ids.
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
    )


def load_tokenizer(folder: str | Path):
    """Load the tokenizer files of a checkpoint folder (never downloads).

    Raises:
        FileNotFoundError: the folder has no tokenizer files.
    """
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file() and not (folder / "vocab.json").is_file():
        raise FileNotFoundError(f"{folder}: no tokenizer files (tokenizer.json or vocab.json); "
                                "save the tokenizer with the checkpoint")
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def encode(tok, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens."""
    return list(tok(text, add_special_tokens=False).input_ids)
