"""Width-reducing initialisation of a Whisper student from its teacher (Minitron-style
activation-based channel pruning).

A student narrower than its teacher (``d_model`` 128 from 192, say) cannot copy the
teacher's matrices; it takes **sub-matrices** of them, keeping the channels that carry
the most activation on real inputs:

* **residual channels**, separately for the encoder's and the decoder's residual stream:
  importance = mean absolute value at every LayerNorm input of that stream (the residual
  stream itself), summed over layers; the ``d`` most important are kept, in their
  original order;
* **convolution channels** of the encoder front-end (``conv1``'s outputs): mean absolute
  activation after its GELU;
* **feed-forward neurons**, per layer: mean absolute activation after ``fc1``'s GELU;
* **attention dimensions**, per layer and head (the head count is kept, each head
  narrower): for query/key pairs, mean ``|q_i|`` x mean ``|k_i|``; for value/output pairs,
  mean ``|v_i|`` x the norm of ``out_proj``'s column ``i``. Query and key keep the same
  dimensions (their dot product), as do value and output.

Every weight then keeps the rows of its output channels and the columns of its input
channels (cross-attention keys and values read the *encoder's* residual channels). The
importances come from :func:`calibrate`: the teacher, teacher-forced, on a few training
batches, with forward hooks. Layer norms over a subset of channels see different
statistics than in the teacher, so a narrowed student starts worse than a depth-cut one
and is trained (``harness.asr.train.fit``), as Minitron's pruned models are.

:func:`narrow_state` is pure indexing (tested: a student "narrowed" to the full width with
identity indices reproduces the teacher's logits).
"""

from __future__ import annotations

import re

import torch


def _top(score: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest scores, in increasing index order."""
    return torch.sort(torch.topk(score, k).indices).values


def _per_head(score: torch.Tensor, heads: int, keep: int) -> torch.Tensor:
    """``keep`` dims of each of ``heads`` heads (``score``: one value per dim, head-major)."""
    hd = score.numel() // heads
    return torch.cat([h * hd + _top(score[h * hd:(h + 1) * hd], keep) for h in range(heads)])


@torch.no_grad()
def calibrate(teacher, batches) -> dict[str, torch.Tensor]:
    """Mean absolute activations of the teacher at the sites the module docstring names.

    Args:
        teacher: an :class:`~harness.asr.teacher.AsrModel`.
        batches: :class:`~harness.asr.data.AsrBatch` es (features, decoder input).

    Returns:
        ``{site name: per-channel mean |activation|}`` with sites ``enc.res``, ``dec.res``,
        ``enc.conv``, ``<stack>.<i>.ffn``, ``<stack>.<i>.<attn>.{q,k,v}`` (``stack`` in
        ``encoder``/``decoder``, ``attn`` in ``self_attn``/``encoder_attn``).
    """
    model = teacher.model
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def add(name: str, x: torch.Tensor) -> None:
        x = x.detach().abs().reshape(-1, x.shape[-1]).float()
        sums[name] = sums.get(name, 0) + x.sum(0)
        counts[name] = counts.get(name, 0) + x.shape[0]

    hooks = []
    for name, mod in model.named_modules():
        m = re.match(r"model\.(encoder|decoder)\.layers\.(\d+)\.(\w+)$", name)
        if isinstance(mod, torch.nn.LayerNorm):
            stream = "enc.res" if ".encoder." in name else "dec.res"
            hooks.append(mod.register_forward_hook(lambda _m, i, _o, s=stream: add(s, i[0])))
        elif m and m.group(3) == "fc2":
            site = f"{m.group(1)}.{m.group(2)}.ffn"
            hooks.append(mod.register_forward_hook(lambda _m, i, _o, s=site: add(s, i[0])))
        a = re.match(r"model\.(encoder|decoder)\.layers\.(\d+)\.(self_attn|encoder_attn)\.([qkv])_proj$", name)
        if a:
            site = f"{a.group(1)}.{a.group(2)}.{a.group(3)}.{a.group(4)}"
            hooks.append(mod.register_forward_hook(lambda _m, _i, o, s=site: add(s, o)))
    conv2 = model.model.encoder.conv2
    hooks.append(conv2.register_forward_hook(lambda _m, i, _o: add("enc.conv", i[0].transpose(1, 2))))
    try:
        model.eval()
        for b in batches:
            model(input_features=b.features, decoder_input_ids=b.decoder_input)
    finally:
        for h in hooks:
            h.remove()
    return {k: sums[k] / counts[k] for k in sums}


def choose(model, stats: dict[str, torch.Tensor], d_model: int, ffn: int) -> dict[str, torch.Tensor]:
    """Kept indices for every site (see the module docstring); ``model`` is the teacher
    (or an already depth-cut copy whose layer ``i`` was teacher layer ``src[i]``: pass the
    stats of the source layers, renamed)."""
    cfg = model.config
    heads = cfg.encoder_attention_heads
    if d_model % heads:
        raise ValueError(f"d_model {d_model} is not a multiple of the {heads} attention heads")
    keep_hd = d_model // heads
    idx = {"enc.res": _top(stats["enc.res"], d_model), "dec.res": _top(stats["dec.res"], d_model),
           "enc.conv": _top(stats["enc.conv"], d_model)}
    for stack, n in (("encoder", cfg.encoder_layers), ("decoder", cfg.decoder_layers)):
        layers = getattr(model.model, stack).layers
        for i in range(n):
            idx[f"{stack}.{i}.ffn"] = _top(stats[f"{stack}.{i}.ffn"], ffn)
            for attn in ("self_attn",) + (("encoder_attn",) if stack == "decoder" else ()):
                p = f"{stack}.{i}.{attn}"
                out_norm = getattr(layers[i], attn).out_proj.weight.norm(dim=0)
                idx[f"{p}.qk"] = _per_head(stats[f"{p}.q"] * stats[f"{p}.k"], heads, keep_hd)
                idx[f"{p}.vo"] = _per_head(stats[f"{p}.v"] * out_norm, heads, keep_hd)
    return idx


def _rows_cols(w: torch.Tensor, rows=None, cols=None) -> torch.Tensor:
    if rows is not None:
        w = w.index_select(0, rows)
    if cols is not None and w.dim() > 1:
        w = w.index_select(1, cols)
    return w.clone()


def narrow_state(state: dict[str, torch.Tensor], idx: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The teacher's (depth-cut) state dict cut to the kept indices ``idx`` of :func:`choose`."""
    er, dr = idx["enc.res"], idx["dec.res"]
    out = {}
    for k, w in state.items():
        m = re.match(r"model\.(encoder|decoder)\.layers\.(\d+)\.(.+)$", k)
        res = er if k.startswith("model.encoder.") else dr
        if k.startswith("model.encoder.conv1."):
            out[k] = _rows_cols(w, idx["enc.conv"])
        elif k.startswith("model.encoder.conv2."):
            out[k] = _rows_cols(w, er, idx["enc.conv"])
        elif k.endswith("embed_positions.weight") or k.endswith("embed_tokens.weight") or k == "proj_out.weight":
            out[k] = _rows_cols(w, None, res)
        elif m is None:  # the final layer norms
            out[k] = _rows_cols(w, res)
        else:
            stack, i, rest = m.groups()
            p = f"{stack}.{i}"
            a = re.match(r"(self_attn|encoder_attn)\.([qkvo]\w*)_proj\.(weight|bias)$", rest)
            if a:
                attn, proj, kind = a.groups()
                # cross-attention keys and values read the encoder's residual stream
                src = er if (attn == "encoder_attn" and proj in ("k", "v")) else res
                if proj in ("q", "k"):
                    rows, cols = idx[f"{p}.{attn}.qk"], src
                elif proj == "v":
                    rows, cols = idx[f"{p}.{attn}.vo"], src
                else:  # out
                    rows, cols = res, idx[f"{p}.{attn}.vo"]
                out[k] = _rows_cols(w, rows, cols if kind == "weight" else None)
            elif rest.startswith("fc1."):
                out[k] = _rows_cols(w, idx[f"{p}.ffn"], res)
            elif rest.startswith("fc2."):
                out[k] = _rows_cols(w, res, idx[f"{p}.ffn"] if rest.endswith("weight") else None)
            else:  # layer norms
                out[k] = _rows_cols(w, res)
    return out


def rename_stats(stats: dict[str, torch.Tensor], enc_src: list[int], dec_src: list[int]) -> dict[str, torch.Tensor]:
    """Stats of a depth-cut student: its layer ``i`` takes the stats of source layer ``src[i]``."""
    out = {k: v for k, v in stats.items() if not re.match(r"(encoder|decoder)\.\d+\.", k)}
    for stack, src in (("encoder", enc_src), ("decoder", dec_src)):
        for new, old in enumerate(src):
            for k, v in stats.items():
                if k.startswith(f"{stack}.{old}."):
                    out[f"{stack}.{new}." + k[len(f"{stack}.{old}."):]] = v
    return out
