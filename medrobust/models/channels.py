"""Grey data into multi-channel networks: the card's ``channels: "replicate"`` option.

The replication is a layer of the classifier, in front of the normalisation, so the audit
feeds and attacks the 1-channel image (adversarial examples stay grey) while the network
receives ``model_channels`` identical copies of it. The layer holds no parameters: a
replicating classifier has the same state dict as a plain one.

>>> card = ModelCard(in_channels=3, class_names=["a", "b"], channels="replicate")  # doctest: +SKIP
>>> card.in_channels, card.model_channels                                        # doctest: +SKIP
(1, 3)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medrobust.errors import ConfigError
from medrobust.models.card import ModelCard
from medrobust.models.classifier import MedicalClassifier


class ReplicateChannels(nn.Module):
    """Repeat a 1-channel image ``(N, 1, *spatial)`` into ``(N, channels, *spatial)``.

    Input that already has ``channels`` channels passes through unchanged; the gradient
    of the repeated image sums back onto the single channel.

    Args:
        channels: Channels the network takes (>= 2).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = int(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Repeat the channel axis of ``x``."""
        c = x.shape[1]
        if c == self.channels:
            return x
        if c != 1:
            raise ConfigError(
                f"channels 'replicate' repeats 1-channel images into {self.channels} channels. "
                f"Got images with {c} channels."
            )
        return x.repeat(1, self.channels, *([1] * (x.dim() - 2)))

    def extra_repr(self) -> str:
        """Shown by ``print(model)``."""
        return f"1 -> {self.channels}"


class ReplicatingClassifier(MedicalClassifier):
    """A :class:`MedicalClassifier` whose grey input is repeated into the network's channels.

    ``forward`` is ``backbone(normalize(replicate(x)))`` for ``x`` of shape
    ``(N, 1, *spatial)``; the card states ``in_channels: 1``, ``channels: "replicate"``.
    """

    def __init__(
        self, backbone: nn.Module, card: ModelCard, arch_kwargs: dict[str, Any] | None = None
    ) -> None:
        super().__init__(backbone, card, arch_kwargs)
        self.replicate = ReplicateChannels(card.network_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, num_classes)`` for grey image-space input ``(N, 1, *spatial)``."""
        return self.backbone(self.normalize(self.replicate(x)))


def replicate_note(channels: int) -> str:
    """The note a replicating card carries (shown in reports)."""
    return (
        f"Grey images are repeated into the network's {channels} channels inside the model wrapper "
        "(card channels: 'replicate'); attacks perturb the 1-channel image."
    )


def with_channel_policy(model: MedicalClassifier, image_card: ModelCard | None) -> MedicalClassifier:
    """Apply ``image_card``'s channel policy to a classifier built for the network's channels.

    Args:
        model: A classifier whose card is ``image_card.network_card()`` (plus loader notes).
        image_card: The card as given (None or ``channels: "as_is"``: ``model`` unchanged).

    Returns:
        ``model`` itself, or a :class:`ReplicatingClassifier` sharing its modules, whose
        card keeps the loader's notes and source and states the image's single channel.
    """
    if image_card is None or image_card.channels == "as_is" or isinstance(model, ReplicatingClassifier):
        return model
    channels = image_card.network_channels
    notes = list(model.card.notes)
    note = replicate_note(channels)
    if note not in notes:
        notes.append(note)
    card = model.card.model_copy(
        update={"in_channels": 1, "channels": "replicate", "model_channels": channels, "notes": notes}
    )
    wrapped = ReplicatingClassifier(model.backbone, card, model.arch_kwargs)
    wrapped.normalize = model.normalize
    wrapped.import_info = dict(model.import_info)
    return wrapped.train(model.training)


__all__ = ["ReplicateChannels", "ReplicatingClassifier", "replicate_note", "with_channel_policy"]
