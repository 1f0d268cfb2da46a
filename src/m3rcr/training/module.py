"""The LightningModule that trains any registered cloud-removal network with a reconstruction loss."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from m3rcr.evaluation.metrics import mae, psnr
from m3rcr.models import create_model
from m3rcr.training.losses import create_loss


def step_decay(epoch: int, constant_epochs: int, step_epochs: int, gamma: float) -> float:
    """Learning-rate factor: 1 for the first ``constant_epochs``, then x ``gamma`` every ``step_epochs``.

    The paper: 1e-4 for epochs 0-9, 5e-5 for 10-14, 2.5e-5 for 15-19, ...
    """
    if epoch < constant_epochs:
        return 1.0
    return gamma ** ((epoch - constant_epochs) // step_epochs + 1)


class CloudRemovalModule(L.LightningModule):
    """Trains ``model`` (a registry name and its configuration) to predict the cloud-free image.

    Args:
        model, model_config: the network (``m3rcr.models.create_model(model, **model_config)``).
        loss, loss_config: the reconstruction loss (``m3rcr.training.losses``).
        lr: Adam learning rate of the network; ``align_lr`` for parameters of alignment modules
            (names containing ``.align.``), as in the paper (1e-4 and 1e-5).
        betas, weight_decay: Adam settings.
        constant_epochs, step_epochs, gamma: the step schedule of :func:`step_decay`.
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
        constant_epochs: int = 10,
        step_epochs: int = 5,
        gamma: float = 0.5,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = create_model(model, **(model_config or {}))
        self.loss_fn = create_loss(loss, **(loss_config or {}))

    def forward(self, cloudy: torch.Tensor, sar: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(cloudy, sar)

    def _predict(self, batch: dict[str, Any]) -> torch.Tensor:
        return self(batch["cloudy"], batch["sar"])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.loss_fn(self._predict(batch), batch["cloudfree"], batch["cloudmask"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["cloudy"]),
                 sync_dist=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        pred = self._predict(batch)
        ref = batch["cloudfree"]
        n = len(ref)
        self.log("val/loss", self.loss_fn(pred, ref, batch["cloudmask"]), on_epoch=True, batch_size=n, sync_dist=True)
        self.log("val/psnr", psnr(pred.float(), ref.float()).mean(), prog_bar=True, on_epoch=True, batch_size=n,
                 sync_dist=True)
        self.log("val/mae", mae(pred.float(), ref.float()).mean(), on_epoch=True, batch_size=n, sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        align = [p for n, p in self.net.named_parameters() if ".align." in n]
        rest = [p for n, p in self.net.named_parameters() if ".align." not in n]
        groups = [{"params": rest, "lr": hp.lr, "name": "network"}]
        if align:
            groups.append({"params": align, "lr": hp.align_lr if hp.align_lr is not None else hp.lr, "name": "align"})
        opt = torch.optim.Adam(groups, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda epoch: step_decay(epoch, hp.constant_epochs, hp.step_epochs, hp.gamma))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
