"""``s3prl:{hubert,wavlm,wav2vec2}:PATH``: real checkpoints through s3prl's own model code.

The checkpoint formats are those s3prl's local experts load (``hubert_local``,
``wavlm_local``, ``wav2vec2_local``), i.e. the files s3prl distributes or converts to:

- ``hubert``: ``{"task_cfg", "model_cfg", "model_weight", "dictionaries_symbols"}``
  (``s3prl/upstream/hubert/convert.py``; e.g. ``hubert_base_ls960.pt`` after s3prl's
  fairseq conversion);
- ``wavlm``: ``{"cfg", "model"}`` (Microsoft's released ``WavLM-Base+.pt``);
- ``wav2vec2``: ``{"task_cfg", "model_cfg", "model_weight"}``
  (``s3prl/upstream/wav2vec2/convert.py``).

Original fairseq HuBERT / wav2vec 2.0 checkpoints (``{"cfg" or "args", "model",
"task_state", ...}``) are converted in memory the way s3prl's ``convert.py`` does, without
needing fairseq (see :func:`convert_fairseq`).

Every file is first read with ``weights_only=True`` (:func:`harness.safeload.load`), so
loading it runs none of its code. An original fairseq file holds pickled Python objects
(its omegaconf config, fairseq ``Dictionary`` objects) and is unpickled, with fairseq's
classes replaced by attribute holders, only when trusted: ``--trust-checkpoint`` on the
command, or ``HARNESS_TRUST_CHECKPOINT=1`` (a sweep); otherwise a one-line
:class:`~harness.safeload.UnsafeCheckpointError`. s3prl itself then reads a plain copy.

Hidden states are exactly s3prl's ``hidden_states``: the input of every transformer
layer (state 0 = the encoder input after feature projection, positional convolution and,
for post-LN models, the encoder layer norm) and the encoder output. The batch goes
through s3prl's expert as a list of unpadded waveforms, so padding, masks and waveform
normalisation are s3prl's. Nothing is ever downloaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import tempfile
import types
from pathlib import Path

import torch
from torch import nn

from harness import safeload
from harness.config import ConfigError
from harness.frontends import ConvFrontend
from harness.teachers.base import TEACHERS
from harness.teachers.ident import CheckpointError, one_line, require_path, weights_id

MODELS = ("hubert", "wavlm", "wav2vec2")


def _expert_class(model: str):
    """s3prl's ``UpstreamExpert`` for ``model`` (imported after the torchaudio shim)."""
    from harness.compat import apply_s3prl_shim

    apply_s3prl_shim()
    if model == "hubert":
        from s3prl.upstream.hubert.expert import UpstreamExpert
    elif model == "wavlm":
        from s3prl.upstream.wavlm.expert import UpstreamExpert
    else:
        from s3prl.upstream.wav2vec2.expert import UpstreamExpert
    return UpstreamExpert


class _FairseqStub:
    """Stands in for a fairseq class met while unpickling a fairseq checkpoint (its
    ``Dictionary`` objects only need their attributes, e.g. ``symbols``)."""

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {"state": state})


class _FairseqUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.split(".")[0] == "fairseq":
            return type(name, (_FairseqStub,), {"__module__": module})
        return super().find_class(module, name)


# a pickle module for torch.load that reads fairseq checkpoints without fairseq installed
_FAIRSEQ_PICKLE = types.SimpleNamespace(Unpickler=_FairseqUnpickler, load=pickle.load, __name__="fairseq_free_pickle")


def _to_container(cfg) -> dict:
    """A fairseq config (omegaconf DictConfig, argparse Namespace or dict) as a plain dict."""
    if cfg is None:
        return {}
    if isinstance(cfg, dict):
        return cfg
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:
        pass
    return dict(vars(cfg))


def _plain(obj):
    """Plain data (what ``weights_only=True`` loads) from a trusted unpickled object:
    configs (omegaconf, argparse, fairseq stand-ins) become dicts, other objects strings."""
    if isinstance(obj, (str, int, float, bool, type(None), torch.Tensor)):
        return obj
    if isinstance(obj, dict):
        return {k if isinstance(k, (str, int)) else str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if type(obj).__module__.startswith("omegaconf."):  # DictConfig, ListConfig
        from omegaconf import OmegaConf

        return _plain(OmegaConf.to_container(obj, resolve=True))
    if isinstance(obj, argparse.Namespace):
        return _plain(vars(obj))
    if isinstance(obj, _FairseqStub) or dataclasses.is_dataclass(obj):
        return _plain(vars(obj))
    return str(obj)


def read_checkpoint(model: str, path: Path) -> tuple[dict, bool]:
    """The file's content and whether it needed pickle (then it was trusted).

    Raises:
        UnsafeCheckpointError: it needs pickle and ``--trust-checkpoint`` was not given.
        CorruptCheckpointError: unreadable.
    """
    what = f"s3prl {model} checkpoint"
    try:
        return safeload.load(path, what=what, trust=False), False
    except safeload.UnsafeCheckpointError as err:
        if not safeload.trusted():
            note = " (original fairseq checkpoints need this)" if model in ("hubert", "wav2vec2") else ""
            raise safeload.UnsafeCheckpointError(f"{err}{note}") from None
    return safeload.load(path, what=what, pickle_module=_FAIRSEQ_PICKLE, trust=True), True


def convert_fairseq(model: str, state: dict) -> dict | None:
    """The s3prl ``*_local`` checkpoint dict for a fairseq HuBERT / wav2vec 2.0 file's content.

    What ``s3prl/upstream/{hubert,wav2vec2}/convert.py`` does, but without fairseq.

    Returns:
        The converted dict (plain data), or ``None`` when ``state`` is not a fairseq
        checkpoint (e.g. already in s3prl's format).
    """
    if not isinstance(state, dict) or "model_weight" in state or "model" not in state:
        return None
    if state.get("cfg") is not None:
        cfg = _to_container(state["cfg"])
        model_cfg, task_cfg = dict(cfg.get("model") or {}), dict(cfg.get("task") or {})
    else:  # older checkpoints keep an argparse Namespace holding everything
        model_cfg = task_cfg = _to_container(state.get("args"))
    out = {"task_cfg": task_cfg, "model_cfg": model_cfg, "model_weight": state["model"]}
    if model == "hubert":
        dicts = (state.get("task_state") or {}).get("dictionaries") or []
        out["dictionaries_symbols"] = [list(getattr(d, "symbols", [])) for d in dicts]
    return _plain(out)


def _config_dict(cfg: object) -> dict:
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    return {k: v for k, v in vars(cfg).items() if not k.startswith("_")}


class S3prlTeacher(nn.Module):
    """A frozen s3prl upstream (Upstream protocol) with its conv front-end as ``.frontend``.

    Args:
        model: ``hubert``, ``wavlm`` or ``wav2vec2``.
        path: the checkpoint file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is not a loadable checkpoint of that kind.
        UnsafeCheckpointError: it needs pickle (an original fairseq file) and
            ``--trust-checkpoint`` was not given.
    """

    def __init__(self, model: str, path: str) -> None:
        super().__init__()
        ckpt = require_path(path, f"s3prl {model} teacher")
        try:  # weights_only first: a crafted pickle is refused here, before s3prl sees it
            state, pickled = read_checkpoint(model, ckpt)
        except safeload.CorruptCheckpointError as err:
            raise CheckpointError(f"{ckpt}: not a loadable s3prl {model} checkpoint ({err.reason})") from None
        expert_cls = _expert_class(model)
        tmp = None
        try:
            converted = convert_fairseq(model, state) if model in ("hubert", "wav2vec2") else None
            if converted is None and pickled:  # s3prl reads with weights_only: give it plain data
                converted = _plain(state)
            del state
            if converted is not None:  # the expert reads a path: hand it a converted copy
                fd, tmp = tempfile.mkstemp(suffix=".pt", prefix="harness-converted-")
                os.close(fd)
                safeload.save(converted, tmp)
                del converted
            self.expert = expert_cls(tmp or str(ckpt))
        except Exception as err:  # a truncated/corrupt file or the wrong format: one line
            raise CheckpointError(
                f"{ckpt}: not a loadable s3prl {model} checkpoint ({one_line(err)})"
            ) from None
        finally:
            if tmp is not None:
                os.unlink(tmp)
        self.eval()  # the wrapper too: train() is overridden to stay in eval mode
        self.requires_grad_(False)
        net = self.expert.model
        if model == "wavlm":
            cfg, normalize = self.expert.cfg, bool(self.expert.cfg.normalize)
        elif model == "hubert":
            cfg, normalize = None, bool(self.expert.task_cfg.normalize)
        else:
            cfg, normalize = None, bool(self.expert.wav_normalize)
        layers = self._conv_layers_of(net)
        mode = "layer_norm" if self._extractor_mode(net) == "layer_norm" else "group_norm"
        conv_bias = net.feature_extractor.conv_layers[0][0].bias is not None
        # s3prl normalises each waveform with F.layer_norm (eps 1e-5) when the checkpoint asks.
        self.frontend = ConvFrontend(layers, mode=mode, conv_bias=conv_bias, normalize_wav=normalize, wav_norm_eps=1e-5)
        self.frontend.load_fairseq_extractor(net.feature_extractor.state_dict())
        self.frontend.requires_grad_(False)
        self.frontend.eval()
        self.model_name = model
        self.num_layers = len(net.encoder.layers)
        self.width = int(net.encoder.embedding_dim) if hasattr(net.encoder, "embedding_dim") else int(
            net.encoder.layers[0].self_attn.embed_dim
        )
        self.frame_rate = self.frontend.frame_rate
        config = {"model": model, "frontend": self.frontend.spec, "normalize": normalize,
                  "layers": self.num_layers, "width": self.width,
                  "cfg": _config_dict(cfg) if cfg is not None else self._hidden_cfg()}
        self.id = weights_id(f"s3prl-{model}", config, net.state_dict())

    def train(self, mode: bool = True) -> "nn.Module":
        """A frozen teacher stays in eval mode (no dropout, no layerdrop) whatever is asked."""
        return super().train(False)

    def _hidden_cfg(self) -> dict:
        """The model config of hubert/wav2vec2 experts (kept on the model by s3prl)."""
        net = self.expert.model
        out = {}
        for attr in ("cfg",):
            if hasattr(net, attr):
                out[attr] = _config_dict(getattr(net, attr))
        task = getattr(self.expert, "task_cfg", None)
        if task is not None:
            out["task"] = _config_dict(task)
        out["layer_norm_first"] = bool(getattr(net.encoder, "layer_norm_first", False))
        return out

    @staticmethod
    def _conv_layers_of(net) -> list[tuple[int, int, int]]:
        """The conv stack ``[(dim, kernel, stride), ...]``, read off the modules."""
        return [(b[0].out_channels, b[0].kernel_size[0], b[0].stride[0]) for b in net.feature_extractor.conv_layers]

    @staticmethod
    def _extractor_mode(net) -> str:
        block = net.feature_extractor.conv_layers[0]
        return "layer_norm" if isinstance(block[2], nn.Sequential) else "default"

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid frames ``(B,)`` for ``(B,)`` valid samples (conv arithmetic)."""
        return self.frontend.frame_lengths(lengths)

    def hidden_states(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``L + 1`` states ``(B, T, D)`` and ``(B,)`` valid frames for ``(B, S)`` waveforms.

        ``T`` is s3prl's (the conv output length of the padded batch); frames past
        ``frame_lengths`` are padding.
        """
        lengths = torch.as_tensor(lengths, dtype=torch.int64)
        wav_list = [wavs[i, : int(lengths[i])] for i in range(wavs.shape[0])]
        with torch.no_grad():
            states = list(self.expert(wav_list)["hidden_states"])
        frames = self.frame_lengths(lengths.cpu()).clamp(max=states[0].shape[1]).to(wavs.device)
        return states, frames


@TEACHERS.register("s3prl")
def build_s3prl(arg: str, device: str | torch.device = "cpu") -> S3prlTeacher:
    """``s3prl:hubert:PATH``, ``s3prl:wavlm:PATH`` or ``s3prl:wav2vec2:PATH``."""
    model, _, path = arg.partition(":")
    if model not in MODELS:
        raise ConfigError(
            f"teacher spec 's3prl:{arg}': model {model!r} is not one of {', '.join(MODELS)} "
            "(e.g. s3prl:hubert:/data/hubert_base_ls960.pt)"
        )
    return S3prlTeacher(model, path).to(device)
