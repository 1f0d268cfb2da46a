"""The one registry class, the model contract, and configurations checked against constructor signatures."""

from __future__ import annotations

import pytest
import torch
from paths import CONFIGS
from tiny_models import TINY
from torch import nn

from m3rcr.models import MODELS, CloudRemovalModel, ConfiguredModule, ModelSpec, load_model, save_checkpoint
from m3rcr.training.losses import LOSSES
from m3rcr.utils.registry import Registry, RegistryError


class Scale(nn.Module):
    def __init__(self, factor: float = 2.0, bias: bool = False) -> None:
        super().__init__()
        self.factor, self.bias = factor, bias


def _registry() -> Registry[nn.Module]:
    reg: Registry[nn.Module] = Registry("widget")
    reg.register("scale", Scale)
    reg.register("double_biased", Scale, bias=True)
    return reg


def test_build_applies_defaults_fixed_arguments_and_names_the_object() -> None:
    reg = _registry()
    assert reg.names() == ["double_biased", "scale"] and "scale" in reg and "nope" not in reg
    obj = reg.build("scale", factor=3.0)
    assert obj.factor == 3.0 and obj.bias is False and obj.registry_name == "scale"
    assert reg.build("double_biased").bias is True
    assert reg.build("double_biased", bias=True).bias is True  # the fixed value itself is no clash
    assert reg.defaults("double_biased") == {"factor": 2.0, "bias": True}


def test_decorator_form_registers_the_class_unchanged() -> None:
    reg: Registry[nn.Module] = Registry("widget")

    @reg.register("plain")
    class Plain(nn.Module):
        pass

    assert isinstance(reg.build("plain"), Plain) and reg.entry("plain").target is Plain


def test_unknown_name_says_the_close_one() -> None:
    with pytest.raises(RegistryError, match=r"unknown widget 'scael' \(did you mean 'scale'\?\); known: "):
        _registry().build("scael")


def test_unknown_option_says_the_close_one_and_lists_the_options() -> None:
    with pytest.raises(RegistryError, match=r"widget 'scale' has no option 'factr' \(did you mean 'factor'\?\); "
                                            r"options: bias, factor"):
        _registry().build("scale", factr=1.0)


def test_a_value_against_what_the_name_fixes_is_refused() -> None:
    with pytest.raises(RegistryError, match="widget 'double_biased' fixes bias=True"):
        _registry().build("double_biased", bias=False)
    with pytest.raises(ValueError, match="fixes use_sar=False"):  # a RegistryError is a ValueError
        MODELS.build("aligncr_wo_sar", use_sar=True)


def test_a_name_is_registered_once() -> None:
    reg = _registry()
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("scale", Scale)


def test_a_fixed_argument_the_constructor_lacks_is_refused_at_registration() -> None:
    with pytest.raises(RegistryError, match="widget 'typo' fixes biass, which its constructor does not take"):
        _registry().register("typo", Scale, biass=True)


def test_a_class_without_its_own_init_takes_no_options() -> None:
    """nn.Module's ``*args, **kwargs`` must not let any option through (the l1 and l2 losses)."""
    reg: Registry[nn.Module] = Registry("widget")
    reg.register("bare", type("Bare", (nn.Module,), {}))
    with pytest.raises(RegistryError, match="widget 'bare' has no option 'weight'; options: none"):
        reg.check("bare", {"weight": 2})
    with pytest.raises(ValueError, match="loss 'l1' has no option 'weight'"):
        LOSSES.check("l1", {"weight": 2})


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_model_follows_the_contract(name: str) -> None:
    model = MODELS.build(name, **TINY[name]).eval()
    assert isinstance(model, CloudRemovalModel) and isinstance(model.spec, ModelSpec)
    spec = model.spec
    assert spec.uses_sar == (spec.sar_bands > 0) and spec.size_multiple >= 1
    assert spec.uses_sar == (name not in ("mcgan", "spagan", "aligncr_wo_sar"))
    # config: every constructor argument, defaults included, enough to rebuild the same network
    assert set(model.config) == set(MODELS.entry(name).parameters()) | set(MODELS.entry(name).fixed)
    again = MODELS.build(name, **model.config)
    assert again.spec == spec and again.config == model.config
    cloudy = torch.rand(1, spec.optical_in, 20, 28)
    sar = torch.rand(1, spec.sar_bands, 20, 28) if spec.uses_sar else None
    with torch.no_grad():
        assert model(cloudy, sar).shape == (1, spec.optical_out, 20, 28)
    # any model can be a conditional-GAN generator: the condition is what it reads
    assert model.condition(cloudy, sar).shape == (1, spec.input_bands, 20, 28)


def test_config_is_recorded_by_the_base_class_for_subclasses() -> None:
    class Net(CloudRemovalModel):
        def __init__(self, bands: int = 3, *, width: int = 8, **extra: int) -> None:
            super().__init__()
            self.spec = ModelSpec(bands, bands)

    assert Net(5, width=2, depth=4).config == {"bands": 5, "width": 2, "depth": 4}

    class Wider(Net):
        def __init__(self, width: int = 16) -> None:
            super().__init__(width=width)

    assert Wider().config == {"width": 16}  # the class built, not its parent, has the last word

    class Loaded(ConfiguredModule):
        unrecorded = ("weights",)

        def __init__(self, size: int = 1, weights: str | None = None) -> None:
            super().__init__()

    assert Loaded(2, weights="w.pth").config == {"size": 2, "weights": None}


def test_checkpoints_rebuild_the_model_from_its_name_and_config(tmp_path) -> None:
    model = MODELS.build("aligncr_wo_sar", **TINY["aligncr"])
    loaded = load_model(save_checkpoint(model, tmp_path / "m.ckpt"))
    assert loaded.registry_name == "aligncr_wo_sar" and loaded.config == model.config and loaded.spec == model.spec
    with pytest.raises(ValueError, match="only models made from a registry"):
        save_checkpoint(CloudRemovalModel(), tmp_path / "x.ckpt")


def test_the_shipped_demo_checkpoint_still_loads() -> None:
    demo = CONFIGS.parent / "models" / "demo" / "aligncr_demo.ckpt"
    if not demo.is_file():
        pytest.skip(f"{demo} is not in this checkout")
    model = load_model(demo)
    assert model.registry_name == "aligncr" and model.spec == ModelSpec(4, 4, 2, 16)


def test_complexity_reads_the_contract() -> None:
    from m3rcr.evaluation.complexity import measure

    optical_only = measure(MODELS.build("mcgan", **TINY["mcgan"]), "mcgan", size=(40, 40), repeats=0)
    assert optical_only.padded_size == [128, 128]  # McGAN pads to a multiple of 128
    assert measure(MODELS.build("dsen2cr", **TINY["dsen2cr"]), "d", size=(40, 40), repeats=0).padded_size is None


def test_model_uses_sar_reads_the_spec() -> None:
    from m3rcr.inference.predict import model_uses_sar

    assert model_uses_sar(MODELS.build("dsen2cr", **TINY["dsen2cr"]))
    assert not model_uses_sar(MODELS.build("dsen2cr", **TINY["dsen2cr"], use_sar=False))
    assert model_uses_sar(nn.Identity())  # any other module is given the SAR


# configurations


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_configuration_loads(path) -> None:
    import yaml

    from m3rcr.training.config import load_config, parse_config

    if "methods" in yaml.safe_load(path.read_text()):  # a benchmark: its own loader, and its methods' files
        from m3rcr.benchmark import load_benchmark_config

        load_benchmark_config(path)
        return
    parsed = parse_config(load_config(path))
    assert parsed.model.name in MODELS or parsed.task == "segmentation"


@pytest.mark.parametrize("override,message", [
    ("model.features=32", "constructor arguments go under model.config: write model.config.features"),
    ("model.name=alingcr", r"model.name 'alingcr' is not a model \(did you mean 'aligncr'\?\)"),
    ("model.config={featurs: 8}", r"model 'aligncr' has no option 'featurs' \(did you mean 'features'\?\)"),
    ("model.config={use_sar: false}", None),
    ("optimizer.lr=1", r"unknown section\(s\) \['optimizer' \(did you mean 'optim'\?\)\]"),
    ("optim.learning_rate=1", r"unknown key\(s\) \['learning_rate'\] in 'optim'"),
    ("optim.betas=[0.9]", "optim.betas must be a list"),
    ("optim.lr=true", "optim.lr must be a number"),
    ("schedule.kind=cosine", "schedule.kind must be 'step' or 'linear' or 'constant'"),
    ("schedule.decay_epoch=3", r"did you mean 'decay_epochs'"),
    ("trainer.enable_progress_bar=false", "set run.progress_bar"),
    ("trainer.precision=33", "trainer.precision must be"),
    ("gan={discriminator: patchgn}", "gan.discriminator 'patchgn' is not a discriminator"),
    ("gan={d_lr: 0.1}", "gan.discriminator is required"),
    ("gan={discriminator: patchgan, discriminator_config: {layer: 2}}", "did you mean 'layers'"),
    ("data.seed=3", "set seed instead"),
])
def test_configuration_errors_name_the_right_spelling(override: str, message: str | None) -> None:
    from m3rcr.training.config import ConfigError, load_config

    if message is None:
        load_config(CONFIGS / "aligncr.yaml", [override])
        return
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "aligncr.yaml", [override])


def test_schedule_defaults_have_one_home() -> None:
    from m3rcr.training.config import defaults
    from m3rcr.training.settings import ScheduleConfig

    assert defaults()["schedule"] == {"kind": "step", "constant_epochs": 10, "step_epochs": 5, "gamma": 0.5,
                                      "decay_epochs": 0}
    assert [ScheduleConfig().factor(e) for e in (9, 10, 15)] == [1.0, 0.5, 0.25]
