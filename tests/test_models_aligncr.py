"""Align-CR: the authors' outputs, any input size, gradients, ablations, checkpoints, complexity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from paths import SHARED, require_shared
from reference_figures import reference

from m3rcr.cli import main
from m3rcr.errors import DataError
from m3rcr.evaluation.complexity import count_macs, count_parameters
from m3rcr.models import create_model, list_models, load_model, save_checkpoint
from m3rcr.models.blocks import ModulatedDeformConv
from m3rcr.models.convert import convert_checkpoint, convert_state_dict, map_key

GOLDEN = SHARED / "golden" / "aligncr_small.pt"
KEYS_TSV = SHARED / "specs" / "aligncr_official_keys.tsv"
# residual_init=False: a random, not an identity, function, so that shape and batch tests mean something
TINY = dict(features=16, growth=8, convs_per_block=2, blocks=2, num_heads=2, window=8, war_blocks=1,
            head_channels=16, deformable_groups=2, residual_init=False)


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(require_shared(GOLDEN), weights_only=True)


def _authors_file(golden: dict, path: Path) -> Path:
    """The golden weights as the authors' code saves them: DataParallel prefixes under 'network'."""
    torch.save({"network": {f"module.{k}": v for k, v in golden["state_dict"].items()}, "epoch": 30}, path)
    return path


def test_reproduces_the_authors_output(golden: dict, tmp_path: Path) -> None:
    name, config = convert_checkpoint(_authors_file(golden, tmp_path / "authors.pth"), tmp_path / "ours.ckpt")
    assert name == "aligncr"
    assert config["features"] == 32 and config["growth"] == 16 and config["convs_per_block"] == 3
    assert config["blocks"] == 2 and config["num_heads"] == 8 and config["filter_size"] == 5
    model = load_model(tmp_path / "ours.ckpt")
    assert not model.training
    with torch.no_grad():
        out = model(golden["cloudy"], golden["sar"])
    assert (out - golden["output"]).abs().max().item() < 1e-5


def test_bare_state_dict_converts_too(golden: dict) -> None:
    name, config, state = convert_state_dict(golden["state_dict"])
    model = create_model(name, **config).eval()
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        out = model(golden["cloudy"], golden["sar"])
    assert (out - golden["output"]).abs().max().item() < 1e-5


def test_every_official_key_maps_onto_the_default_model() -> None:
    """The authors' 921 state-dict entries (default configuration) fill our default model exactly."""
    rows = [line.split("\t") for line in require_shared(KEYS_TSV).read_text().splitlines()[1:]]
    assert len(rows) == 921
    state = {k: torch.zeros([int(s) for s in shape.split("x")]) for k, shape, *_ in rows}
    name, config, ours = convert_state_dict(state)
    assert name == "aligncr"
    model = create_model(name, **config)
    assert model.config == create_model("aligncr").config
    model.load_state_dict(ours, strict=True)
    buffers = [k for k, *_, kind, _ in rows if kind == "buffer"]
    assert buffers and all(map_key(k) is None for k in buffers)
    assert sum(int(n) for _, _, n, kind, _ in rows if kind == "param") == count_parameters(model)


def test_default_configuration_size() -> None:
    model = create_model("aligncr").eval()
    assert count_parameters(model) == reference("aligncr", "parameters")
    align = sum(p.numel() for n, p in model.named_parameters() if ".align." in n)
    assert align == reference("aligncr", "align_parameters")
    # every operation scales with the number of pixels, so MACs at 160 px = 25 x MACs at 32 px
    macs = 25 * count_macs(model, torch.rand(1, 4, 32, 32), torch.rand(1, 2, 32, 32))
    assert macs / 1e9 == reference("aligncr", "macs_160")


@pytest.mark.parametrize("shape", [(1, 50, 70), (2, 300, 300), (1, 64, 48), (1, 17, 5)])
def test_any_input_size(shape: tuple[int, int, int]) -> None:
    b, h, w = shape
    model = create_model("aligncr", **TINY).eval()
    with torch.no_grad():
        out = model(torch.rand(b, 4, h, w), torch.rand(b, 2, h, w))
    assert out.shape == (b, 4, h, w) and torch.isfinite(out).all()


@pytest.mark.parametrize("h,w", [(50, 70), (17, 5)])
def test_padding_and_cropping_line_up(h: int, w: int) -> None:
    """An odd-sized input gives exactly the top-left part of the output for its own padded version."""
    model = create_model("aligncr", **TINY).eval()
    x, s = torch.rand(2, 4, h, w), torch.rand(2, 2, h, w)
    H, W = -(-h // 16) * 16, -(-w // 16) * 16
    xp = F.pad(x, (0, W - w, 0, H - h), mode="replicate")
    sp = F.pad(s, (0, W - w, 0, H - h), mode="replicate")
    with torch.no_grad():
        small, big = model(x, s), model(xp, sp)
    torch.testing.assert_close(small, big[..., :h, :w], atol=1e-6, rtol=1e-6)
    # attention ran on the padded half-resolution grid, nothing else
    sizes = {k[:2] for m in model.modules() if hasattr(m, "_masks") for k in m._masks}
    assert sizes == {(H // 2, W // 2)}


def test_batch_items_are_independent() -> None:
    model = create_model("aligncr", **TINY).eval()
    x, s = torch.rand(3, 4, 24, 40), torch.rand(3, 2, 24, 40)
    with torch.no_grad():
        batch = model(x, s)
        single = torch.cat([model(x[i:i + 1], s[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=1e-5)


def test_zero_head_returns_the_cloudy_input() -> None:
    model = create_model("aligncr", **TINY).eval()  # a random head, zeroed by hand
    torch.nn.init.zeros_(model.head[-1].weight)
    torch.nn.init.zeros_(model.head[-1].bias)
    x = torch.rand(2, 4, 40, 56)
    with torch.no_grad():
        assert torch.equal(model(x, torch.rand(2, 2, 40, 56)), x)


def test_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    model = create_model("aligncr", **TINY)  # residual_init=False: a zero last convolution passes no gradient
    # offset convolutions start at zero (plain convolutions), which blocks gradients to everything
    # that feeds them until the first update; move them off zero as training would
    for m in model.modules():
        if isinstance(m, ModulatedDeformConv):
            torch.nn.init.normal_(m.conv_offset.weight, 0, 0.05)
    out = model(torch.rand(2, 4, 32, 48), torch.rand(2, 2, 32, 48))
    ((out - 0.5) ** 2).mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    # the last block's SAR update feeds nothing downstream, in the authors' network too
    assert no_grad == ["blocks.1.fusion.opt_to_sar.weight", "blocks.1.fusion.opt_to_sar.bias"]


def _names(name: str) -> dict[str, torch.Size]:
    return {n: p.shape for n, p in create_model(name, **TINY).named_parameters()}


def test_ablation_switches_remove_exactly_their_parameters() -> None:
    full, wo_align, wo_sar = _names("aligncr"), _names("aligncr_wo_align"), _names("aligncr_wo_sar")
    assert set(wo_align) < set(full) and set(wo_sar) < set(full)
    assert all(full[n] == s for n, s in {**wo_align, **wo_sar}.items())
    assert set(full) - set(wo_align) == {n for n in full if ".align." in n}
    sar_only = {n for n in full if "sar" in n or any(t in n for t in (".align.", ".fusion.", ".attn.gate."))}
    assert set(full) - set(wo_sar) == sar_only
    # the optical path is complete in both ablations
    assert {n for n in full if n.startswith(("opt_features", "gff", "head"))} <= set(wo_sar)


def test_ablations_run() -> None:
    x, s = torch.rand(1, 4, 32, 32), torch.rand(1, 2, 32, 32)
    with torch.no_grad():
        wo_sar = create_model("aligncr_wo_sar", **TINY).eval()
        assert torch.equal(wo_sar(x), wo_sar(x, s))  # the SAR input is ignored
        assert create_model("aligncr_wo_align", **TINY).eval()(x, s).shape == x.shape
    with pytest.raises(ValueError, match="model\\(cloudy, sar\\)"):
        create_model("aligncr", **TINY)(x)
    with pytest.raises(ValueError, match="H, W of cloudy"):
        create_model("aligncr", **TINY)(x, torch.rand(1, 2, 16, 16))
    with pytest.raises(ValueError, match="fixes use_sar=False"):
        create_model("aligncr_wo_sar", use_sar=True)


def test_registry() -> None:
    assert {"aligncr", "aligncr_wo_sar", "aligncr_wo_align"} <= set(list_models())
    with pytest.raises(ValueError, match="unknown model"):
        create_model("nope")


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = create_model("aligncr_wo_align", **TINY).eval()
    path = save_checkpoint(model, tmp_path / "m.ckpt")
    payload = torch.load(path, weights_only=True)
    assert payload["model"] == "aligncr_wo_align" and payload["config"]["features"] == 16
    assert not any("attn_mask" in k or "relative_position_index" in k for k in payload["state_dict"])
    loaded = load_model(path, device="cpu")
    x, s = torch.rand(1, 4, 24, 40), torch.rand(1, 2, 24, 40)
    with torch.no_grad():
        assert torch.equal(loaded(x, s), model(x, s))
    torch.save({"network": {}}, tmp_path / "authors.pth")
    with pytest.raises(DataError, match="convert it with `m3rcr convert-checkpoint`"):
        load_model(tmp_path / "authors.pth")
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    with pytest.raises(DataError, match="cannot be read as an m3rcr checkpoint"):
        load_model(tmp_path / "junk.ckpt")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_converter_refuses_code_and_foreign_files(tmp_path: Path, capsys) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    import pickle

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"network": Evil()}))
    code = main(["convert-checkpoint", str(tmp_path / "evil.pth"), str(tmp_path / "out.ckpt")])
    captured = capsys.readouterr()
    assert code == 2 and "executed" not in captured.out and "evil.pth" in captured.err
    torch.save({"network": {"foo.weight": torch.zeros(1)}}, tmp_path / "foreign.pth")
    assert main(["convert-checkpoint", str(tmp_path / "foreign.pth"), str(tmp_path / "out.ckpt")]) == 2
    assert "not an Align-CR checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out.ckpt").exists()


def test_converter_accepts_folded_weight_norm(golden: dict) -> None:
    """Weight-norm convolutions saved as plain weights (norm folded in) give the same network."""
    state = dict(golden["state_dict"])
    for key in [k for k in state if k.endswith("weight_g")]:
        base = key.removesuffix("_g")
        g, v = state.pop(base + "_g"), state.pop(base + "_v")
        state[base] = g * v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    name, config, ours = convert_state_dict(state)
    model = create_model(name, **config).eval()
    model.load_state_dict(ours, strict=True)
    with torch.no_grad():
        assert (model(golden["cloudy"], golden["sar"]) - golden["output"]).abs().max().item() < 1e-5


def test_bfloat16_weights_run_on_cpu() -> None:
    model = create_model("aligncr", **TINY).eval().to(torch.bfloat16)
    with torch.no_grad():
        out = model(torch.rand(1, 4, 32, 32, dtype=torch.bfloat16), torch.rand(1, 2, 32, 32, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_cpu_autocast_bfloat16() -> None:
    model = create_model("aligncr", **TINY).eval()
    x, s = torch.rand(1, 4, 32, 32), torch.rand(1, 2, 32, 32)
    with torch.no_grad():
        ref = model(x, s)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, s)
    assert low.shape == ref.shape and torch.isfinite(low).all()
    assert (low.float() - ref).abs().max().item() < 0.1


def test_complexity_cli(capsys) -> None:
    args = ["complexity", "--model", "aligncr", "--size", "32", "48", "--repeats", "2", "--json"]
    for kv in ("features=16", "growth=8", "convs_per_block=2", "blocks=2", "num_heads=2", "war_blocks=1",
               "head_channels=16", "deformable_groups=2"):
        args += ["--set", kv]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    model = create_model("aligncr", **TINY)
    assert result["parameters"] == count_parameters(model)
    assert result["macs"] == count_macs(model.eval(), torch.rand(1, 4, 32, 48), torch.rand(1, 2, 32, 48))
    assert result["flops"] == 2 * result["macs"] and result["latency_ms"] > 0
    runs = result["latency_runs_ms"]
    assert len(runs) == 2 and result["latency_ms"] == pytest.approx(sorted(runs)[0] / 2 + sorted(runs)[1] / 2, abs=0.01)
    assert result["device"].startswith("cpu") and result["padded_size"] is None
    assert main(["complexity", "--model", "aligncr", "--set", "featurez=3"]) == 2
    assert "has no option 'featurez'" in capsys.readouterr().err
    assert main(["complexity", "--model", "aligncr", "--size", "1", "2", "3"]) == 2
    assert "--size takes N or H W" in capsys.readouterr().err


def test_macs_follow_the_padded_size() -> None:
    from m3rcr.evaluation.complexity import measure

    model = create_model("aligncr", **TINY)
    odd = measure(model, "aligncr", size=(50, 70), repeats=0)
    even = measure(model, "aligncr", size=(64, 80), repeats=0)
    assert odd.padded_size == [64, 80] and even.padded_size is None
    assert odd.macs == even.macs and odd.latency_ms is None


def _official_rows() -> list[list[str]]:
    return [line.split("\t") for line in require_shared(KEYS_TSV).read_text().splitlines()[1:]]


@pytest.mark.parametrize("ablation", ["aligncr_wo_sar", "aligncr_wo_align"])
def test_ablation_checkpoints_convert(ablation: str) -> None:
    """The authors' key layout without the SAR stream (or without SFAlign) converts to the ablation."""
    sar_parts = ("SFE_conv_SAR", "SFE_module_SAR", "SFAlign", "conv_SAR", "LFF_SAR", "_SAR.", "attn_fuse_1x1conv",
                 "DF.", "sar_fuse_1x1conv", "opt_distribute_1x1conv")
    removed = sar_parts if ablation == "aligncr_wo_sar" else ("SFAlign",)
    state = {k: torch.zeros([int(n) for n in shape.split("x")]) for k, shape, *_ in _official_rows()
             if not any(part in k for part in removed)}
    name, config, ours = convert_state_dict(state)
    assert name == ablation
    model = create_model(name, **config)
    model.load_state_dict(ours, strict=True)
    assert model.config == create_model(ablation).config


def test_alignment_offsets_move_to_undo_a_known_shift() -> None:
    """The alignment's deformable offsets get a gradient that points the right way: trained to read an
    unshifted feature map out of one displaced by 2 px to the east (the reference a different linear
    "modality" of the unshifted map), its level-1 offsets move about 2 px east and not north-south. A sign
    or (dy, dx) order error in the offset path makes them move west, north-south, or not at all."""
    from m3rcr.models.aligncr import SARAlignment

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    c, h, pad, shift = 8, 24, 8, 2.0
    align = SARAlignment(c, deformable_groups=1)
    opt = torch.optim.Adam(align.parameters(), 3e-3)
    modality = torch.randn(c, c, 1, 1, generator=gen) * 0.3

    def batch(b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p = h + 2 * pad
        f = F.avg_pool2d(torch.randn(b, c, p, p, generator=gen), 5, 1, 2) * 3  # smooth features
        ys, xs = torch.meshgrid(torch.arange(p + 0.0), torch.arange(p + 0.0), indexing="ij")
        grid = torch.stack([(xs - shift + 0.5) / p * 2 - 1, (ys + 0.5) / p * 2 - 1], -1)
        source = F.grid_sample(f, grid.expand(b, -1, -1, -1), align_corners=False)  # source(x) = f(x - 2)
        inner = slice(pad, pad + h)
        return source[..., inner, inner], F.conv2d(f, modality)[..., inner, inner], f[..., inner, inner]

    for _ in range(100):
        source, reference, target = batch(8)
        loss = (align(source, reference) - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    captured = []
    dcn = align.pcd.dcn_pack["l1"]
    hook = dcn.register_forward_hook(lambda mod, inp, out: captured.append(mod.conv_offset(inp[1])[:, :18]))
    source, reference, _ = batch(16)
    with torch.no_grad():
        align(source, reference)
    hook.remove()
    off = captured[0].view(16, 9, 2, h, h)[..., 4:-4, 4:-4]  # (dy, dx) per tap, away from the borders
    dy, dx = float(off[:, :, 0].mean()), float(off[:, :, 1].mean())
    assert dx > 0.5, f"offsets did not move east to undo the shift: dx {dx:.3f}"
    assert abs(dy) < 0.3, f"offsets moved north-south for an east-west shift: dy {dy:.3f}"
