"""Teachers: the dummy teacher, and the s3prl / transformers adapters on tiny random
checkpoints this file builds and saves itself, checked against the libraries loaded
directly (hidden states) and against their own conv extractors (``teacher.frontend``)."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from harness import safeload
from harness.config import ConfigError
from harness.registry import RegistryError
from harness.teachers import TEACHERS, Upstream, load_teacher
from harness.teachers.ident import CheckpointError

torch.set_num_threads(1)

CONV = [(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2
CONV_STR = "[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2"


def batch(lengths=(9000, 6500, 12000), seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    wavs = torch.zeros(len(lengths), int(lengths.max()))
    for i, n in enumerate(lengths):
        wavs[i, :n] = 0.3 * torch.randn(int(n), generator=g)
    return wavs, lengths


def perturb(module, scale=0.05, seed=0):
    """Random weights everywhere (norm affines included), so mapping errors show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def assert_valid_frames_close(ours, theirs, frames, atol=1e-5):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        for i, n in enumerate(frames.tolist()):
            assert torch.allclose(a[i, :n], b[i, :n], atol=atol), (a[i, :n] - b[i, :n]).abs().max()


# ----------------------------------------------------------------------------- dummy


def test_dummy_is_deterministic_and_follows_the_protocol():
    before = torch.random.get_rng_state()
    a, b = load_teacher("dummy"), load_teacher("dummy")
    assert torch.equal(torch.random.get_rng_state(), before)  # building it draws no global numbers
    assert isinstance(a, Upstream)
    assert a.id == b.id and a.id.startswith("dummy-")
    assert (a.num_layers, a.width, a.frame_rate) == (4, 64, 50.0)
    wavs, lengths = batch()
    sa, fa = a.hidden_states(wavs, lengths)
    sb, _ = b.hidden_states(wavs, lengths)
    assert len(sa) == a.num_layers + 1
    assert all(s.shape == (3, 37, 64) for s in sa)
    assert fa.tolist() == a.frame_lengths(lengths).tolist() == [27, 20, 37]
    assert all(torch.equal(x, y) for x, y in zip(sa, sb))
    assert not torch.allclose(sa[1], sa[2])  # layers differ
    feats, ff = a.frontend(wavs, lengths)
    assert feats.shape == (3, 37, a.frontend.out_dim) and torch.equal(ff, fa)


def test_dummy_valid_frames_do_not_depend_on_padding():
    t = load_teacher("dummy")
    wavs, lengths = batch()
    states, frames = t.hidden_states(wavs, lengths)
    alone, _ = t.hidden_states(wavs[1:2, : lengths[1]], lengths[1:2])
    n = int(frames[1])
    for s, s1 in zip(states, alone):
        assert torch.allclose(s[1, :n], s1[0, :n], atol=1e-5)


def test_teachers_never_leave_eval_mode(tmp_path):
    """Dropout/layerdrop in a teacher would corrupt its targets: train() is refused."""
    save_hf(tmp_path / "hf", "hubert")
    save_s3prl_hubert(tmp_path / "s3.pt")
    for spec in ("dummy", f"hf:{tmp_path / 'hf'}", f"s3prl:hubert:{tmp_path / 's3.pt'}"):
        teacher = load_teacher(spec).train()
        assert not any(m.training for m in teacher.modules()), spec
        wavs, lengths = batch()
        a, _ = teacher.hidden_states(wavs, lengths)
        b, _ = teacher.hidden_states(wavs, lengths)
        assert all(torch.equal(x, y) for x, y in zip(a, b)), spec


def test_dummy_sizes_and_bad_specs():
    t = load_teacher("dummy:2x32")
    assert (t.num_layers, t.width) == (2, 32) and t.id != load_teacher("dummy").id
    with pytest.raises(ConfigError, match="dummy:LxD"):
        load_teacher("dummy:big")
    with pytest.raises(RegistryError, match="did you mean 'dummy'"):
        load_teacher("dumy")
    assert {"dummy", "s3prl", "hf"} <= set(TEACHERS.names())


# ----------------------------------------------------------------------------- s3prl


def s3prl_upstream(name, path):
    """The library's own entry point: s3prl.nn.S3PRLUpstream('<name>_local', path)."""
    from harness.compat import apply_s3prl_shim

    apply_s3prl_shim()
    from s3prl.nn import S3PRLUpstream

    return S3PRLUpstream(f"{name}_local", path_or_url=str(path)).eval()


def save_s3prl_hubert(path, normalize=False, extractor_mode="default", layer_norm_first=False, seed=0):
    from harness.compat import apply_s3prl_shim

    apply_s3prl_shim()
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

    torch.manual_seed(seed)
    cfg = HubertConfig(label_rate=50.0, encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                       encoder_attention_heads=4, conv_feature_layers=CONV_STR, conv_pos=16, conv_pos_groups=4,
                       final_dim=16, extractor_mode=extractor_mode, layer_norm_first=layer_norm_first)
    task = HubertPretrainingConfig(normalize=normalize)
    model = HubertModel(cfg, task, [list("abcde")])
    perturb(model, seed=seed)
    torch.save({"task_cfg": dataclasses.asdict(task), "model_cfg": dataclasses.asdict(cfg),
                "model_weight": model.state_dict(), "dictionaries_symbols": [list("abcde")]}, path)
    return model


def save_s3prl_wavlm(path, normalize=False):
    from harness.compat import apply_s3prl_shim

    apply_s3prl_shim()
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

    torch.manual_seed(1)
    cfg = {"encoder_layers": 2, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64, "encoder_attention_heads": 4,
           "conv_feature_layers": CONV_STR, "conv_pos": 16, "conv_pos_groups": 4, "relative_position_embedding": True,
           "num_buckets": 32, "max_distance": 128, "gru_rel_pos": True, "normalize": normalize,
           "extractor_mode": "layer_norm" if normalize else "default", "layer_norm_first": normalize}
    model = WavLM(WavLMConfig(cfg))
    perturb(model, seed=1)
    torch.save({"cfg": cfg, "model": model.state_dict()}, path)
    return model


def save_s3prl_wav2vec2(path):
    from harness.compat import apply_s3prl_shim

    apply_s3prl_shim()
    from s3prl.upstream.wav2vec2.wav2vec2_model import AudioPretrainingConfig, Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(2)
    cfg = Wav2Vec2Config(encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=4,
                         conv_feature_layers=CONV_STR, conv_pos=16, conv_pos_groups=4, final_dim=16,
                         latent_vars=8, latent_groups=2, quantize_targets=True)
    task = AudioPretrainingConfig()
    model = Wav2Vec2Model(cfg)
    perturb(model, seed=2)
    torch.save({"task_cfg": dataclasses.asdict(task), "model_cfg": dataclasses.asdict(cfg),
                "model_weight": model.state_dict()}, path)
    return model


S3PRL_CASES = {
    "hubert": lambda p: save_s3prl_hubert(p),
    "hubert_ln": lambda p: save_s3prl_hubert(p, normalize=True, extractor_mode="layer_norm", layer_norm_first=True),
    "wavlm": lambda p: save_s3prl_wavlm(p),
    "wavlm_ln": lambda p: save_s3prl_wavlm(p, normalize=True),
    "wav2vec2": lambda p: save_s3prl_wav2vec2(p),
}


@pytest.mark.parametrize("case", list(S3PRL_CASES))
def test_s3prl_adapter_matches_s3prl(case, tmp_path):
    name = case.split("_")[0]
    path = tmp_path / f"{case}.pt"
    S3PRL_CASES[case](path)
    teacher = load_teacher(f"s3prl:{name}:{path}")
    assert isinstance(teacher, Upstream) and teacher.id.startswith(f"s3prl-{name}-")
    assert (teacher.num_layers, teacher.width, teacher.frame_rate) == (2, 32, 50.0)

    wavs, lengths = batch()
    states, frames = teacher.hidden_states(wavs, lengths)
    assert len(states) == 3 and frames.tolist() == teacher.frame_lengths(lengths).tolist()
    ref_states, _ = s3prl_upstream(name, path)(wavs, lengths)
    with torch.no_grad():
        assert_valid_frames_close(states, ref_states, frames)

    # the front-end reproduces the checkpoint's own conv extractor (after its wav normalisation)
    net = teacher.expert.model
    feats, ff = teacher.frontend(wavs, lengths)
    for i, n in enumerate(lengths.tolist()):
        wav = wavs[i: i + 1, :n]
        if teacher.frontend.normalize_wav:
            wav = F.layer_norm(wav, wav.shape[-1:])
        with torch.no_grad():
            ref = net.feature_extractor(wav).transpose(1, 2)[0]
        assert ref.shape[0] == ff[i]
        if teacher.frontend.mode == "layer_norm" or n == lengths.max():  # group norm sees the padding
            assert torch.allclose(feats[i, : ff[i]], ref, atol=1e-5)
    alone, _ = teacher.frontend(wavs[:1, : lengths[0]], lengths[:1])
    with torch.no_grad():
        wav = wavs[:1, : lengths[0]]
        if teacher.frontend.normalize_wav:
            wav = F.layer_norm(wav, wav.shape[-1:])
        assert torch.allclose(alone[0], net.feature_extractor(wav).transpose(1, 2)[0], atol=1e-5)


def test_s3prl_id_is_a_hash_of_the_weights(tmp_path):
    save_s3prl_hubert(tmp_path / "a.pt", seed=0)
    save_s3prl_hubert(tmp_path / "b.pt", seed=0)
    save_s3prl_hubert(tmp_path / "c.pt", seed=5)
    ids = [load_teacher(f"s3prl:hubert:{tmp_path / n}").id for n in ("a.pt", "b.pt", "c.pt")]
    assert ids[0] == ids[1] != ids[2]


def test_s3prl_errors_are_one_line_and_name_the_file(tmp_path):
    missing = tmp_path / "nope" / "hubert_base_ls960.pt"
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*hubert_base_ls960.pt") as err:
        load_teacher(f"s3prl:hubert:{missing}")
    assert "\n" not in str(err.value)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="corrupt.pt: not a loadable s3prl wavlm checkpoint") as err:
        load_teacher(f"s3prl:wavlm:{corrupt}")
    assert "\n" not in str(err.value)
    truncated = tmp_path / "truncated.pt"
    save_s3prl_hubert(truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_teacher(f"s3prl:hubert:{truncated}")
    with pytest.raises(ConfigError, match="not one of hubert, wavlm, wav2vec2"):
        load_teacher(f"s3prl:data2vec:{corrupt}")
    with pytest.raises(FileNotFoundError, match="no path given"):
        load_teacher("s3prl:hubert:")


# ----------------------------------------------------------------------------- transformers


def save_hf(folder, model_type, norm="group", stable=False, preprocessor=None, seed=3):
    import transformers

    cls = {"hubert": (transformers.HubertConfig, transformers.HubertModel),
           "wavlm": (transformers.WavLMConfig, transformers.WavLMModel),
           "wav2vec2": (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model)}[model_type]
    extra = {"num_buckets": 32, "max_bucket_distance": 128} if model_type == "wavlm" else {}
    cfg = cls[0](hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 conv_dim=(16,) * 7, feat_extract_norm=norm, conv_bias=norm == "layer", do_stable_layer_norm=stable,
                 num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, **extra)
    torch.manual_seed(seed)
    model = cls[1](cfg).eval()
    perturb(model, seed=seed)
    model.save_pretrained(folder)
    if preprocessor is not None:
        transformers.Wav2Vec2FeatureExtractor(**preprocessor).save_pretrained(folder)
    return cls[1].from_pretrained(folder).eval()


HF_CASES = {
    "hubert": dict(model_type="hubert"),
    "wavlm": dict(model_type="wavlm"),
    "wav2vec2_stable": dict(model_type="wav2vec2", norm="layer", stable=True),
}


@pytest.mark.parametrize("case", list(HF_CASES))
def test_hf_adapter_matches_transformers(case, tmp_path):
    folder = tmp_path / case
    ref = save_hf(folder, **HF_CASES[case])
    teacher = load_teacher(f"hf:{folder}")
    assert isinstance(teacher, Upstream)
    assert (teacher.num_layers, teacher.width, teacher.frame_rate) == (2, 32, 50.0)
    wavs, lengths = batch()
    mask = (torch.arange(wavs.shape[1])[None] < lengths[:, None]).long()
    states, frames = teacher.hidden_states(wavs, lengths)
    with torch.no_grad():
        out = ref(wavs, attention_mask=mask, output_hidden_states=True)
    assert len(states) == 3
    for a, b in zip(states, out.hidden_states):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
    feats, ff = teacher.frontend(wavs, lengths)
    with torch.no_grad():
        conv = ref.feature_extractor(wavs).transpose(1, 2)
    assert torch.allclose(feats, conv, atol=1e-5)
    assert ff.tolist() == frames.tolist() == ref._get_feat_extract_output_lengths(lengths).tolist()


def test_hf_adapter_follows_the_saved_feature_extractor(tmp_path):
    import transformers

    folder = tmp_path / "hubert_pre"
    ref = save_hf(folder, "hubert", norm="layer",
                  preprocessor=dict(do_normalize=True, return_attention_mask=True, feature_size=1,
                                    sampling_rate=16000, padding_value=0.0))
    teacher = load_teacher(f"hf:{folder}")
    assert teacher.do_normalize and teacher.use_attention_mask and teacher.frontend.normalize_wav
    wavs, lengths = batch()
    fx = transformers.Wav2Vec2FeatureExtractor.from_pretrained(folder)
    inputs = fx([w[:n].numpy() for w, n in zip(wavs, lengths)], sampling_rate=16000, padding=True,
                return_tensors="pt")
    with torch.no_grad():
        out = ref(**inputs, output_hidden_states=True)
        conv = ref.feature_extractor(inputs["input_values"]).transpose(1, 2)
    states, frames = teacher.hidden_states(wavs, lengths)
    for a, b in zip(states, out.hidden_states):
        assert torch.allclose(a, b, atol=1e-4)
    feats, _ = teacher.frontend(wavs, lengths)
    assert_valid_frames_close([feats], [conv], frames, atol=1e-4)


def test_hf_ids_and_errors(tmp_path):
    save_hf(tmp_path / "a", "hubert", seed=3)
    save_hf(tmp_path / "b", "hubert", seed=4)
    ta, tb = load_teacher(f"hf:{tmp_path / 'a'}"), load_teacher(f"hf:{tmp_path / 'b'}")
    assert ta.id.startswith("hf-hubert-") and ta.id != tb.id
    assert load_teacher(f"hf:{tmp_path / 'a'}").id == ta.id
    with pytest.raises(FileNotFoundError, match="folder not found: .*missing_dir"):
        load_teacher(f"hf:{tmp_path / 'missing_dir'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_teacher(f"hf:{tmp_path / 'empty'}")
    weights = next(p for p in (tmp_path / "a").iterdir() if p.suffix in (".safetensors", ".bin"))
    weights.write_bytes(b"garbage" * 100)
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'a'}: cannot load the hubert weights") as err:
        load_teacher(f"hf:{tmp_path / 'a'}")
    assert "\n" not in str(err.value)
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    cfg["model_type"] = "whisper"
    (tmp_path / "b" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="model_type 'whisper' is not supported"):
        load_teacher(f"hf:{tmp_path / 'b'}")
    assert Path(weights).exists()


def test_s3prl_reads_original_fairseq_checkpoints_without_fairseq(tmp_path, monkeypatch):
    """A fairseq-format HuBERT file (omegaconf cfg, fairseq Dictionary objects) needs pickle:
    refused in one line unless trusted; trusted, it loads like its s3prl-converted twin, with
    fairseq absent at load time."""
    import sys
    import types

    from omegaconf import OmegaConf

    converted = tmp_path / "converted.pt"
    model = save_s3prl_hubert(converted)
    ck = torch.load(converted, weights_only=True)

    # pickle through a fake 'fairseq' package, as fairseq itself would write the file
    pkg = {n: types.ModuleType(n) for n in ("fairseq", "fairseq.data", "fairseq.data.dictionary")}

    class Dictionary:
        def __init__(self, symbols):
            self.symbols, self.count, self.indices = symbols, [1] * len(symbols), {s: i for i, s in enumerate(symbols)}

    Dictionary.__module__, Dictionary.__qualname__ = "fairseq.data.dictionary", "Dictionary"
    pkg["fairseq.data.dictionary"].Dictionary = Dictionary
    for name, mod in pkg.items():
        monkeypatch.setitem(sys.modules, name, mod)
    cfg = OmegaConf.create({"model": {"_name": "hubert", **ck["model_cfg"]}, "task": {"_name": "hubert_pretraining",
                                                                                      **ck["task_cfg"]}})
    original = tmp_path / "hubert_base_ls960.pt"
    torch.save({"args": None, "cfg": cfg, "model": model.state_dict(), "optimizer_history": [],
                "task_state": {"dictionaries": [Dictionary(ck["dictionaries_symbols"][0])]}}, original)
    for name in pkg:
        monkeypatch.delitem(sys.modules, name)
    assert "fairseq" not in sys.modules

    monkeypatch.delenv(safeload.TRUST_ENV, raising=False)
    with pytest.raises(safeload.UnsafeCheckpointError, match="hubert_base_ls960.pt: not a safe checkpoint .*omegaconf"
                       ".*--trust-checkpoint.*original fairseq checkpoints need this") as err:
        load_teacher(f"s3prl:hubert:{original}")
    assert "\n" not in str(err.value)
    monkeypatch.setenv(safeload.TRUST_ENV, "1")
    a, b = load_teacher(f"s3prl:hubert:{original}"), load_teacher(f"s3prl:hubert:{converted}")
    assert a.id == b.id
    wavs, lengths = batch()
    sa, fa = a.hidden_states(wavs, lengths)
    sb, _ = b.hidden_states(wavs, lengths)
    assert all(torch.equal(x, y) for x, y in zip(sa, sb))
    assert not list(Path(tempfile_dir()).glob("harness-converted-*"))  # the converted copy is removed


def tempfile_dir():
    import tempfile

    return tempfile.gettempdir()
