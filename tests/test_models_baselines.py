"""The five baselines: sizes, any input size, training steps, checkpoints, and train -> evaluate for
every registered model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from paths import CONFIGS, REPO
from reference_figures import reference
from tiny_models import TINY
from torch.utils.data import DataLoader

from m3rcr.cli import main
from m3rcr.evaluation.complexity import count_macs, count_parameters
from m3rcr.models import create_model, list_models, load_model, save_checkpoint
from m3rcr.models.blocks import DynamicFilterFusion, SwinBlock, WindowAttention
from m3rcr.models.discriminators import DISCRIMINATORS

GANS = {"mcgan": "two_stream", "spagan": "two_stream", "saroptcgan": "patchgan"}


def tiny(name: str) -> torch.nn.Module:
    return create_model(name, **TINY[name])


def test_every_model_is_registered() -> None:
    assert set(list_models()) == set(TINY)


@pytest.mark.parametrize("name", ["dsen2cr", "glfcr", "mcgan", "spagan", "saroptcgan"])
def test_parameter_counts_at_the_m3rcr_setting(name: str) -> None:
    assert count_parameters(create_model(name)) == reference(name, "parameters")


def test_discriminator_parameter_counts() -> None:
    two_stream = DISCRIMINATORS.build("two_stream", condition_channels=4, image_channels=4)
    assert count_parameters(two_stream) == reference("two_stream", "parameters")
    patchgan = DISCRIMINATORS.build("patchgan", condition_channels=6, image_channels=4)
    assert count_parameters(patchgan) == reference("patchgan", "parameters")
    d = DISCRIMINATORS.build("two_stream")
    assert d(torch.rand(1, 4, 160, 160), torch.rand(1, 4, 160, 160)).shape == (1, 1, 10, 10)
    p = DISCRIMINATORS.build("patchgan")
    assert p(torch.rand(1, 6, 160, 160), torch.rand(1, 4, 160, 160)).shape == (1, 1, 18, 18)


@pytest.mark.parametrize("name", ["dsen2cr", "glfcr"])
def test_macs_at_160(name: str) -> None:
    # every operation of these two scales with the pixel count: 160 px = 25 x 32 px
    macs = 25 * count_macs(create_model(name).eval(), torch.rand(1, 4, 32, 32), torch.rand(1, 2, 32, 32))
    assert macs / 1e9 == reference(name, "macs_160")


def test_glfcr_shares_align_crs_modules() -> None:
    model = tiny("glfcr")
    kinds = {type(m) for m in model.modules()}
    assert {WindowAttention, SwinBlock, DynamicFilterFusion} <= kinds
    swin = next(m for m in model.modules() if isinstance(m, SwinBlock))
    assert isinstance(swin.norm1, torch.nn.Identity) and swin.attn.sar  # no pre-norm, SAR-guided logits
    shifts = [m.shift for m in model.modules() if isinstance(m, SwinBlock)]
    assert shifts == [0, 4, 0, 4]  # odd dense layers shifted


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("shape", [(1, 50, 70), (2, 33, 17)])
def test_any_input_size(name: str, shape: tuple[int, int, int]) -> None:
    b, h, w = shape
    model = tiny(name).eval()
    with torch.no_grad():
        out = model(torch.rand(b, 4, h, w), torch.rand(b, 2, h, w))
    assert out.shape == (b, 4, h, w) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["mcgan", "saroptcgan"])
def test_gan_inference_is_per_image_and_deterministic(name: str) -> None:
    """Per-image normalisation at inference: an image's output does not depend on its batch mates."""
    model = tiny(name).eval()
    x, s = torch.rand(3, 4, 40, 40), torch.rand(3, 2, 40, 40)
    with torch.no_grad():
        batch = model(x, s)
        alone = model(x[1:2], s[1:2])
        torch.testing.assert_close(batch[1:2], alone, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(x, s), batch)  # no dropout at inference


def test_spagan_unused_parameters_never_matter() -> None:
    model = tiny("spagan")
    x = torch.rand(1, 4, 24, 24)
    out, attention = model.forward_with_attention(x)
    assert attention.shape == (1, 1, 24, 24) and 0 <= attention.min().item() and attention.max().item() <= 1
    out.mean().backward()
    unused = {n for n, p in model.named_parameters() if p.grad is None}
    assert unused and all("direction_attention" in n or "unused_conv" in n for n in unused)
    lean = create_model("spagan", keep_unused=False)
    n_unused = count_parameters(create_model("spagan")) - count_parameters(lean)
    assert n_unused == reference("spagan", "unused_parameters")


@pytest.mark.parametrize("name", sorted(TINY))
def test_checkpoint_round_trip(name: str, tmp_path: Path) -> None:
    model = tiny(name).eval()
    loaded = load_model(save_checkpoint(model, tmp_path / "m.ckpt"))
    x, s = torch.rand(2, 4, 32, 48), torch.rand(2, 2, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, s), model(x, s))


def _batches(root: Path, n: int = 2) -> list[dict]:
    from m3rcr.data import M3RCRDataset, Sampling

    ds = M3RCRDataset(root, "train", sampling=Sampling(crop_size=48, crop="center"))
    return [next(iter(DataLoader(ds, batch_size=n)))]


@pytest.mark.parametrize("name", ["dsen2cr", "glfcr"])
def test_a_few_steps_lower_the_loss(name: str, synth_root: Path) -> None:
    from m3rcr.training.losses import LOSSES

    torch.manual_seed(0)
    model = tiny(name)
    loss_fn = LOSSES.build("carl" if name == "dsen2cr" else "l1")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    (b,) = _batches(synth_root)
    losses = []
    for _ in range(8):
        loss = loss_fn(model(b["cloudy"], b["sar"]), b["cloudfree"], b["cloudmask"], b["cloudy"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", sorted(GANS))
def test_gan_steps_update_both_networks_and_lower_the_reconstruction_loss(name: str, synth_root: Path) -> None:
    import lightning as L

    from m3rcr.training.module import GANModule
    from m3rcr.training.settings import Component, GANConfig, OptimConfig

    torch.manual_seed(0)
    gan = GANConfig(GANS[name], {"base_channels": 4}, attention_weight=1.0 if name == "spagan" else 0.0, d_lr=1e-3)
    module = GANModule(Component(name, TINY[name]), Component("l1"), gan, OptimConfig(lr=1e-3, betas=(0.5, 0.999)))
    g0 = {k: v.clone() for k, v in module.net.state_dict().items()}
    d0 = {k: v.clone() for k, v in module.disc.state_dict().items()}
    batches = _batches(synth_root) * 12

    def l1() -> float:
        module.net.eval()
        with torch.no_grad():
            out = module.net(batches[0]["cloudy"], batches[0]["sar"])
        return float((out - batches[0]["cloudfree"]).abs().mean())

    before = l1()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    assert any(not torch.equal(g0[k], v) for k, v in module.net.state_dict().items())
    assert any(not torch.equal(d0[k], v) for k, v in module.disc.state_dict().items())
    assert l1() < before


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", sorted(TINY))
def test_train_then_evaluate_every_registered_model(name: str, synth_root: Path, tmp_path: Path) -> None:
    config = str(CONFIGS / f"{name}.yaml")
    model_cfg = "{" + ", ".join(f"{k}: {v}" for k, v in TINY[name].items()) + "}"
    args = ["train", "--config", config, f"data.root={synth_root}", f"model.config={model_cfg}", "data.batch_size=2",
            "data.crop_size=48", "data.eval_crop_size=64", "data.val_fraction=0.3", "data.num_workers=0",
            "trainer.max_epochs=1", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.limit_train_batches=2",
            "trainer.check_val_every_n_epoch=1", "trainer.enable_model_summary=false", "run.progress_bar=false",
            "--out", str(tmp_path / "run")]
    if name in GANS:
        args.append("gan.discriminator_config={base_channels: 4}")
    assert main(args) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(synth_root), "--split", "test", "--crop", "96",
                 "--out", str(tmp_path / "eval"), "--device", "cpu", "--quiet"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["model"] == name and metrics["images"] == 5
    overall = metrics["overall"]
    assert 0 <= overall["mae"] < 1 and 0 < overall["psnr"] < 100 and -1 <= overall["ssim"] <= 1, overall
    assert 0 <= overall["sam"] <= 180, overall  # degrees


def _gan_args(root: Path, run: Path, name: str, *extra: str) -> list[str]:
    model_cfg = "{" + ", ".join(f"{k}: {v}" for k, v in TINY[name].items()) + "}"
    return [f"data.root={root}", f"model.config={model_cfg}", "gan.discriminator_config={base_channels: 4}",
            "data.batch_size=2", "data.crop_size=48", "data.eval_crop_size=64", "data.val_fraction=0.3",
            "data.augment=true", "data.num_workers=0", "trainer.accelerator=cpu", "trainer.devices=1",
            "trainer.check_val_every_n_epoch=1", "trainer.enable_model_summary=false", "run.progress_bar=false",
            "schedule.kind=linear", "schedule.constant_epochs=1", "schedule.decay_epochs=2", f"run.dir={run}", *extra]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_gan_resume_is_exact(synth_root: Path, tmp_path: Path) -> None:
    from m3rcr.training.config import load_config
    from m3rcr.training.run import train

    straight, split = tmp_path / "a", tmp_path / "b"
    train(load_config(str(CONFIGS / "spagan.yaml"), _gan_args(synth_root, straight, "spagan", "trainer.max_epochs=2")))
    train(load_config(str(CONFIGS / "spagan.yaml"), _gan_args(synth_root, split, "spagan", "trainer.max_epochs=1")))
    train(resume=split, overrides=["trainer.max_epochs=2"])
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(split / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa = torch.load(straight / "state" / "last.ckpt", weights_only=True)
    sb = torch.load(split / "state" / "last.ckpt", weights_only=True)
    da = {k: v for k, v in sa["state_dict"].items() if k.startswith("disc.")}
    assert da and all(torch.equal(v, sb["state_dict"][k]) for k, v in da.items())  # the discriminator too


@pytest.mark.filterwarnings("ignore::UserWarning")
# glfcr.yaml loads with data.num_workers 4
@pytest.mark.parametrize("name", ["saroptcgan", pytest.param("glfcr", marks=pytest.mark.multiprocess)])
def test_bf16_mixed_precision_on_cpu(name: str, synth_root: Path, tmp_path: Path) -> None:
    from m3rcr.training.config import load_config
    from m3rcr.training.run import train

    extra = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.precision=bf16-mixed"]
    if name in GANS:
        args = _gan_args(synth_root, tmp_path / "r", name, *extra)
    else:
        args = [f"data.root={synth_root}", "model.config={" + ", ".join(f"{k}: {v}" for k, v in TINY[name].items()) + "}",
                "data.batch_size=2", "data.crop_size=48", "data.eval_crop_size=64", "data.val_fraction=0.3",
                "trainer.accelerator=cpu", "trainer.devices=1", "run.progress_bar=false", f"run.dir={tmp_path / 'r'}",
                *extra]
    run = train(load_config(str(CONFIGS / f"{name}.yaml"), args))
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.slow
@pytest.mark.multiprocess
def test_gan_two_process_ddp_on_cpu(synth_root: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    run = tmp_path / "ddp"
    args = _gan_args(synth_root, run, "saroptcgan", "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_epochs=1",
                     "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "data.batch_size=4")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "m3rcr", "train", "--config", str(CONFIGS / "saroptcgan.yaml"), *args],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    from m3rcr.training.callbacks import SaveTrainingState

    state = torch.load(run / "state" / "last.ckpt", weights_only=True)
    assert state[SaveTrainingState.PROCESSES_KEY] == 2  # two processes trained the saved state


def test_direction_shift_by_hand() -> None:
    from m3rcr.models.spagan import DirectionShift

    shift = DirectionShift(1)
    for conv, (w, b) in zip((shift.up, shift.right, shift.down, shift.left), ((2.0, 1.0), (3.0, 0.0), (-1.0, 0.5),
                                                                                (1.0, -4.0))):
        torch.nn.init.constant_(conv.weight, w)
        torch.nn.init.constant_(conv.bias, b)
    f = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    up, right, down, left = shift(f)[0]
    relu = lambda v: max(v, 0.0)
    # up: row 0 copied, row 1 = relu(2 * f[row 0] + 1 + f[row 1])
    assert up.tolist() == [[1.0, 2.0], [relu(2 * 1 + 1 + 3), relu(2 * 2 + 1 + 4)]]
    # right: last column copied, column 0 = relu(3 * f[col 1] + 0 + f[col 0])
    assert right.tolist() == [[relu(3 * 2 + 1), 2.0], [relu(3 * 4 + 3), 4.0]]
    # down: last row copied, row 0 = relu(-1 * f[row 1] + 0.5 + f[row 0])
    assert down.tolist() == [[relu(-3 + 0.5 + 1), relu(-4 + 0.5 + 2)], [3.0, 4.0]]
    # left: column 0 copied, column 1 = relu(1 * f[col 0] - 4 + f[col 1])
    assert left.tolist() == [[1.0, relu(1 - 4 + 2)], [3.0, relu(3 - 4 + 4)]]


def test_spagan_returns_the_last_attention_map_of_its_shared_module() -> None:
    model = create_model("spagan", channels=8, init_std=0.3).eval()  # large weights: the 4 maps differ visibly
    maps = []
    model.attention.register_forward_hook(lambda m, i, o: maps.append(o))
    with torch.no_grad():
        _, attention = model.forward_with_attention(torch.rand(1, 4, 20, 20))
    assert len(maps) == 4 and torch.equal(attention, maps[-1]) and not torch.equal(maps[0], maps[-1])


def test_dsen2cr_wiring() -> None:
    model = tiny("dsen2cr").eval()
    x, s = torch.rand(1, 4, 12, 10), torch.rand(1, 2, 12, 10)
    with torch.no_grad():
        y = torch.relu(model.head(torch.cat([x, s], 1)))  # optical first, then SAR
        for block in model.body:  # x + 0.1 * (conv, ReLU, conv)(x)
            y = y + 0.1 * block.body[2](torch.relu(block.body[0](y)))
        torch.testing.assert_close(model(x, s), x + model.tail(y))


def test_glfcr_wiring() -> None:
    """f1 = conv5x5 without activation feeds the global residual; blocks then fusion; output + cloudy."""
    import torch.nn.functional as F

    model = tiny("glfcr").eval()
    x, s = torch.rand(1, 4, 32, 48), torch.rand(1, 2, 32, 48)
    with torch.no_grad():
        f1 = model.conv1(F.pixel_unshuffle(x, 2))
        o, a = model.conv2(f1), model.conv2_sar(model.conv1_sar(F.pixel_unshuffle(s, 2)))
        outs = []
        for block, fusion in zip(model.blocks, model.fusions):
            o, a = fusion(*block(o, a))
            outs.append(o)
        expected = x + model.head(model.gff(torch.cat(outs, 1)) + f1)
        torch.testing.assert_close(model(x, s), expected)
    rates = [m.drop_path.drop_prob for m in model.modules() if isinstance(m, SwinBlock)
             and hasattr(m.drop_path, "drop_prob")]
    assert rates == sorted(rates) and rates[-1] == pytest.approx(0.2)  # rising with depth, up to 0.2
    assert model.blocks[0].layers[1].swin._shift_for(8, 8) == 0  # one window: no shift (reference rule)
    assert model.blocks[0].layers[1].swin._shift_for(16, 8) == 0 and model.blocks[0].layers[1].swin._shift_for(16, 16) == 4


def test_mcgan_wiring() -> None:
    """Decoder stage k takes cat(previous decoder output, encoder skip) - decoder first; dropout in D0-D2."""
    model = tiny("mcgan").eval()
    x = torch.rand(1, 4, 256, 256)
    with torch.no_grad():
        e = [model.enc0(x)]
        for layer in model.enc:
            e.append(layer(e[-1]))
        y = model.dec[0](e[7])
        for k in range(1, 7):
            y = model.dec[k](torch.cat([y, e[7 - k]], 1))
        expected = model.out(torch.cat([y, e[0]], 1))
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)
    drop = [any(isinstance(m, torch.nn.Dropout) for m in stage) for stage in model.dec]
    assert drop == [True, True, True, False, False, False, False]


@pytest.mark.parametrize("depth,dropouts", [(8, 3), (7, 2), (9, 4)])
def test_saroptcgan_wiring_and_dropout(depth: int, dropouts: int) -> None:
    model = create_model("saroptcgan", base_channels=4, depth=depth).eval()
    stages = [any(isinstance(m, torch.nn.Dropout) for m in up) for up in model.up]
    assert stages == [False] + [True] * dropouts + [False] * (len(stages) - 1 - dropouts)
    x, s = torch.rand(1, 4, 2**depth, 2**depth), torch.rand(1, 2, 2**depth, 2**depth)
    with torch.no_grad():
        d = [2 * torch.cat([x, s], 1) - 1]
        for layer in model.down:
            d.append(layer(d[-1]))
        y = d[-1]
        for k, layer in enumerate(model.up):
            y = torch.cat([d[-2 - k], layer(y)], 1)  # the block's input first, then its output
        torch.testing.assert_close(model(x, s), (model.outer(y) + 1) / 2, atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_gan_clipping_sees_unscaled_gradients_under_fp16(synth_root: Path) -> None:
    import lightning as L
    from lightning.pytorch.plugins import MixedPrecision

    from m3rcr.training.module import GANModule
    from m3rcr.training.settings import Component, GANConfig, OptimConfig

    torch.manual_seed(0)
    module = GANModule(Component("spagan", TINY["spagan"]), Component("l1"), GANConfig("two_stream", {"base_channels": 4}),
                       OptimConfig(lr=2e-4, betas=(0.5, 0.999)), gradient_clip_val=1e9)
    norms: list[float] = []
    original = module.clip_gradients

    def record(opt, gradient_clip_val=None, gradient_clip_algorithm=None):
        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.norm(torch.stack([p.grad.float().norm() for p in params]))))
        return original(opt, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm)

    module.clip_gradients = record
    plugin = MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu", init_scale=2.0**15))
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, plugins=[plugin])
    trainer.fit(module, train_dataloaders=DataLoader(_batches(synth_root), batch_size=None))
    assert norms and max(norms) < 1e3  # scaled by 2^15 they would be ~1e5 or more
