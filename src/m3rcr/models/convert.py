"""Reading checkpoints of the authors' Align-CR implementation.

Their files hold the network's state dict under ``network`` (sometimes ``state_dict``), saved from
``torch.nn.DataParallel`` (keys prefixed ``module.``), with weight-normalised convolutions stored as
``weight_g`` / ``weight_v`` and two size-dependent buffers (``relative_position_index``,
``attn_mask``) that we recompute instead. The configuration is inferred from the tensor shapes.
"""

from __future__ import annotations

import argparse
import math
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from m3rcr.errors import DataError
from m3rcr.models.checkpoint import save_checkpoint
from m3rcr.models.registry import MODELS

# authors' key -> our key, applied in order (the first matching rule wins)
_RULES: list[tuple[str, str]] = [
    (r"^SFE_conv\.", "opt_features.conv."),
    (r"^SFE_conv_SAR\.", "sar_features.conv."),
    (r"^SFE_module\.(\d+)\.", r"opt_features.blocks.\1."),
    (r"^SFE_module_SAR\.(\d+)\.", r"sar_features.blocks.\1."),
    *((rf"^SFAlign\.(\d+)\.{side}_{theirs}\.", rf"blocks.\1.align.{stream}_pyramid.{ours}.")
      for side, stream in (("src", "sar"), ("ref", "opt"))
      for theirs, ours in (("L2_conv1", "down1"), ("L3_conv1", "down2"), ("toplayer", "top"),
                           ("latlayer1", "lateral1"), ("latlayer2", "lateral2"), ("smooth1", "smooth1"),
                           ("smooth2", "smooth2"))),
    (r"^SFAlign\.(\d+)\.pcd_align\.", r"blocks.\1.align.pcd."),
    (r"^RDBs\.(\d+)\.convs\.(\d+)\.conv\.0\.", r"blocks.\1.rdb.dense_opt.\2."),
    (r"^RDBs\.(\d+)\.convs\.(\d+)\.conv_SAR\.0\.", r"blocks.\1.rdb.dense_sar.\2."),
    (r"^RDBs\.(\d+)\.LFF\.", r"blocks.\1.rdb.fuse_opt."),
    (r"^RDBs\.(\d+)\.LFF_SAR\.", r"blocks.\1.rdb.fuse_sar."),
    (r"^RDBs\.(\d+)\.SwinTransformerBlock\.attn\.attn_fuse_1x1conv\.", r"blocks.\1.rdb.swin.attn.gate."),
    (r"^RDBs\.(\d+)\.SwinTransformerBlock\.", r"blocks.\1.rdb.swin."),
    (r"^DF\.(\d+)\.fac_warp\.(\d+)\.stem\.", r"blocks.\1.fusion.kernel_net.\2.body."),
    (r"^DF\.(\d+)\.fac_warp\.", r"blocks.\1.fusion.kernel_net."),
    (r"^sar_fuse_1x1conv\.(\d+)\.", r"blocks.\1.fusion.sar_to_opt."),
    (r"^opt_distribute_1x1conv\.(\d+)\.", r"blocks.\1.fusion.opt_to_sar."),
    (r"^GFF\.", "gff."),
    (r"^UPNet\.", "head."),
]
_SUFFIXES = [(r"_SAR(\.|$)", r"_sar\1")]  # norm1_SAR -> norm1_sar, qkv_SAR -> qkv_sar, ...
_DROPPED = re.compile(r"(relative_position_index|attn_mask)$")


def map_key(key: str) -> str | None:
    """Our name for an authors' state-dict key; None for buffers we recompute."""
    key = key.removeprefix("module.")
    if _DROPPED.search(key):
        return None
    for pattern, repl in _RULES:
        new, n = re.subn(pattern, repl, key)
        if n:
            for sp, sr in _SUFFIXES:
                new = re.sub(sp, sr, new)
            return new
    raise KeyError(key)


def _count(keys: list[str], pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def infer_config(state: dict[str, torch.Tensor]) -> tuple[str, dict[str, Any]]:
    """The registry name and configuration of the network an authors' state dict belongs to."""
    keys = list(state)
    try:
        first = state["SFE_conv.weight"]
        features = first.shape[0]
        war0 = "SFE_module.0.body."
        wide = state.get(war0 + "0.weight_v", state.get(war0 + "0.weight"))
        linear = state.get(war0 + "2.weight_v", state.get(war0 + "2.weight"))
        growth = state["RDBs.0.convs.0.conv.0.weight"].shape[0]
        table = state["RDBs.0.SwinTransformerBlock.attn.relative_position_bias_table"]
        fc1 = state["RDBs.0.SwinTransformerBlock.mlp.fc1.weight"]
        head0, head2 = state["UPNet.0.weight"], state["UPNet.2.weight"]
    except KeyError as exc:
        raise ValueError(f"not an Align-CR state dict: no {exc.args[0]!r}") from None
    use_sar = "SFE_conv_SAR.weight" in state
    use_align = any(k.startswith("SFAlign.") for k in keys)
    window = (math.isqrt(table.shape[0]) + 1) // 2
    config: dict[str, Any] = dict(
        in_channels=first.shape[1] // 4,
        out_channels=head2.shape[0],
        features=features,
        growth=growth,
        convs_per_block=_count(keys, r"RDBs\.0\.convs\.(\d+)\."),
        blocks=_count(keys, r"RDBs\.(\d+)\."),
        num_heads=table.shape[1],
        window=window,
        mlp_ratio=fc1.shape[0] / features,
        war_blocks=_count(keys, r"SFE_module\.(\d+)\."),
        war_expansion=wide.shape[0] // features,
        war_linear_channels=linear.shape[0],
        head_channels=head0.shape[0],
    )
    name = "aligncr"
    if use_sar:
        config["sar_channels"] = state["SFE_conv_SAR.weight"].shape[1] // 4
        config["filter_size"] = math.isqrt(state["DF.0.fac_warp.3.0.weight"].shape[0] // features)
    else:
        name = "aligncr_wo_sar"
    if use_sar and use_align:
        offset = state["SFAlign.0.pcd_align.dcn_pack.l1.conv_offset.weight"]
        config["deformable_groups"] = offset.shape[0] // (3 * offset.shape[-2] * offset.shape[-1])
    elif use_sar:
        name = "aligncr_wo_align"
    return name, config


def convert_state_dict(state: dict[str, torch.Tensor]) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """Authors' state dict -> (registry name, configuration, our state dict)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    name, config = infer_config(state)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = map_key(key)
        if new is None:
            continue
        if new.endswith(".weight_g"):
            new = new.removesuffix(".weight_g") + ".parametrizations.weight.original0"
        elif new.endswith(".weight_v"):
            new = new.removesuffix(".weight_v") + ".parametrizations.weight.original1"
        out[new] = value.detach().float().clone()
    # weight-normalised convolutions saved with the norm already folded in: split into g and v again
    for key in [k for k in out if re.search(r"features\.blocks\.\d+\.body\.\d+\.weight$", k)]:
        w = out.pop(key)
        base = key.removesuffix(".weight")
        out[base + ".parametrizations.weight.original0"] = w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        out[base + ".parametrizations.weight.original1"] = w
    return name, config, out


def read_authors_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The network state dict inside an authors' checkpoint file, loaded without running any code."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint not found")
    try:
        # their training scripts may store an argparse.Namespace of options beside the weights: a plain
        # attribute container, safe to rebuild; nothing else outside torch's weights-only set is allowed
        with torch.serialization.safe_globals([argparse.Namespace]):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DataError(path, f"holds objects that are not weights; refusing to unpickle them ({exc})") from None
    except Exception as exc:
        raise DataError(path, f"cannot be read as a PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    if isinstance(payload, dict):
        for key in ("network", "state_dict", "model"):
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not isinstance(payload, dict) or not payload or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise DataError(path, "no state dict found (expected a dict of tensors, or one under 'network')")
    return payload


def convert_checkpoint(src: str | Path, dst: str | Path) -> tuple[str, dict[str, Any]]:
    """Convert an authors' checkpoint to ours; return the model name and configuration."""
    state = read_authors_checkpoint(src)
    try:
        name, config, ours = convert_state_dict(state)
    except (ValueError, KeyError) as exc:
        raise DataError(src, f"not an Align-CR checkpoint of the expected layout ({exc})") from None
    model = MODELS.build(name, **config)
    missing, unexpected = model.load_state_dict(ours, strict=False)
    if missing or unexpected:
        raise DataError(src, f"weights do not fit the inferred {name} configuration: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    save_checkpoint(model, dst, extra={"converted_from": str(src)})
    return name, config
