"""LightningModules: a reconstruction-loss trainer for any registered network, and a conditional-GAN
trainer (generator + discriminator, their own optimisers) for the GAN baselines."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from m3rcr.evaluation.metrics import mae, psnr
from m3rcr.models.base import CloudRemovalModel
from m3rcr.models.discriminators import DISCRIMINATORS
from m3rcr.models.registry import MODELS
from m3rcr.models.segmentation import SEGMENTATION_MODELS
from m3rcr.training.losses import LOSSES, adversarial_loss
from m3rcr.training.settings import Component, GANConfig, OptimConfig, ScheduleConfig
from m3rcr.utils.plain import plain


def _scheduler(opt: torch.optim.Optimizer, schedule: ScheduleConfig) -> torch.optim.lr_scheduler.LambdaLR:
    # a lambda, not the bound method: LambdaLR saves no state for plain functions, and the state is read back
    # with weights_only=True
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: schedule.factor(epoch))


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``scale * (BCE(real, 1) + BCE(fake, 0))``: McGAN / SpA-GAN use scale 1, pix2pix 0.5."""
    return scale * (adversarial_loss(real_logits, True) + adversarial_loss(fake_logits, False))


def attention_loss(attention: torch.Tensor, cloudmask: torch.Tensor) -> torch.Tensor:
    """SpA-GAN's attention term: MSE between the (B, 1, H, W) attention map and the (B, H, W) cloud mask."""
    return F.mse_loss(attention[:, 0].float(), cloudmask.float())  # float32 under bf16-mixed too


def generator_loss(adversarial: torch.Tensor, reconstruction: torch.Tensor, attention: torch.Tensor | None,
                   adversarial_weight: float, reconstruction_weight: float, attention_weight: float) -> torch.Tensor:
    """The generator's objective: weighted adversarial + reconstruction (+ attention) terms."""
    loss = adversarial_weight * adversarial + reconstruction_weight * reconstruction
    return loss + attention_weight * attention if attention is not None else loss


class _ImageToImage(L.LightningModule):
    """What both trainers share: the network, the reconstruction loss, the optimiser and schedule settings,
    prediction and validation.

    ``reflectance_per_unit`` (set by the run from the data, e.g. 0.2 for SEN12MS-CR's ``resnet`` scaling) turns
    the network's values into reflectance for the validation PSNR and MAE, so they read as in evaluation.
    """

    reflectance_per_unit: float = 1.0

    def __init__(self, model: Component, loss: Component, optim: OptimConfig, schedule: ScheduleConfig) -> None:
        super().__init__()
        self.net: CloudRemovalModel = MODELS.build(model.name, **model.config)
        self.loss_fn: torch.nn.Module = LOSSES.build(loss.name, **loss.config)
        self.optim, self.schedule = optim, schedule

    def forward(self, cloudy: torch.Tensor, sar: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(cloudy, sar)

    def _predict(self, batch: dict[str, Any]) -> torch.Tensor:
        return self(batch["cloudy"], batch["sar"])

    def _reconstruction(self, pred: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        # in float32 whatever the precision (bf16-mixed hands some models' outputs on in bf16)
        return self.loss_fn(pred.float(), batch["cloudfree"], batch["cloudmask"], batch["cloudy"])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        pred = self._predict(batch)
        ref = batch["cloudfree"]
        n = len(ref)
        self.log("val/loss", self._reconstruction(pred, batch), on_epoch=True, batch_size=n, sync_dist=True)
        unit = self.reflectance_per_unit
        pred, ref = pred.float() * unit, ref.float() * unit
        self.log("val/psnr", psnr(pred, ref).mean(), prog_bar=True, on_epoch=True, batch_size=n, sync_dist=True)
        self.log("val/mae", mae(pred, ref).mean(), on_epoch=True, batch_size=n, sync_dist=True)


class CloudRemovalModule(_ImageToImage):
    """Trains ``model`` (a registry name and its configuration) to predict the cloud-free image.

    Args:
        model: the network (``m3rcr.models.MODELS``).
        loss: the reconstruction loss (``m3rcr.training.losses.LOSSES``).
        optim: Adam settings; ``align_lr`` applies to the parameters of alignment modules (names containing
            ``.align.``), as in the paper (1e-4 and 1e-5).
        schedule: learning-rate schedule, stepped every epoch.
    """

    def __init__(self, model: Component, loss: Component, optim: OptimConfig | None = None,
                 schedule: ScheduleConfig | None = None) -> None:
        super().__init__(model, loss, optim or OptimConfig(), schedule or ScheduleConfig())
        # plain values: Lightning writes them to the logs and into the training state, read with weights_only=True
        self.save_hyperparameters(plain({"model": model, "loss": loss, "optim": self.optim,
                                         "schedule": self.schedule}))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self._reconstruction(self._predict(batch), batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["cloudy"]),
                 sync_dist=True)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        o = self.optim
        align = [p for n, p in self.net.named_parameters() if ".align." in n]
        rest = [p for n, p in self.net.named_parameters() if ".align." not in n]
        groups = [{"params": rest, "lr": o.lr, "name": "network"}]
        if align:
            groups.append({"params": align, "lr": o.align_lr if o.align_lr is not None else o.lr, "name": "align"})
        opt = torch.optim.Adam(groups, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": _scheduler(opt, self.schedule), "interval": "epoch"}}


class GANModule(_ImageToImage):
    """Conditional-GAN training of a generator ``model`` against ``gan.discriminator``, with manual optimisation.

    Each step first updates the discriminator on (condition, real) vs (condition, generated) pairs,
    then the generator on ``adversarial_weight * adversarial + reconstruction_weight * loss
    + attention_weight * MSE(attention map, cloud mask)`` (the last only for generators whose
    ``forward_with_attention`` gives a map, i.e. SpA-GAN). The condition is the generator's input
    (``model.condition(cloudy, sar)``: the ``spec.input_bands`` bands it reads).

    Args:
        model, loss: as :class:`CloudRemovalModule`; ``loss`` is the reconstruction term (L1 in all three GANs).
        gan: the discriminator and the weights of the objective (``d_lr`` None: ``optim.lr``).
        optim, schedule: for both networks (``align_lr`` is unused: GANs have no alignment blocks).
        gradient_clip_val: clip each network's gradient norm (manual optimisation cannot use the Trainer's).
    """

    def __init__(self, model: Component, loss: Component, gan: GANConfig, optim: OptimConfig | None = None,
                 schedule: ScheduleConfig | None = None, gradient_clip_val: float | None = None) -> None:
        super().__init__(model, loss, optim or OptimConfig(), schedule or ScheduleConfig())
        self.gan, self.gradient_clip_val = gan, gradient_clip_val
        self.save_hyperparameters(plain({"model": model, "loss": loss, "gan": gan, "optim": self.optim,
                                         "schedule": self.schedule, "gradient_clip_val": gradient_clip_val}))
        self.automatic_optimization = False
        spec = self.net.spec
        self.disc = DISCRIMINATORS.build(gan.discriminator, **{"condition_channels": spec.input_bands,
                                                               "image_channels": spec.optical_out,
                                                               **gan.discriminator_config})

    def _step(self, opt: Any, loss: torch.Tensor) -> None:
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # runs inside opt.step(), after fp16 gradients have been unscaled: clip the true gradients
        if self.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val,
                                gradient_clip_algorithm="norm")

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        hp = self.gan
        opt_g, opt_d = self.optimizers()
        cloudy, sar, real = batch["cloudy"], batch["sar"], batch["cloudfree"]
        attention = None
        if hp.attention_weight:
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
        o, d_lr = self.optim, self.gan.d_lr
        opt_g = torch.optim.Adam(self.net.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        opt_d = torch.optim.Adam(self.disc.parameters(), lr=d_lr if d_lr is not None else o.lr, betas=o.betas,
                                 weight_decay=o.weight_decay)
        return [opt_g, opt_d], [_scheduler(opt_g, self.schedule), _scheduler(opt_d, self.schedule)]


class SegmentationModule(L.LightningModule):
    """Trains a land-cover segmentation network on the CLOUD-FREE images (or ``input``) with the level-1
    labels; cross-entropy with the ``unknown`` class (id ``ignore_index``) ignored.

    Validation logs ``val/loss``, and ``val/miou`` / ``val/pa`` (percent) from one confusion matrix
    over the validation set.
    """

    def __init__(self, model: Component, optim: OptimConfig | None = None, schedule: ScheduleConfig | None = None,
                 input: str = "cloudfree", ignore_index: int = 6) -> None:
        super().__init__()
        self.input, self.ignore_index = input, ignore_index
        self.optim, self.schedule = optim or OptimConfig(), schedule or ScheduleConfig()
        self.save_hyperparameters(plain({"model": model, "optim": self.optim, "schedule": self.schedule,
                                         "input": input, "ignore_index": ignore_index}))
        self.net = SEGMENTATION_MODELS.build(model.name, **model.config)
        self.num_classes: int = self.net.config["classes"]
        self._val_cm: torch.Tensor | None = None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != self.ignore_index
        if not valid.any():  # a crop with only unknown land cover: nothing to learn from
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, ignore_index=self.ignore_index)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self._loss(self(batch[self.input]), batch["landcover"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["landcover"]),
                 sync_dist=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_cm = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long, device=self.device)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        from m3rcr.evaluation.confusion import confusion_matrix

        logits = self(batch[self.input])
        target = batch["landcover"]
        self.log("val/loss", self._loss(logits, target), on_epoch=True, batch_size=len(target), sync_dist=True)
        self._val_cm += confusion_matrix(logits.argmax(1), target, self.num_classes, self.ignore_index)

    def on_validation_epoch_end(self) -> None:
        from m3rcr.evaluation.confusion import miou, pixel_accuracy

        cm = self._val_cm
        if self.trainer.world_size > 1:
            cm = self.all_gather(cm).sum(0)
        for key, value in (("val/miou", miou(cm)), ("val/pa", pixel_accuracy(cm))):
            if value is not None:
                self.log(key, value, prog_bar=key == "val/miou", rank_zero_only=True)

    def configure_optimizers(self) -> dict[str, Any]:
        o = self.optim
        opt = torch.optim.Adam(self.net.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": _scheduler(opt, self.schedule), "interval": "epoch"}}
