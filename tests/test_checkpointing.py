"""Activation checkpointing of Align-CR's AlignFuse blocks (issue 15): the same function and gradients, less
memory held between the forward and the backward pass, the same state dict, saved and resumed as any option."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_models import TINY

from m3rcr.models import create_model
from m3rcr.models.aligncr import AlignCR, AlignFuseBlock
from m3rcr.models.checkpoint import load_model, save_checkpoint
from m3rcr.models.registry import MODELS

NAMES = ("aligncr", "aligncr_wo_sar", "aligncr_wo_align")
TOL = {"atol": 1e-6, "rtol": 1e-5}


def _pair(name: str) -> tuple[AlignCR, AlignCR]:
    """The same tiny weights without and with checkpointing."""
    torch.manual_seed(0)
    plain = create_model(name, **TINY[name])
    ckpt = create_model(name, **TINY[name], checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    assert isinstance(plain, AlignCR) and isinstance(ckpt, AlignCR)
    return plain, ckpt


def _inputs(size: tuple[int, int] = (40, 48)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cloudy, SAR and a random weighting of the output (so every output pixel gets its own gradient)."""
    g = torch.Generator().manual_seed(1)
    return (torch.rand(2, 4, *size, generator=g), torch.rand(2, 2, *size, generator=g),
            torch.randn(2, 4, *size, generator=g))


def _block_calls(model: AlignCR) -> list[int]:
    """A counter of AlignFuse block calls, kept up to date by pre-hooks (a recomputation stops as soon as it has
    what the backward pass needs, so a forward hook would not see it)."""
    calls = [0]
    for m in model.modules():
        if isinstance(m, AlignFuseBlock):
            m.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def _step(model: AlignCR, cloudy: torch.Tensor, sar: torch.Tensor, weight: torch.Tensor
          ) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
    model.zero_grad(set_to_none=True)
    out = model(cloudy, sar if model.spec.uses_sar else None)
    (out * weight).sum().backward()
    return out.detach(), {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("name", NAMES)
def test_outputs_and_every_gradient_are_the_same(name: str) -> None:
    plain, ckpt = _pair(name)
    calls = _block_calls(ckpt)
    cloudy, sar, weight = _inputs()
    out_a, grads_a = _step(plain.train(), cloudy, sar, weight)
    out_b, grads_b = _step(ckpt.train(), cloudy, sar, weight)
    # every block ran twice: once forward, once recomputed in the backward pass
    assert calls[0] == 2 * len(ckpt.blocks)
    torch.testing.assert_close(out_b, out_a, **TOL)
    assert grads_a.keys() == grads_b.keys()
    for key, ga in grads_a.items():
        gb = grads_b[key]
        # the last block's SAR update feeds nothing: no gradient either way; every other parameter has one
        assert (ga is None) == (gb is None), key
        if ga is not None:
            torch.testing.assert_close(gb, ga, **TOL, msg=lambda m, k=key: f"{k}: {m}")
    assert sum(g is not None for g in grads_a.values()) > 0.9 * len(grads_a)


@pytest.mark.parametrize("name", NAMES)
def test_checkpointing_holds_less_for_the_backward_pass(name: str) -> None:
    """Bytes of the tensors autograd keeps outside checkpointed regions (the checkpoint's own hooks take the
    ones saved inside a block, and keep only its inputs)."""
    def held(model: AlignCR) -> int:
        kept: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            kept[storage.data_ptr()] = storage.nbytes()
            return t

        cloudy, sar, _ = _inputs()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.train()(cloudy, sar if model.spec.uses_sar else None)
        return sum(kept.values())

    plain, ckpt = _pair(name)
    assert held(ckpt) < 0.5 * held(plain)


@pytest.mark.parametrize("name", NAMES)
def test_eval_and_no_grad_are_untouched(name: str) -> None:
    plain, ckpt = _pair(name)
    calls = _block_calls(ckpt)
    cloudy, sar, _ = _inputs((32, 32))
    s = sar if plain.spec.uses_sar else None
    with torch.no_grad():
        assert torch.equal(ckpt.eval()(cloudy, s), plain.eval()(cloudy, s))
        assert torch.equal(ckpt.train()(cloudy, s), plain.train()(cloudy, s))  # training mode, no gradients
    assert calls[0] == 2 * len(ckpt.blocks)  # once per block and call: nothing recomputed
    out = ckpt.eval()(cloudy, s)  # eval with gradients on: not checkpointed either
    out.sum().backward()
    assert calls[0] == 3 * len(ckpt.blocks)


def test_randomness_inside_a_block_is_recomputed_identically() -> None:
    """Align-CR has no dropout or stochastic depth; should a block get some, the recomputation must draw the
    same random numbers (the non-reentrant checkpoint restores the RNG state)."""
    from timm.layers import DropPath

    plain, ckpt = _pair("aligncr")
    assert not any(isinstance(m, DropPath) or isinstance(m, torch.nn.Dropout) and m.p > 0 for m in plain.modules())
    for model in (plain, ckpt):
        for block in model.blocks:
            block.rdb.swin.drop_path = DropPath(0.5)  # stochastic depth on both Swin residual branches
    cloudy, sar, weight = _inputs()
    torch.manual_seed(5)
    out_a, grads_a = _step(plain.train(), cloudy, sar, weight)
    torch.manual_seed(5)
    out_b, grads_b = _step(ckpt.train(), cloudy, sar, weight)
    torch.testing.assert_close(out_b, out_a, **TOL)
    for key, ga in grads_a.items():
        if ga is not None:
            torch.testing.assert_close(grads_b[key], ga, **TOL, msg=lambda m, k=key: f"{k}: {m}")
    # and the drop paths did draw: another seed gives another output
    torch.manual_seed(6)
    with torch.no_grad():
        assert not torch.allclose(plain.train()(cloudy, sar), out_a)


def test_state_dict_and_saved_checkpoints_are_interchangeable(tmp_path: Path) -> None:
    plain, ckpt = _pair("aligncr")
    assert list(plain.state_dict()) == list(ckpt.state_dict())
    cloudy, sar, _ = _inputs((32, 32))
    for saved, other in ((plain, True), (ckpt, False)):
        path = save_checkpoint(saved, tmp_path / f"{saved.checkpointing}.ckpt")
        loaded = load_model(path)
        assert loaded.config["checkpointing"] is saved.checkpointing and not loaded.training
        # the weights load into a model built with the other setting
        twin = create_model("aligncr", **{**loaded.config, "checkpointing": other})
        twin.load_state_dict(loaded.state_dict())
        with torch.no_grad():
            assert torch.equal(twin.eval()(cloudy, sar), plain.eval()(cloudy, sar))


def test_the_option_is_checked_by_the_registry() -> None:
    from m3rcr.training.config import ConfigError, load_config
    from m3rcr.utils.registry import RegistryError

    for name in NAMES:
        MODELS.check(name, {"checkpointing": True})
    with pytest.raises(RegistryError, match="checkpointing"):
        MODELS.check("aligncr", {"checkpoint": True})
    cfg = load_config(None, ["model.config.checkpointing=true"])
    assert cfg["model"]["config"] == {"checkpointing": True}
    with pytest.raises(ConfigError, match="checkpointing"):
        load_config(None, ["model.config.checkpoint=true"])


TINY_RUN = ("{features: 8, growth: 4, convs_per_block: 2, blocks: 2, num_heads: 2, war_blocks: 1, "
            "head_channels: 16, deformable_groups: 2, checkpointing: %s}")


def _run_args(root: Path, run: Path, checkpointing: bool, *extra: str) -> list[str]:
    """A tiny training run (the settings of tests/test_training.py), with or without checkpointing."""
    return [f"data.root={root}", f"model.config={TINY_RUN % str(checkpointing).lower()}", "data.batch_size=2",
            "data.crop_size=48", "data.eval_crop_size=64", "data.val_fraction=0.3", "data.augment=true",
            "data.num_workers=0", "trainer.accelerator=cpu", "trainer.max_epochs=2", "trainer.log_every_n_steps=1",
            "trainer.enable_model_summary=false", "run.progress_bar=false", f"run.dir={run}", "optim.lr=0.002",
            "optim.align_lr=0.0002", "schedule.constant_epochs=1", "schedule.step_epochs=1", *extra]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_training_with_checkpointing_resumes_exactly(synth_root: Path, tmp_path: Path) -> None:
    """Two epochs straight, one plus a resumed one, and two without checkpointing: the same weights."""
    from m3rcr.training.config import load_config
    from m3rcr.training.run import train

    def weights(run: Path) -> dict[str, torch.Tensor]:
        return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]

    straight, split, plain = tmp_path / "straight", tmp_path / "split", tmp_path / "plain"
    train(load_config(None, _run_args(synth_root, straight, True)))
    train(load_config(None, _run_args(synth_root, split, True, "trainer.max_epochs=1")))
    train(resume=split, overrides=["trainer.max_epochs=2"])
    train(load_config(None, _run_args(synth_root, plain, False)))
    saved = torch.load(split / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["config"]["checkpointing"] is True and saved["meta"]["epoch"] == 1
    a, b, c = weights(straight), weights(split), weights(plain)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # resumed exactly
    for k in a:  # and trained as without checkpointing (to rounding)
        torch.testing.assert_close(a[k], c[k], atol=1e-5, rtol=1e-4)
