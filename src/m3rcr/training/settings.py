"""The typed sections of a training configuration. Their fields, with their defaults, are the only list of
what a section may set: :mod:`m3rcr.training.config` checks a YAML section against them, and the
LightningModules of :mod:`m3rcr.training.module` take them as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ScheduleKind = Literal["step", "linear", "constant"]


def step_decay(epoch: int, constant_epochs: int, step_epochs: int, gamma: float) -> float:
    """Learning-rate factor: 1 for the first ``constant_epochs``, then x ``gamma`` every ``step_epochs``.

    The paper: 1e-4 for epochs 0-9, 5e-5 for 10-14, 2.5e-5 for 15-19, ...
    """
    if epoch < constant_epochs:
        return 1.0
    return gamma ** ((epoch - constant_epochs) // step_epochs + 1)


@dataclass(frozen=True)
class Component:
    """A registered class by name and its constructor arguments (the ``model`` and ``loss`` sections); the
    arguments not given take the constructor's defaults."""

    name: str
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OptimConfig:
    """Adam: ``lr`` for the network, ``align_lr`` for the alignment blocks (None: ``lr``), as in the paper."""

    lr: float = 1e-4
    align_lr: float | None = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate factor per epoch (0-based), stepped every epoch.

    ``step``: :func:`step_decay`. ``linear``: pix2pix's policy, constant for ``constant_epochs`` then
    linearly towards 0 over ``decay_epochs``. ``constant``: always 1.
    """

    kind: ScheduleKind = "step"
    constant_epochs: int = 10
    step_epochs: int = 5
    gamma: float = 0.5
    decay_epochs: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("step", "linear", "constant"):
            raise ValueError(f"schedule kind must be 'step', 'linear' or 'constant', got {self.kind!r}")
        if self.kind == "linear" and self.decay_epochs < 1:
            raise ValueError("a linear schedule needs decay_epochs >= 1")
        if self.kind == "step" and self.step_epochs < 1:
            raise ValueError("a step schedule needs step_epochs >= 1")

    def factor(self, epoch: int) -> float:
        """The factor of the learning rate in ``epoch``."""
        if self.kind == "constant":
            return 1.0
        if self.kind == "step":
            return step_decay(epoch, self.constant_epochs, self.step_epochs, self.gamma)
        # pix2pix's rule, held at 0 after the decay (pix2pix simply stops there)
        return max(0.0, 1.0 - max(0, epoch + 1 - self.constant_epochs) / float(self.decay_epochs + 1))


@dataclass(frozen=True)
class GANConfig:
    """Conditional-GAN training (the GAN baselines): the discriminator by name and its arguments, the weights
    of the generator's terms, the discriminator's loss factor (1 for McGAN / SpA-GAN, 0.5 for pix2pix) and
    learning rate (None: the generator's)."""

    discriminator: str
    discriminator_config: dict[str, Any] = field(default_factory=dict)
    adversarial_weight: float = 1.0
    reconstruction_weight: float = 100.0
    attention_weight: float = 0.0
    d_loss_scale: float = 1.0
    d_lr: float | None = None


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    patience: int = 5
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise ValueError(f"patience must be a whole number >= 1, got {self.patience!r}")
        if self.min_delta < 0:
            raise ValueError(f"min_delta must be a number >= 0, got {self.min_delta!r}")
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")


@dataclass(frozen=True)
class RunConfig:
    """The run folder, state saving, progress display and early stopping (None: train for all epochs).

    ``progress_bar``: a bar on a terminal and plain lines (each epoch, and every minute) when the output goes
    to a file; False shows neither.
    """

    dir: str = "runs/aligncr"
    checkpoint_every_n_steps: int | None = None
    progress_bar: bool = True
    early_stopping: EarlyStoppingConfig | None = None


def _trainer_defaults() -> dict[str, Any]:
    # only where m3rcr departs from lightning.Trainer's own defaults, which fill in the rest
    return {"max_epochs": 30, "devices": 1}


@dataclass(frozen=True)
class TrainConfig:
    """A whole experiment. ``data`` and ``trainer`` stay mappings: :class:`m3rcr.data.DataOptions` and
    ``lightning.Trainer`` define (and check) their keys and defaults."""

    seed: int = 0
    task: Literal["cloud_removal", "segmentation"] = "cloud_removal"
    model: Component = field(default_factory=lambda: Component("aligncr"))
    loss: Component = field(default_factory=lambda: Component("cloud_charbonnier"))
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    gan: GANConfig | None = None
    data: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=_trainer_defaults)
    run: RunConfig = field(default_factory=RunConfig)
