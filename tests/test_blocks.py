"""Building blocks checked against direct, loop-based computations of their definitions."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from m3rcr.models.blocks import (
    DynamicFilterFusion,
    ModulatedDeformConv,
    SwinBlock,
    WideActivationBlock,
    dynamic_filter,
)


def _reference_swin(block: SwinBlock, x: torch.Tensor, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-modal shifted-window attention block, one window and one token pair at a time."""
    b, c, h, w = x.shape
    ws, sh, heads = block.window, block.shift, block.attn.num_heads
    hd = c // heads
    a = block.attn

    def region(i: int, n: int) -> int:  # Swin's three regions per axis, on the rolled grid
        return 0 if i < n - ws else (1 if i < n - sh else 2)

    def tokens(m):
        return m.flatten(2).transpose(1, 2)  # (b, h*w, c), row-major

    t, ts = tokens(x), tokens(xs)
    n1 = F.layer_norm(t, (c,), block.norm1.weight, block.norm1.bias).view(b, h, w, c)
    n1s = F.layer_norm(ts, (c,), block.norm1_sar.weight, block.norm1_sar.bias).view(b, h, w, c)
    n1, n1s = torch.roll(n1, (-sh, -sh), (1, 2)), torch.roll(n1s, (-sh, -sh), (1, 2))
    out, out_s = torch.zeros_like(n1), torch.zeros_like(n1s)
    table = a.relative_position_bias_table
    for bi, wy, wx in itertools.product(range(b), range(h // ws), range(w // ws)):
        pos = [(wy * ws + r, wx * ws + q) for r in range(ws) for q in range(ws)]
        win = torch.stack([n1[bi, r, q] for r, q in pos])
        win_s = torch.stack([n1s[bi, r, q] for r, q in pos])
        n = len(pos)
        bias = torch.zeros(heads, n, n)
        mask = torch.zeros(n, n)
        for (i, (ri, ci)), (j, (rj, cj)) in itertools.product(enumerate(pos), repeat=2):
            dy, dx = ri - rj, ci - cj
            bias[:, i, j] = table[(dy + ws - 1) * (2 * ws - 1) + (dx + ws - 1)]
            if sh and (region(ri, h), region(ci, w)) != (region(rj, h), region(cj, w)):
                mask[i, j] = -100.0

        def logits(tok, qkv, n=n, bias=bias, mask=mask):
            q, k, v = qkv(tok).view(n, 3, heads, hd).permute(1, 2, 0, 3)
            return (q * hd ** -0.5) @ k.transpose(-1, -2) + bias + mask, v

        A, v = logits(win, a.qkv)
        As, vs = logits(win_s, a.qkv_sar)
        d = As - A
        g = torch.sigmoid(torch.einsum("oi,ipq->opq", a.gate.weight[:, :, 0, 0], d) + a.gate.bias[:, None, None])
        A = A + d * g
        o = a.proj((A.softmax(-1) @ v).transpose(0, 1).reshape(n, c))
        o_s = a.proj_sar((As.softmax(-1) @ vs).transpose(0, 1).reshape(n, c))
        for (r, q), val, val_s in zip(pos, o, o_s):
            out[bi, r, q], out_s[bi, r, q] = val, val_s
    out, out_s = torch.roll(out, (sh, sh), (1, 2)).reshape(b, h * w, c), torch.roll(out_s, (sh, sh), (1, 2)).reshape(b, h * w, c)
    t, ts = t + out, ts + out_s
    t = t + block.mlp(F.layer_norm(t, (c,), block.norm2.weight, block.norm2.bias))
    ts = ts + block.mlp_sar(F.layer_norm(ts, (c,), block.norm2_sar.weight, block.norm2_sar.bias))
    return t.transpose(1, 2).reshape(b, c, h, w), ts.transpose(1, 2).reshape(b, c, h, w)


@pytest.mark.parametrize("shift", [0, 2])
def test_cross_modal_swin_block_on_a_non_square_map(shift: int) -> None:
    torch.manual_seed(0)
    block = SwinBlock(8, num_heads=2, window=4, shift=shift).eval()
    for p in block.parameters():
        torch.nn.init.normal_(p, 0, 0.3)
    x, xs = torch.randn(2, 8, 8, 12), torch.randn(2, 8, 8, 12)
    with torch.no_grad():
        got, got_s = block(x, xs)
        ref, ref_s = _reference_swin(block, x, xs)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_s, ref_s, atol=1e-5, rtol=1e-5)


def test_dynamic_filter_definition() -> None:
    torch.manual_seed(1)
    x, k = torch.randn(2, 3, 5, 6), torch.randn(2, 3 * 25, 5, 6)
    got = dynamic_filter(x, k, 5)
    pad = F.pad(x, (2, 2, 2, 2), mode="replicate")
    ref = torch.zeros_like(x)
    for b, c, y, xx, i, j in itertools.product(range(2), range(3), range(5), range(6), range(5), range(5)):
        ref[b, c, y, xx] += k[b, 25 * c + 5 * i + j, y, xx] * pad[b, c, y + i, xx + j]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_dynamic_filter_fusion_updates() -> None:
    torch.manual_seed(2)
    fusion = DynamicFilterFusion(4, filter_size=3)
    opt, sar = torch.randn(1, 4, 6, 6), torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        new_opt, new_sar = fusion(opt, sar)
        sar_f = dynamic_filter(sar, fusion.kernel_net(torch.cat([opt, sar], 1)), 3)
        exp_opt = opt + (sar_f - opt) * torch.sigmoid(fusion.sar_to_opt(sar_f - opt))
        exp_sar = sar + (exp_opt - sar_f) * torch.sigmoid(fusion.opt_to_sar(exp_opt - sar_f))  # base: unfiltered
    torch.testing.assert_close(new_opt, exp_opt)
    torch.testing.assert_close(new_sar, exp_sar)


def test_deformable_conv_starts_as_a_half_masked_convolution() -> None:
    torch.manual_seed(3)
    dcn = ModulatedDeformConv(6, 4, deformable_groups=2)
    x = torch.randn(1, 6, 9, 7)
    with torch.no_grad():
        out = dcn(x, torch.randn(1, 6, 9, 7))
        conv = F.conv2d(x, dcn.weight, None, padding=1)
    torch.testing.assert_close(out, 0.5 * conv + dcn.bias.view(1, -1, 1, 1), atol=1e-5, rtol=1e-5)
    # a whole-pixel offset of (0, +1) for every tap samples the neighbour to the right
    with torch.no_grad():
        dcn.conv_offset.bias[1:2 * 2 * 9:2] = 1.0  # x offsets (torchvision layout: y, x pairs)
        dcn.conv_offset.bias[2 * 2 * 9:] = 20.0  # mask ~ 1
        shifted = dcn(x, torch.zeros(1, 6, 9, 7))
        ref = F.conv2d(F.pad(x[..., 1:], (0, 1)), dcn.weight, dcn.bias, padding=1)
    torch.testing.assert_close(shifted[..., 1:-1], ref[..., 1:-1], atol=1e-4, rtol=1e-4)  # away from the borders


@pytest.mark.parametrize("shape", [(2, 8, 13, 17, 2), (1, 6, 2, 5, 3), (3, 4, 9, 9, 1)])
def test_sampling_deform_conv_equals_torchvision(shape: tuple[int, ...]) -> None:
    """The CPU kernel is the same function as torchvision's, values and every gradient (float64), with
    offsets large enough to leave the image on every side."""
    from torchvision.ops import deform_conv2d

    from m3rcr.models.blocks import sampled_deform_conv2d

    b, c, h, w, g = shape
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(b, c, h, w, dtype=torch.float64, generator=gen)
    offset = torch.randn(b, 2 * g * 9, h, w, dtype=torch.float64, generator=gen) * 3
    mask = torch.rand(b, g * 9, h, w, dtype=torch.float64, generator=gen)
    weight = torch.randn(5, c, 3, 3, dtype=torch.float64, generator=gen)
    bias = torch.randn(5, dtype=torch.float64, generator=gen)
    inputs = [t.requires_grad_() for t in (x, offset, mask, weight, bias)]
    ref = deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
    out = sampled_deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
    torch.testing.assert_close(out, ref, atol=1e-11, rtol=1e-11)
    for a, b_ in zip(torch.autograd.grad(ref.sin().sum(), inputs), torch.autograd.grad(out.sin().sum(), inputs)):
        torch.testing.assert_close(b_, a, atol=1e-10, rtol=1e-10)


def test_deformable_conv_kernels_agree_inside_the_module() -> None:
    from m3rcr.models.blocks import deform_conv_impl

    torch.manual_seed(5)
    dcn = ModulatedDeformConv(8, 8, deformable_groups=2)
    torch.nn.init.normal_(dcn.conv_offset.weight, std=0.3)
    x, guide = torch.randn(2, 8, 12, 10), torch.randn(2, 8, 12, 10)
    outs = {}
    for impl in ("torchvision", "sampling", "auto"):
        with torch.no_grad(), deform_conv_impl(dcn, impl):
            outs[impl] = dcn(x, guide)
    assert dcn.impl == "auto"  # restored
    torch.testing.assert_close(outs["sampling"], outs["torchvision"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs["auto"], outs["sampling"])  # CPU picks the sampling kernel
    dcn.impl = "fast"
    with pytest.raises(ValueError, match="impl"):
        dcn(x, guide)


def test_wide_activation_block() -> None:
    torch.manual_seed(4)
    block = WideActivationBlock(8)
    convs = [block.body[i] for i in (0, 2, 3)]
    assert [c.weight.shape for c in convs] == [(48, 8, 1, 1), (6, 48, 1, 1), (8, 6, 3, 3)]
    weights = []
    for conv in convs:  # all three weight-normalised per output channel: w = g v / |v|
        g, v = conv.parametrizations.weight.original0, conv.parametrizations.weight.original1
        with torch.no_grad():
            g.mul_(torch.rand_like(g) + 0.5)  # make g differ from |v| so the test can tell
        weights.append((g * v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).detach())
    x = torch.randn(1, 8, 5, 5)
    y = F.conv2d(F.relu(F.conv2d(x, weights[0], convs[0].bias)), weights[1], convs[1].bias)
    ref = x + F.conv2d(y, weights[2], convs[2].bias, padding=1)  # no activation after the last two
    with torch.no_grad():
        torch.testing.assert_close(block(x), ref, atol=1e-5, rtol=1e-5)
