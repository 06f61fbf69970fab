"""``hf:DIR``: a transformers HuBERT / WavLM / wav2vec 2.0 model saved in a local folder.

The folder is what ``save_pretrained`` writes (``config.json`` + weights), optionally with
the ``preprocessor_config.json`` of its ``Wav2Vec2FeatureExtractor``. Loading is strictly
local (``local_files_only=True``); nothing is ever downloaded.

Hidden states are transformers' ``output_hidden_states``: state 0 = the encoder input
(feature projection + positional convolution, and the encoder layer norm for post-LN
models), then each layer's output (the last one layer-normed for pre-LN models).

Input preparation follows the feature extractor when its config is in the folder:
``do_normalize`` -> zero mean / unit variance per utterance over its valid samples (eps
1e-7; note: transformers normalises over the padding too when it returns no attention
mask; this adapter always uses the valid samples), ``return_attention_mask`` -> whether
the model gets an attention mask. Without a preprocessor config the raw waveforms and an
attention mask are passed.
"""

from __future__ import annotations

import json

import torch
from torch import nn

from harness.teachers.base import TEACHERS
from harness.frontends import ConvFrontend
from harness.teachers.ident import CheckpointError, one_line, require_path, weights_id

MODEL_TYPES = ("hubert", "wavlm", "wav2vec2")


def _model_class(model_type: str):
    import transformers

    return {
        "hubert": transformers.HubertModel,
        "wavlm": transformers.WavLMModel,
        "wav2vec2": transformers.Wav2Vec2Model,
    }[model_type]


class HfTeacher(nn.Module):
    """A frozen transformers upstream (Upstream protocol) with ``.frontend``.

    Args:
        folder: a local ``save_pretrained`` folder.

    Raises:
        FileNotFoundError: the folder or its ``config.json`` is missing.
        CheckpointError: an unsupported model type or unreadable weights.
    """

    def __init__(self, folder: str) -> None:
        super().__init__()
        path = require_path(folder, "hf teacher", is_dir=True)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"hf teacher: {path} has no config.json (write the folder with save_pretrained)")
        try:
            raw = json.loads((path / "config.json").read_text())
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{path / 'config.json'}: unreadable ({one_line(err)})") from None
        model_type = raw.get("model_type")
        if model_type not in MODEL_TYPES:
            raise CheckpointError(
                f"{path}: model_type {model_type!r} is not supported; use one of {', '.join(MODEL_TYPES)}"
            )
        try:
            self.model = _model_class(model_type).from_pretrained(str(path), local_files_only=True)
        except Exception as err:  # missing/corrupt weight files: one line naming the folder
            raise CheckpointError(f"{path}: cannot load the {model_type} weights ({one_line(err)})") from None
        self.eval()  # the wrapper too: train() is overridden to stay in eval mode
        self.requires_grad_(False)
        cfg = self.model.config
        if cfg.feat_extract_activation != "gelu":
            raise CheckpointError(f"{path}: feat_extract_activation {cfg.feat_extract_activation!r} is unsupported (gelu only)")

        self.do_normalize, self.use_attention_mask = False, True
        pre = path / "preprocessor_config.json"
        if pre.is_file():
            pcfg = json.loads(pre.read_text())
            self.do_normalize = bool(pcfg.get("do_normalize", True))
            self.use_attention_mask = bool(pcfg.get("return_attention_mask", False))

        layers = list(zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride))
        mode = {"group": "group_norm", "layer": "layer_norm"}.get(cfg.feat_extract_norm)
        if mode is None:
            raise CheckpointError(f"{path}: feat_extract_norm {cfg.feat_extract_norm!r} is unsupported (group or layer)")
        self.frontend = ConvFrontend(layers, mode=mode, conv_bias=bool(cfg.conv_bias),
                                     normalize_wav=self.do_normalize, wav_norm_eps=1e-7)
        self.frontend.load_hf_extractor(self.model.feature_extractor.state_dict())
        self.frontend.requires_grad_(False)
        self.frontend.eval()

        self.model_type = model_type
        self.num_layers = int(cfg.num_hidden_layers)
        self.width = int(cfg.hidden_size)
        self.frame_rate = self.frontend.frame_rate
        config = {"model_type": model_type, "config": cfg.to_dict(), "do_normalize": self.do_normalize,
                  "attention_mask": self.use_attention_mask}
        config["config"].pop("transformers_version", None)  # the library version is not the model
        config["config"].pop("_name_or_path", None)
        self.id = weights_id(f"hf-{model_type}", config, self.model.state_dict())

    def train(self, mode: bool = True) -> "nn.Module":
        """A frozen teacher stays in eval mode (no dropout, no layerdrop) whatever is asked."""
        return super().train(False)

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid frames ``(B,)`` for ``(B,)`` valid samples (conv arithmetic)."""
        return self.frontend.frame_lengths(lengths)

    def hidden_states(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``L + 1`` states ``(B, T, D)`` and ``(B,)`` valid frames for ``(B, S)`` waveforms."""
        from harness.frontends import normalize_waveforms

        lengths = torch.as_tensor(lengths, dtype=torch.int64).to(wavs.device)
        mask = torch.arange(wavs.shape[1], device=wavs.device)[None, :] < lengths[:, None]
        x = normalize_waveforms(wavs, lengths, 1e-7) if self.do_normalize else wavs * mask
        with torch.no_grad():
            out = self.model(x, attention_mask=mask.long() if self.use_attention_mask else None,
                             output_hidden_states=True)
        states = list(out.hidden_states)
        frames = self.frame_lengths(lengths).clamp(max=states[0].shape[1])
        return states, frames


@TEACHERS.register("hf")
def build_hf(arg: str, device: str | torch.device = "cpu") -> HfTeacher:
    """``hf:DIR``: a local transformers Hubert/WavLM/Wav2Vec2 folder."""
    return HfTeacher(arg).to(device)
