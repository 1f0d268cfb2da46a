"""bf16 autocast on the CPU (issue 15, item 2): close to float32, and the deformable sampling stays float32.

``test_models_aligncr.test_cpu_autocast_bfloat16`` only checks that autocast runs (max difference < 0.1);
here the bound is the issue's target (mean abs difference <= 2e-3 on reflectance in [0, 1]) with a network
that is not the identity (``residual_init=False``, non-zero deformable offsets).
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import TINY

from m3rcr.models import blocks, create_model
from m3rcr.models.blocks import ModulatedDeformConv, deform_conv_impl

# observed on a 2-core Sapphire Rapids (torch 2.14.1): mean 3.7e-4, max 1.9e-3 at 48 x 48
MEAN_TOL = 2e-3


def _model(seed: int = 0) -> torch.nn.Module:
    """Tiny Align-CR whose deformable layers really deform (their offsets start at zero otherwise)."""
    torch.manual_seed(seed)
    model = create_model("aligncr", **TINY["aligncr"]).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ModulatedDeformConv):
                m.conv_offset.weight.normal_(0, 0.05)
                m.conv_offset.bias.normal_(0, 0.5)
    return model


def _inputs(size: int = 48, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, 4, size, size, generator=gen), torch.rand(1, 2, size, size, generator=gen)


def test_bf16_autocast_close_to_float32() -> None:
    model, (cloudy, sar) = _model(), _inputs()
    with torch.no_grad():
        ref = model(cloudy, sar)
        with torch.autocast("cpu", torch.bfloat16):
            low = model(cloudy, sar)
    assert low.shape == ref.shape and low.dtype == torch.float32  # the long skip adds the float32 input
    assert torch.isfinite(low).all()
    diff = (low.float() - ref).abs()
    assert ref.std().item() > 1e-2  # not a constant output, which any precision would reproduce
    assert diff.max().item() > 0  # autocast did run in bf16
    assert diff.mean().item() <= MEAN_TOL, f"mean abs diff {diff.mean().item():.2e}, max {diff.max().item():.2e}"


@pytest.mark.parametrize("impl", ["sampling", "torchvision"])
def test_deformable_sampling_stays_float32_under_autocast(impl: str, monkeypatch) -> None:
    """Both kernels get float32 tensors with autocast off, and the layer hands float32 on."""
    seen: list[tuple[set[torch.dtype], bool]] = []

    def spy(kernel):
        def wrapped(*args, **kwargs):
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            seen.append(({t.dtype for t in tensors}, torch.is_autocast_enabled("cpu")))
            return kernel(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(blocks, "deform_conv2d", spy(blocks.deform_conv2d))
    monkeypatch.setattr(blocks, "sampled_deform_conv2d", spy(blocks.sampled_deform_conv2d))
    grids: list[torch.dtype] = []
    grid_sample = torch.nn.functional.grid_sample

    def grid_spy(x, grid, *args, **kwargs):
        grids.extend([x.dtype, grid.dtype])
        return grid_sample(x, grid, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "grid_sample", grid_spy)
    model, (cloudy, sar) = _model(), _inputs(32)
    outs: list[torch.dtype] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: outs.append(out.dtype))
             for m in model.modules() if isinstance(m, ModulatedDeformConv)]
    with torch.no_grad(), deform_conv_impl(model, impl), torch.autocast("cpu", torch.bfloat16):
        model(cloudy, sar)
    for h in hooks:
        h.remove()
    assert seen and len(seen) == len(hooks), "every deformable layer calls its kernel once"
    assert all(dtypes == {torch.float32} and not autocast for dtypes, autocast in seen)
    assert outs and set(outs) == {torch.float32}
    if impl == "sampling":
        assert grids and set(grids) == {torch.float32}
