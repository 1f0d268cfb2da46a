"""The blocks' fast paths (issue 15) against their original formulations: float32 outputs and gradients
within 1e-5, tiny sizes. The originals stay reachable through ``fast_paths(model, False)``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from paths import SHARED, require_shared
from torchvision.ops import deform_conv2d

from m3rcr.models import create_model, load_model
from m3rcr.models.blocks import (
    DynamicFilterFusion,
    ResidualDenseBlock,
    WindowAttention,
    dynamic_filter,
    dynamic_filter_unfold,
    fast_paths,
    sampled_deform_conv2d,
    shifted_window_mask,
)
from m3rcr.models.convert import convert_checkpoint

TOL = 1e-5


def _both(module: torch.nn.Module, fn, *inputs: torch.Tensor) -> tuple[list, list]:
    """``fn(module, *inputs)`` on the fast and the original path: (outputs, input and parameter gradients)."""
    results = []
    for enabled in (True, False):
        xs = [t.detach().clone().requires_grad_(True) for t in inputs]
        module.zero_grad()
        with fast_paths(module, enabled):
            outs = [o for o in fn(module, *xs) if o is not None]
        sum((o * torch.linspace(-1, 1, o.numel()).view(o.shape)).sum() for o in outs).backward()
        grads = [t.grad for t in xs] + [p.grad.clone() for p in module.parameters() if p.grad is not None]
        results.append((outs, grads))
    return results[0], results[1]


def _close(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x - y).abs().max().item() < TOL


def test_dynamic_filter_equals_unfold_formulation_with_gradients() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 6, 7, requires_grad=True)
    k = torch.randn(2, 3 * 25, 6, 7, requires_grad=True)
    new = dynamic_filter(x, k, 5)
    ref = dynamic_filter_unfold(x, k, 5)
    assert (new - ref).abs().max().item() < TOL
    g = torch.randn_like(new)
    gx, gk = torch.autograd.grad(new, (x, k), g)
    rx, rk = torch.autograd.grad(ref, (x, k), g)
    assert (gx - rx).abs().max().item() < TOL and (gk - rk).abs().max().item() < TOL


def test_dynamic_filter_against_direct_loop() -> None:
    torch.manual_seed(1)
    x, k = torch.rand(1, 2, 4, 5), torch.randn(1, 2 * 9, 4, 5)
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    ref = torch.zeros_like(x)
    for c in range(2):
        for i in range(3):
            for j in range(3):
                ref[0, c] += xp[0, c, i:i + 4, j:j + 5] * k[0, 9 * c + 3 * i + j]
    assert (dynamic_filter(x, k, 3) - ref).abs().max().item() < TOL


def test_dynamic_filter_fusion_fast_equals_original() -> None:
    torch.manual_seed(2)
    block = DynamicFilterFusion(4, 5)
    (out, grads), (ref, ref_grads) = _both(block, lambda m, a, b: m(a, b), torch.rand(2, 4, 6, 6),
                                           torch.rand(2, 4, 6, 6))
    _close(out, ref)
    _close(grads, ref_grads)


@pytest.mark.parametrize("batch", [1, 2])
def test_residual_dense_block_inference_buffer_equals_concatenation(batch: int) -> None:
    torch.manual_seed(3)
    block = ResidualDenseBlock(8, 4, 3, num_heads=2, window=4, shift=2).eval()
    x, xs = torch.rand(batch, 8, 8, 8), torch.rand(batch, 8, 8, 8)
    with torch.no_grad():
        out = block(x, xs)
        with fast_paths(block, False):
            ref = block(x, xs)
    _close(list(out), list(ref))


def test_residual_dense_block_training_unchanged() -> None:
    torch.manual_seed(4)
    block = ResidualDenseBlock(8, 4, 2, num_heads=2, window=4, shift=2)
    (out, grads), (ref, ref_grads) = _both(block, lambda m, a, b: m(a, b), torch.rand(2, 8, 8, 8),
                                           torch.rand(2, 8, 8, 8))
    _close(out, ref)
    _close(grads, ref_grads)


@pytest.mark.parametrize("shifted", [False, True])
def test_single_stream_attention_sdpa_equals_explicit(shifted: bool) -> None:
    torch.manual_seed(5)
    attn = WindowAttention(8, 2, 4, sar=False)
    mask = shifted_window_mask(8, 8, 4, 2) if shifted else None
    tokens = torch.rand(2 * 4, 16, 8)  # batch 2, four 4x4 windows of an 8x8 map
    (out, grads), (ref, ref_grads) = _both(attn, lambda m, a: m(a, None, mask), tokens)
    _close(out, ref)
    _close(grads, ref_grads)


@pytest.mark.parametrize("use_sar", [True, False])
def test_small_aligncr_fast_equals_original(use_sar: bool) -> None:
    torch.manual_seed(6)
    model = create_model("aligncr", features=16, growth=8, convs_per_block=2, blocks=1, num_heads=2, window=4,
                         deformable_groups=2, filter_size=3, war_blocks=1, head_channels=16,
                         use_sar=use_sar, residual_init=False).eval()
    cloudy, sar = torch.rand(1, 4, 16, 16), torch.rand(1, 2, 16, 16)
    with torch.no_grad():
        out = model(cloudy, sar)
        with fast_paths(model, False):
            assert all(not m.fast for m in model.modules() if hasattr(m, "fast"))
            ref = model(cloudy, sar)
    assert all(m.fast for m in model.modules() if hasattr(m, "fast"))
    assert (out - ref).abs().max().item() < TOL


def test_dynamic_filter_mixed_precision_gradients_keep_input_types() -> None:
    torch.manual_seed(7)
    x = torch.rand(1, 2, 5, 5, requires_grad=True)
    k = torch.randn(1, 2 * 9, 5, 5, dtype=torch.bfloat16, requires_grad=True)
    out = dynamic_filter(x, k, 3)
    ref = dynamic_filter_unfold(x, k.float(), 3)
    assert (out - ref).abs().max().item() < TOL
    out.sum().backward()
    assert x.grad.dtype == torch.float32 and k.grad.dtype == torch.bfloat16


def test_golden_output_unchanged_by_fast_paths(tmp_path) -> None:
    """The authors' outputs for fixed weights: fast and original paths both within 1e-5, and of each other."""
    golden = torch.load(require_shared(SHARED / "golden" / "aligncr_small.pt"), weights_only=True)
    authors = tmp_path / "authors.pth"
    torch.save({"network": {f"module.{k}": v for k, v in golden["state_dict"].items()}}, authors)
    convert_checkpoint(authors, tmp_path / "ours.ckpt")
    model = load_model(tmp_path / "ours.ckpt")
    with torch.no_grad():
        out = model(golden["cloudy"], golden["sar"])
        with fast_paths(model, False):
            ref = model(golden["cloudy"], golden["sar"])
    assert (out - ref).abs().max().item() < TOL
    assert (out - golden["output"]).abs().max().item() < TOL


def test_sampled_deform_conv_same_with_and_without_autograd() -> None:
    torch.manual_seed(8)
    x, offset = torch.rand(1, 4, 6, 6), torch.randn(1, 2 * 2 * 9, 6, 6)
    mask, weight, bias = torch.rand(1, 2 * 9, 6, 6), torch.randn(3, 4, 3, 3), torch.randn(3)
    ref = deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
    with torch.no_grad():
        fast = sampled_deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
    graph = sampled_deform_conv2d(x, offset, weight, bias, padding=1, mask=mask.requires_grad_(True))
    assert (fast - ref).abs().max().item() < TOL and (graph - ref).abs().max().item() < TOL
