"""Convolutional denoising autoencoder (the Siamese-DAE's default architecture)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.defenses.denoisers._common import DeepDenoiser, check_images, pad_to_multiple, plain, to_unit
from medrobust.defenses.denoisers.base import register_denoiser
from medrobust.validation import check_choice, check_int


@register_denoiser("dae", "conv-dae")
class ConvDAE(DeepDenoiser):
    """Encoder/decoder CNN without skip connections; ``encode``/``decode`` expose the latent code.

    The encoder is a stem convolution followed by ``depth`` stride-2 convolutions (channels
    ``width * 2**i``, capped at ``8 * width``) and a 1x1 projection to ``latent_channels``;
    the decoder mirrors it with stride-2 transposed convolutions (``upsample="transpose"``)
    or nearest/bilinear upsampling + convolution. There are deliberately no skip
    connections: the bottleneck is what removes small perturbations.

    Output range: a sigmoid head in normalised ``[0, 1]`` space, mapped back to ``bounds``.
    Unlike a clamp, a sigmoid never has a zero gradient, so training does not stall on
    pixels that overshoot and adaptive attacks always get a gradient.

    Args:
        in_channels: Image channels (1 or 3).
        bounds: Intensity interval of inputs and outputs.
        width: Channels of the first layer.
        depth: Number of stride-2 stages (spatial downsampling by ``2**depth``; inputs are
            replicate-padded to a multiple of it and cropped back).
        latent_channels: Channels of the latent code (default: the deepest encoder width).
        upsample: "transpose", "nearest" or "bilinear".
    """

    fast_params: ClassVar[dict[str, Any]] = {"width": 4, "depth": 2}

    def __init__(
        self,
        in_channels: int = 1,
        bounds: Any = (0.0, 1.0),
        width: int = 32,
        depth: int = 3,
        latent_channels: int | None = None,
        upsample: str = "transpose",
    ) -> None:
        super().__init__(in_channels=in_channels, bounds=bounds)
        owner = type(self).__name__
        self.width = check_int(width, "width", owner, low=1, high=2048)
        self.depth = check_int(depth, "depth", owner, low=1, high=6)
        self.upsample = check_choice(upsample, "upsample", ["transpose", "nearest", "bilinear"], owner)
        chans = [min(self.width * 2**i, 8 * self.width) for i in range(self.depth + 1)]
        self.latent_channels = (
            chans[-1]
            if latent_channels is None
            else check_int(latent_channels, "latent_channels", owner, low=1, high=4096)
        )
        enc: list[nn.Module] = [nn.Conv2d(self.in_channels, chans[0], 3, padding=1), nn.ReLU(inplace=True)]
        for i in range(self.depth):
            enc += [nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1), nn.ReLU(inplace=True)]
        enc.append(nn.Conv2d(chans[-1], self.latent_channels, 1))
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(self.latent_channels, chans[-1], 1), nn.ReLU(inplace=True)]
        for i in reversed(range(self.depth)):
            if self.upsample == "transpose":
                dec.append(nn.ConvTranspose2d(chans[i + 1], chans[i], 4, stride=2, padding=1))
            else:
                dec += [
                    nn.Upsample(scale_factor=2, mode=self.upsample),
                    nn.Conv2d(chans[i + 1], chans[i], 3, padding=1),
                ]
            dec.append(nn.ReLU(inplace=True))
        dec.append(nn.Conv2d(chans[0], self.in_channels, 3, padding=1))
        self.decoder = nn.Sequential(*dec)

    @property
    def multiple(self) -> int:
        """Spatial sizes are padded to a multiple of this."""
        return 2**self.depth

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent code of images ``x`` in ``bounds`` (N, latent_channels, H/2**depth, W/2**depth)."""
        x = plain(x)
        check_images(x, self)
        u, _ = pad_to_multiple(to_unit(x, self.bounds), self.multiple)
        return self.encoder(u)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in ``bounds`` from latent codes (at the padded size)."""
        low, high = self.bounds
        return torch.sigmoid(self.decoder(z)) * (high - low) + low

    def _forward_unit(self, u: torch.Tensor) -> torch.Tensor:
        up, (h, w) = pad_to_multiple(u, self.multiple)
        return torch.sigmoid(self.decoder(self.encoder(up)))[..., :h, :w]

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {
            **super().config(),
            "width": self.width,
            "depth": self.depth,
            "latent_channels": self.latent_channels,
            "upsample": self.upsample,
        }
