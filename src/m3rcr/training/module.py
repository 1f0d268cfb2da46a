"""LightningModules: a reconstruction-loss trainer for any registered network, and a conditional-GAN
trainer (generator + discriminator, their own optimisers) for the GAN baselines."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from m3rcr.evaluation.metrics import mae, psnr
from m3rcr.models import create_model
from m3rcr.models.discriminators import create_discriminator
from m3rcr.training.losses import adversarial_loss, create_loss

SCHEDULE_DEFAULTS: dict[str, Any] = {"kind": "step", "constant_epochs": 10, "step_epochs": 5, "gamma": 0.5,
                                     "decay_epochs": 0}


def step_decay(epoch: int, constant_epochs: int, step_epochs: int, gamma: float) -> float:
    """Learning-rate factor: 1 for the first ``constant_epochs``, then x ``gamma`` every ``step_epochs``.

    The paper: 1e-4 for epochs 0-9, 5e-5 for 10-14, 2.5e-5 for 15-19, ...
    """
    if epoch < constant_epochs:
        return 1.0
    return gamma ** ((epoch - constant_epochs) // step_epochs + 1)


def lr_factor(epoch: int, kind: str = "step", constant_epochs: int = 10, step_epochs: int = 5, gamma: float = 0.5,
              decay_epochs: int = 0) -> float:
    """Learning-rate factor of an epoch (0-based) under a schedule.

    ``step``: :func:`step_decay`. ``linear``: pix2pix's policy, constant for ``constant_epochs`` then
    linearly towards 0 over ``decay_epochs``. ``constant``: always 1.
    """
    if kind == "constant":
        return 1.0
    if kind == "step":
        return step_decay(epoch, constant_epochs, step_epochs, gamma)
    if kind == "linear":
        if decay_epochs < 1:
            raise ValueError("a linear schedule needs decay_epochs >= 1")
        # pix2pix's rule, held at 0 after the decay (pix2pix simply stops there)
        return max(0.0, 1.0 - max(0, epoch + 1 - constant_epochs) / float(decay_epochs + 1))
    raise ValueError(f"schedule kind must be 'step', 'linear' or 'constant', got {kind!r}")


def _scheduler(opt: torch.optim.Optimizer, schedule: dict[str, Any]) -> torch.optim.lr_scheduler.LambdaLR:
    sched = {**SCHEDULE_DEFAULTS, **(schedule or {})}
    lr_factor(0, **sched)  # validate now rather than at the first epoch
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: lr_factor(epoch, **sched))


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``scale * (BCE(real, 1) + BCE(fake, 0))``: McGAN / SpA-GAN use scale 1, pix2pix 0.5."""
    return scale * (adversarial_loss(real_logits, True) + adversarial_loss(fake_logits, False))


def attention_loss(attention: torch.Tensor, cloudmask: torch.Tensor) -> torch.Tensor:
    """SpA-GAN's attention term: MSE between the (B, 1, H, W) attention map and the (B, H, W) cloud mask."""
    return F.mse_loss(attention[:, 0], cloudmask.to(attention.dtype))


def generator_loss(adversarial: torch.Tensor, reconstruction: torch.Tensor, attention: torch.Tensor | None,
                   adversarial_weight: float, reconstruction_weight: float, attention_weight: float) -> torch.Tensor:
    """The generator's objective: weighted adversarial + reconstruction (+ attention) terms."""
    loss = adversarial_weight * adversarial + reconstruction_weight * reconstruction
    return loss + attention_weight * attention if attention is not None else loss


class _ImageToImage(L.LightningModule):
    """What both trainers share: prediction, the reconstruction loss and validation."""

    net: torch.nn.Module
    loss_fn: torch.nn.Module

    def forward(self, cloudy: torch.Tensor, sar: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(cloudy, sar)

    def _predict(self, batch: dict[str, Any]) -> torch.Tensor:
        return self(batch["cloudy"], batch["sar"])

    def _reconstruction(self, pred: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        return self.loss_fn(pred, batch["cloudfree"], batch["cloudmask"], batch["cloudy"])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        pred = self._predict(batch)
        ref = batch["cloudfree"]
        n = len(ref)
        self.log("val/loss", self._reconstruction(pred, batch), on_epoch=True, batch_size=n, sync_dist=True)
        self.log("val/psnr", psnr(pred.float(), ref.float()).mean(), prog_bar=True, on_epoch=True, batch_size=n,
                 sync_dist=True)
        self.log("val/mae", mae(pred.float(), ref.float()).mean(), on_epoch=True, batch_size=n, sync_dist=True)


class CloudRemovalModule(_ImageToImage):
    """Trains ``model`` (a registry name and its configuration) to predict the cloud-free image.

    Args:
        model, model_config: the network (``m3rcr.models.create_model(model, **model_config)``).
        loss, loss_config: the reconstruction loss (``m3rcr.training.losses``).
        lr: Adam learning rate of the network; ``align_lr`` for parameters of alignment modules
            (names containing ``.align.``), as in the paper (1e-4 and 1e-5).
        betas, weight_decay: Adam settings.
        schedule: learning-rate schedule (see :func:`lr_factor`), stepped every epoch.
    """

    def __init__(
        self,
        model: str = "aligncr",
        model_config: dict[str, Any] | None = None,
        loss: str = "cloud_charbonnier",
        loss_config: dict[str, Any] | None = None,
        lr: float = 1e-4,
        align_lr: float | None = 1e-5,
        betas: tuple[float, float] | list[float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        schedule: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = create_model(model, **(model_config or {}))
        self.loss_fn = create_loss(loss, **(loss_config or {}))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self._reconstruction(self._predict(batch), batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["cloudy"]),
                 sync_dist=True)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        align = [p for n, p in self.net.named_parameters() if ".align." in n]
        rest = [p for n, p in self.net.named_parameters() if ".align." not in n]
        groups = [{"params": rest, "lr": hp.lr, "name": "network"}]
        if align:
            groups.append({"params": align, "lr": hp.align_lr if hp.align_lr is not None else hp.lr, "name": "align"})
        opt = torch.optim.Adam(groups, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": _scheduler(opt, hp.schedule), "interval": "epoch"}}


class GANModule(_ImageToImage):
    """Conditional-GAN training of a generator ``model`` against ``discriminator``, with manual optimisation.

    Each step first updates the discriminator on (condition, real) vs (condition, generated) pairs,
    then the generator on ``adversarial_weight * adversarial + reconstruction_weight * loss
    + attention_weight * MSE(attention map, cloud mask)`` (the last only for generators with
    ``forward_with_attention``, i.e. SpA-GAN). The condition is the generator's input
    (``model.condition(cloudy, sar)``).

    Args:
        d_loss_scale: factor of the discriminator loss (1 for McGAN / SpA-GAN, 0.5 for pix2pix).
        d_lr: the discriminator's learning rate (default: ``lr``).
        gradient_clip_val: clip each network's gradient norm (manual optimisation cannot use the Trainer's).
        Others: as :class:`CloudRemovalModule`; ``loss`` is the reconstruction term (L1 in all three GANs).
    """

    def __init__(
        self,
        model: str = "mcgan",
        model_config: dict[str, Any] | None = None,
        loss: str = "l1",
        loss_config: dict[str, Any] | None = None,
        discriminator: str = "two_stream",
        discriminator_config: dict[str, Any] | None = None,
        adversarial_weight: float = 1.0,
        reconstruction_weight: float = 100.0,
        attention_weight: float = 0.0,
        d_loss_scale: float = 1.0,
        lr: float = 2e-4,
        d_lr: float | None = None,
        betas: tuple[float, float] | list[float] = (0.5, 0.999),
        weight_decay: float = 0.0,
        schedule: dict[str, Any] | None = None,
        gradient_clip_val: float | None = None,
        align_lr: float | None = None,  # accepted for a uniform configuration; GANs have no alignment blocks
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.net = create_model(model, **(model_config or {}))
        self.loss_fn = create_loss(loss, **(loss_config or {}))
        cfg = self.net.config
        probe = (torch.zeros(1, cfg.get("in_channels", 4), 1, 1), torch.zeros(1, cfg.get("sar_channels", 2), 1, 1))
        d_config = {"condition_channels": self.net.condition(*probe).shape[1],
                    "image_channels": cfg.get("out_channels", 4), **(discriminator_config or {})}
        self.disc = create_discriminator(discriminator, **d_config)

    def _step(self, opt: Any, loss: torch.Tensor) -> None:
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # runs inside opt.step(), after fp16 gradients have been unscaled: clip the true gradients
        if self.hparams.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.gradient_clip_val,
                                gradient_clip_algorithm="norm")

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        hp = self.hparams
        opt_g, opt_d = self.optimizers()
        cloudy, sar, real = batch["cloudy"], batch["sar"], batch["cloudfree"]
        attention = None
        if hp.attention_weight and hasattr(self.net, "forward_with_attention"):
            fake, attention = self.net.forward_with_attention(cloudy, sar)
        else:
            fake = self.net(cloudy, sar)
        cond = self.net.condition(cloudy, sar)

        self.toggle_optimizer(opt_d)
        loss_d = discriminator_loss(self.disc(cond, real), self.disc(cond, fake.detach()), hp.d_loss_scale)
        self._step(opt_d, loss_d)
        self.untoggle_optimizer(opt_d)

        self.toggle_optimizer(opt_g)
        adv = adversarial_loss(self.disc(cond, fake), True)
        rec = self._reconstruction(fake, batch)
        att = attention_loss(attention, batch["cloudmask"]) if attention is not None else None
        loss_g = generator_loss(adv, rec, att, hp.adversarial_weight, hp.reconstruction_weight, hp.attention_weight)
        if att is not None:
            self.log("train/loss_attention", att, on_step=True, on_epoch=True, batch_size=len(cloudy), sync_dist=True)
        self._step(opt_g, loss_g)
        self.untoggle_optimizer(opt_g)

        n = len(cloudy)
        self.log("train/loss", loss_g, prog_bar=True, on_step=True, on_epoch=True, batch_size=n, sync_dist=True)
        self.log("train/loss_d", loss_d, prog_bar=True, on_step=True, on_epoch=True, batch_size=n, sync_dist=True)
        self.log("train/loss_reconstruction", rec, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        self.log("train/loss_adversarial", adv, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        return loss_g

    def on_train_epoch_end(self) -> None:
        for sched in self.lr_schedulers():  # manual optimisation steps its schedulers itself
            sched.step()

    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[Any]]:
        hp = self.hparams
        opt_g = torch.optim.Adam(self.net.parameters(), lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        opt_d = torch.optim.Adam(self.disc.parameters(), lr=hp.d_lr if hp.d_lr is not None else hp.lr,
                                 betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        return [opt_g, opt_d], [_scheduler(opt_g, hp.schedule), _scheduler(opt_d, hp.schedule)]


class SegmentationModule(L.LightningModule):
    """Trains a land-cover segmentation network on the CLOUD-FREE images (or ``input``) with the level-1
    labels; cross-entropy with the ``unknown`` class (id ``ignore_index``) ignored.

    Validation logs ``val/loss``, and ``val/miou`` / ``val/pa`` (percent) from one confusion matrix
    over the validation set.
    """

    def __init__(self, model: str = "deeplabv3plus", model_config: dict[str, Any] | None = None, lr: float = 1e-4,
                 betas: tuple[float, float] | list[float] = (0.9, 0.999), weight_decay: float = 0.0,
                 schedule: dict[str, Any] | None = None, input: str = "cloudfree", ignore_index: int = 6) -> None:
        super().__init__()
        self.save_hyperparameters()
        from m3rcr.models.segmentation import create_segmentation_model

        self.net = create_segmentation_model(model, **(model_config or {}))
        self.num_classes = self.net.config.get("classes", 6)
        self._val_cm: torch.Tensor | None = None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != self.hparams.ignore_index
        if not valid.any():  # a crop with only unknown land cover: nothing to learn from
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, ignore_index=self.hparams.ignore_index)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self._loss(self(batch[self.hparams.input]), batch["landcover"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["landcover"]),
                 sync_dist=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_cm = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long, device=self.device)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        from m3rcr.evaluation.confusion import confusion_matrix

        logits = self(batch[self.hparams.input])
        target = batch["landcover"]
        self.log("val/loss", self._loss(logits, target), on_epoch=True, batch_size=len(target), sync_dist=True)
        self._val_cm += confusion_matrix(logits.argmax(1), target, self.num_classes, self.hparams.ignore_index)

    def on_validation_epoch_end(self) -> None:
        from m3rcr.evaluation.confusion import miou, pixel_accuracy

        cm = self._val_cm
        if self.trainer.world_size > 1:
            cm = self.all_gather(cm).sum(0)
        for key, value in (("val/miou", miou(cm)), ("val/pa", pixel_accuracy(cm))):
            if value is not None:
                self.log(key, value, prog_bar=key == "val/miou", rank_zero_only=True)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        opt = torch.optim.Adam(self.net.parameters(), lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": _scheduler(opt, hp.schedule), "interval": "epoch"}}
