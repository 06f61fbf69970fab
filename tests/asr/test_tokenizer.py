"""Character tokenizer: ids, round trip, HF tokenizer files written and read back."""

import pytest

from harness.asr.tokenizer import CHARS, SPECIALS, build_char_tokenizer, encode, load_tokenizer


def test_ids_and_round_trip(tmp_path):
    tok = build_char_tokenizer()
    assert len(tok) == len(SPECIALS) + len(CHARS)
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    ids = encode(tok, "ab c")
    assert ids == [4 + CHARS.index(c) for c in "ab c"]
    assert encode(tok, "a!")[1] == tok.unk_token_id
    tok.save_pretrained(str(tmp_path))
    assert (tmp_path / "tokenizer.json").is_file() and (tmp_path / "tokenizer_config.json").is_file()
    back = load_tokenizer(tmp_path)
    text = "the cat's 2 hats"
    assert back.decode(encode(back, text) + [back.eos_token_id], skip_special_tokens=True) == text
    assert encode(back, text) == encode(tok, text)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="single characters"):
        build_char_tokenizer(["ab"])
