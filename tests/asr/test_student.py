"""Student shrinking (maximally spaced decoder layers copied from the teacher) and growth."""

import pytest
import torch

from harness.asr.data import featurize
from harness.asr.evaluate import count_params, greedy_decode
from harness.asr.student import grow_decoder, shrink, spaced_layers
from harness.asr.teacher import new_char_model

SHAPE = dict(d_model=32, encoder_layers=2, decoder_layers=4, heads=2, ffn=64, n_mels=16, max_target_positions=10)


def test_spaced_layers():
    assert spaced_layers(4, 2) == [0, 3]
    assert spaced_layers(32, 2) == [0, 31]
    assert spaced_layers(6, 3) == [0, 2, 5]
    assert spaced_layers(4, 4) == [0, 1, 2, 3]
    assert spaced_layers(4, 1) == [3]
    with pytest.raises(ValueError, match="cannot keep 5 of 4"):
        spaced_layers(4, 5)


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_shrink_copies_teacher_layers():
    teacher = new_char_model("tiny", chunk_seconds=1, seed=0, **SHAPE)
    student = shrink(teacher, decoder_layers=2)
    t_dec, s_dec = teacher.model.model.decoder, student.model.model.decoder
    assert len(s_dec.layers) == 2
    assert _same(s_dec.layers[0], t_dec.layers[0]) and _same(s_dec.layers[1], t_dec.layers[3])
    assert _same(student.model.model.encoder, teacher.model.model.encoder)
    assert torch.equal(s_dec.embed_tokens.weight, t_dec.embed_tokens.weight)
    assert count_params(student)["decoder"] < count_params(teacher)["decoder"]
    assert count_params(student)["encoder"] == count_params(teacher)["encoder"]
    cut = shrink(teacher, decoder_layers=2, encoder_layers=1)
    assert _same(cut.model.model.encoder.layers[0], teacher.model.model.encoder.layers[1])


def test_grow_decoder_plan_and_decode():
    teacher = new_char_model("tiny", chunk_seconds=1, seed=0, **SHAPE)
    student = shrink(teacher, decoder_layers=2)
    old = [layer for layer in student.model.model.decoder.layers]
    grow_decoder(student, [0, 0, 1, -1])  # interleaved-style copy of layer 0, plus a fresh layer on top
    layers = student.model.model.decoder.layers
    assert len(layers) == 4 and student.model.config.decoder_layers == 4
    assert _same(layers[0], old[0]) and _same(layers[1], old[0]) and _same(layers[2], old[1])
    assert layers[1] is not layers[0]
    assert [layer.self_attn.layer_idx for layer in layers] == [0, 1, 2, 3]
    feats = featurize(student, [torch.zeros(8000).numpy()])
    assert len(greedy_decode(student, feats)) == 1  # the KV cache works with the new layer indices
