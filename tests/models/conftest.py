"""Fixtures for the model tests: tiny synthetic data and one small trained run."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset


class BlobDataset(Dataset):
    """Learnable synthetic task: class 1 images carry a faint disc at a random place.

    Images lie in ``[low, high]`` (default [0, 1]) with noise; one item is the agreed
    dict ``{"image": float32 (C, H, W), "label": int64, "meta": {}}``.
    """

    def __init__(self, n: int, seed: int, size: int = 32, channels: int = 1, contrast: float = 0.35) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 2, (n,), generator=g)
        x = torch.rand(n, channels, size, size, generator=g) * 0.6
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        cy = torch.randint(size // 4, size - size // 4, (n,), generator=g)
        cx = torch.randint(size // 4, size - size // 4, (n,), generator=g)
        for i in range(n):
            if self.labels[i] == 1:
                disc = ((yy - cy[i]) ** 2 + (xx - cx[i]) ** 2) < (size // 8) ** 2
                x[i, :, disc] += contrast
        self.images = x.clamp(0, 1).float()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i], "meta": {}}


def blob_train_data(
    train: Dataset | int,
    val: Dataset | int,
    seeds: tuple[int, int] = (1, 2),
    *,
    test: Dataset | None = None,
    source: str = "synthetic blobs",
    positive_class: str | None = "lesion",
):
    """``TrainData`` of 32×32 one-channel images, normal vs lesion.

    ``train``/``val`` are datasets, or sizes of seeded :class:`BlobDataset` (``seeds``).
    """
    from medrobust.models.training import TrainData

    train = BlobDataset(train, seed=seeds[0]) if isinstance(train, int) else train
    val = BlobDataset(val, seed=seeds[1]) if isinstance(val, int) else val
    return TrainData(
        train=train,
        val=val,
        class_names=["normal", "lesion"],
        in_channels=1,
        spatial_size=(32, 32),
        positive_class=positive_class,
        train_labels=train.labels.numpy(),
        test=test,
        source=source,
    )


@pytest.fixture(scope="session")
def blob_data():
    return blob_train_data(160, 64, (1, 2), test=BlobDataset(64, seed=3))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, blob_data):
    """A small_cnn trained 3 epochs on the synthetic blobs (run folder)."""
    from medrobust.models.training import TrainClassifierConfig, train_classifier

    out = tmp_path_factory.mktemp("run") / "cnn"
    cfg = TrainClassifierConfig(
        arch="small_cnn",
        arch_kwargs={"width": 8},
        epochs=3,
        batch_size=16,
        lr=3e-3,
        out=str(out),
        progress=False,
        device="cpu",
    )
    return train_classifier(cfg, data=blob_data)


@pytest.fixture
def images():
    return torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="session")
def phantom_png(tmp_path_factory):
    """A small phantom chest X-ray set on disk: OUT/{train,val,test}/{class}/*.png."""
    from medrobust.data import write_phantom

    out = tmp_path_factory.mktemp("cxr")
    return write_phantom("chest_xray", 48, 32, "png", out, seed=0)
