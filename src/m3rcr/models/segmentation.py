"""Land-cover segmentation for the semantic evaluation (spec section 4.2): DeepLabv3+ with a ResNet-50
encoder from segmentation-models-pytorch, 4-band input, the six level-1 classes (``unknown`` ignored).

No weights are downloaded: the network starts from a random initialisation, or from a local weights
file (a whole-model state dict, or an encoder state dict such as torchvision's ImageNet ResNet-50,
whose (R, G, B) first convolution is mapped onto the (B, G, R, NIR) bands).
"""

from __future__ import annotations

from pathlib import Path

import torch

from m3rcr.errors import DataError
from m3rcr.models.base import ConfiguredModule
from m3rcr.models.blocks import pad_to_multiple
from m3rcr.utils.registry import Registry

#: the segmentation networks by name
SEGMENTATION_MODELS: Registry[ConfiguredModule] = Registry("segmentation model")


@SEGMENTATION_MODELS.register("deeplabv3plus")
class DeepLabV3PlusLandCover(ConfiguredModule):
    """DeepLabv3+ (smp) on (B, 4, H, W) reflectance -> (B, classes, H, W) logits, for any H and W
    (padded by edge replication to a multiple of 16, the output stride, and cropped back).

    Args:
        encoder: smp encoder name (``resnet50``).
        in_channels, classes: 4 bands, 6 level-1 classes (``unknown`` is not a class).
        weights: optional local weights file (see the module docs); never downloaded.
    """

    task = "segmentation"
    unrecorded = ("weights",)  # loaded weights end up in the state dict itself

    def __init__(self, encoder: str = "resnet50", in_channels: int = 4, classes: int = 6,
                 weights: str | None = None) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        self.net = smp.DeepLabV3Plus(encoder_name=encoder, encoder_weights=None, in_channels=in_channels,
                                     classes=classes)
        if weights:
            self.load_weights(weights)

    def load_weights(self, path: str | Path) -> None:
        """Load a local whole-model or encoder state dict (``weights_only=True``)."""
        path = Path(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise DataError(path, "weights file not found") from None
        except Exception as exc:
            raise DataError(path, f"cannot be read as a state dict ({type(exc).__name__}: {exc})") from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        if not isinstance(state, dict):
            raise DataError(path, "holds no state dict")
        if any(k.startswith(("net.encoder.", "net.decoder.")) for k in state):
            self.load_state_dict(state)
            return
        encoder = self.net.encoder
        own = encoder.state_dict()
        first = next(k for k in own if own[k].dim() == 4)  # the first convolution
        if first in state and state[first].shape != own[first].shape and state[first].shape[1] == 3:
            # ImageNet filters are (R, G, B); our bands are (B, G, R, NIR): match the colours, give NIR
            # their mean, and rescale so that the summed response keeps its size
            w = state[first]
            cin = own[first].shape[1]
            bands = [w[:, 2], w[:, 1], w[:, 0]] + [w.mean(dim=1)] * (cin - 3)
            state = dict(state)
            state[first] = torch.stack(bands[:cin], dim=1) * (3 / cin)
        matched = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
        if not matched:
            raise DataError(path, "no tensor in it matches the encoder")
        encoder.load_state_dict(matched, strict=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2:]
        x, _ = pad_to_multiple(image, 16)
        return self.net(x)[..., :h, :w]
