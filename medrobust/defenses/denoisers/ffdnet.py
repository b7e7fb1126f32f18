"""FFDNet-style non-blind denoiser with a noise-level map input (Zhang, Zuo & Zhang, 2018).

The image is rescaled from ``bounds`` to [0, 1], split into four half-resolution
sub-images (pixel unshuffle), concatenated with a constant map holding the noise
level σ, passed through a plain conv/BN/ReLU stack and shuffled back. Unlike the
original FFDNet, the network predicts the noise (residual learning, as in DnCNN),
which trains faster on the small budgets of the denoiser study.

σ is a *constructor* parameter expressed as a fraction of the dynamic range
(``15/255`` means 15 grey levels of an 8-bit image whatever the bounds), so
``forward(x)`` keeps the common denoiser signature. Training over a σ range passes a
per-image ``sigma`` tensor to :meth:`FFDNet.forward` instead.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.defenses.denoisers._common import check_images, plain
from medrobust.defenses.denoisers.base import Denoiser, register_denoiser
from medrobust.validation import check_float, check_int


@register_denoiser("ffdnet")
class FFDNet(Denoiser):
    """Non-blind denoiser conditioned on a noise-level map.

    Args:
        in_channels: Image channels.
        bounds: Intensity interval of inputs and outputs.
        sigma: Noise standard deviation assumed at inference, as a fraction of
            ``bounds[1] - bounds[0]`` (e.g. ``15/255``); numbers or fraction strings.
        depth: Number of conv layers (>= 3).
        width: Channels of the hidden layers.
    """

    kind: ClassVar[str] = "deep"
    differentiable: ClassVar[bool] = True
    fast_params: ClassVar[dict[str, Any]] = {"depth": 3, "width": 8}
    #: Tells trainers that ``forward`` accepts a per-image ``sigma`` (noise-level map).
    accepts_noise_level: ClassVar[bool] = True

    def __init__(
        self,
        in_channels: int = 1,
        bounds: Any = (0.0, 1.0),
        sigma: Any = 15 / 255,
        depth: int = 8,
        width: int = 48,
    ) -> None:
        super().__init__(in_channels=in_channels, bounds=bounds)
        self.sigma = check_float(sigma, "sigma", "FFDNet", low=0.0, high=1.0, low_inclusive=True)
        self.depth = check_int(depth, "depth", "FFDNet", low=3, high=256)
        self.width = check_int(width, "width", "FFDNet", low=1, high=2048)
        sub = 4 * self.in_channels
        layers: list[nn.Module] = [nn.Conv2d(sub + 1, self.width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(self.depth - 2):
            layers += [
                nn.Conv2d(self.width, self.width, 3, padding=1, bias=False),
                nn.BatchNorm2d(self.width),
                nn.ReLU(inplace=True),
            ]
        last = nn.Conv2d(self.width, sub, 3, padding=1)
        nn.init.zeros_(last.weight)  # a fresh FFDNet is the identity, like DnCNN here
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        """Denoise ``x`` (N, C, H, W) assuming noise level ``sigma`` (default: ``self.sigma``).

        Args:
            x: Noisy images in intensity units (may exceed ``bounds`` because of the noise).
            sigma: Optional per-image noise level (N,) or scalar, fraction of the range.

        Returns:
            Denoised images of the same shape, clamped to ``bounds``.
        """
        x = plain(x)
        check_images(x, self)
        low, high = self.bounds
        scale = high - low
        u = (x - low) / scale
        n, _, h, w = u.shape
        ph, pw = h % 2, w % 2
        if ph or pw:
            u = F.pad(u, (0, pw, 0, ph), mode="replicate")
        level = self.sigma if sigma is None else sigma
        level_t = torch.as_tensor(level, dtype=u.dtype, device=u.device).reshape(-1, 1, 1, 1)
        level_map = level_t.expand(n, 1, u.shape[-2] // 2, u.shape[-1] // 2)
        sub = F.pixel_unshuffle(u, 2)
        noise = F.pixel_shuffle(self.body(torch.cat([sub, level_map], dim=1)), 2)
        out = (u - noise)[..., :h, :w]
        return self.clamp(out * scale + low)

    def config(self) -> dict[str, Any]:
        """Constructor arguments (σ included) for checkpoints."""
        return {**super().config(), "sigma": self.sigma, "depth": self.depth, "width": self.width}
