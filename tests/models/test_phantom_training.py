"""small_cnn trained on phantom chest X-rays must clearly beat chance on the held-back split.

Measured while writing this test (n=400 phantoms at 32x32, 15 epochs, lr 3e-3): test balanced
accuracy 0.95-1.0 for seeds 0-3, so the 0.75 threshold leaves a wide margin above chance (0.5).
"""

import numpy as np
import torch
from torch.utils.data import Dataset

from medrobust.models import load_model
from medrobust.models.training import TrainClassifierConfig, TrainData, train_classifier


class _Tensors(Dataset):
    def __init__(self, images, labels):
        self.images, self.labels = images, torch.as_tensor(labels)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": self.labels[i], "meta": {}}


def test_small_cnn_beats_chance_on_phantom_chest_xrays(tmp_path):
    from medrobust.data import get_preset, make_phantom
    from medrobust.metrics import classification_metrics

    phantoms = make_phantom("chest_xray", 400, 32, seed=0)
    preset = get_preset("chest_xray")
    to_tensor = preset.transform(spatial_size=(32, 32))  # the preset's deterministic path, once
    images = torch.stack([to_tensor({"image": im.astype(np.float32)})["image"] for im in phantoms.images])
    part = {k: phantoms.splits == k for k in ("train", "val", "test")}
    train, val, test = (_Tensors(images[m], phantoms.labels[m]) for m in part.values())
    assert len(test) >= 40 and set(np.unique(test.labels.numpy())) == {0, 1}
    data = TrainData(
        train=train,
        val=val,
        test=test,
        class_names=list(phantoms.class_names),
        in_channels=1,
        spatial_size=(32, 32),
        bounds=tuple(preset.bounds),
        modality="chest_xray",
        positive_class=phantoms.positive_class,
        train_labels=train.labels.numpy(),
    )
    cfg = TrainClassifierConfig(
        arch="small_cnn",
        epochs=15,
        batch_size=32,
        lr=3e-3,
        patience=15,
        seed=0,
        out=str(tmp_path / "run"),
        progress=False,
        device="cpu",
    )
    run = train_classifier(cfg, data=data)
    model = load_model(run)
    with torch.no_grad():
        logits = model(test.images)
    m = classification_metrics(test.labels.numpy(), logits.numpy(), model.card.positive_index)
    assert m["balanced_accuracy"] >= 0.75, m
    assert m["auroc"] >= 0.85, m


def test_default_recipe_learns_200_phantom_chest_xrays_in_10_epochs(tmp_path):
    """The CLI's defaults (no --size: the phantoms' native 32x32) reach val balanced accuracy >= 0.8.

    Before the one training loop this recipe stayed at chance: the 32x32 images were upsampled to
    the preset's 224x224 and BatchNorm's running statistics (5 updates per epoch) lagged behind the
    weights, so the model predicted one class in evaluation mode.
    """
    import json

    from medrobust.data import write_phantom

    data = write_phantom("chest_xray", 200, 32, "npz", tmp_path / "cxr", seed=0)
    cfg = TrainClassifierConfig(
        data=str(data),
        modality="chest_xray",
        epochs=10,
        out=str(tmp_path / "run"),
        progress=False,
        device="cpu",
    )
    run = train_classifier(cfg)
    summary = json.loads((run / "summary.json").read_text())
    assert load_model(run).card.spatial_size == (32, 32)  # trained at the native size, not upsampled
    assert summary["best_val"]["balanced_accuracy"] >= 0.8, summary["best_val"]
    assert summary["chance"]["warning"] is None


def test_small_images_train_at_native_size_unless_size_asks(tmp_path, caplog):
    import logging

    from medrobust.data import write_phantom
    from medrobust.models.training import prepare_data

    data = write_phantom("chest_xray", 20, 40, "npz", tmp_path / "cxr", seed=0)
    with caplog.at_level(logging.INFO, logger="medrobust"):
        native = prepare_data(TrainClassifierConfig(data=str(data), modality="chest_xray"))
        asked = prepare_data(
            TrainClassifierConfig(data=str(data), modality="chest_xray", spatial_size=(64, 64))
        )
    assert native.spatial_size == (40, 40) and tuple(native.train[0]["image"].shape) == (1, 40, 40)
    assert asked.spatial_size == (64, 64)
    assert "native size 40x40 (the chest_xray preset's default 224x224 would upsample" in caplog.text
    assert "images of up to 40x40 pixels are upsampled to 64x64 (--size)" in caplog.text
    # an architecture's smallest input wins over a smaller native size
    tiny = write_phantom("chest_xray", 20, 28, "npz", tmp_path / "tiny", seed=0)
    cfg = TrainClassifierConfig(data=str(tiny), modality="chest_xray", arch="resnet18")
    assert prepare_data(cfg).spatial_size == (32, 32)


def test_default_recipe_learns_200_skin_phantoms_at_32px_in_10_epochs(tmp_path):
    """Issue 16: small_cnn on 200 phantoms at --size 32 reaches val balanced accuracy >= 0.8 in <= 10 epochs.

    Skin is the fastest non-chest modality (binary, about 1-2 s per epoch on a loaded 2-core machine).
    Before the generators were fixed it stayed at 0.63-0.73 (hairs a full pixel dark at 32 px outweighed
    faint, small colour patches); measured after: 0.90-0.93, first reached 0.8 in epochs 1-4
    (``benchmarks/results/phantom_training.md``).
    """
    import csv
    import json

    from medrobust.data import write_phantom

    data = write_phantom("skin", 200, 32, "npz", tmp_path / "skin", seed=0)
    cfg = TrainClassifierConfig(
        data=str(data),
        modality="skin",
        spatial_size=(32, 32),
        epochs=10,
        seed=0,
        out=str(tmp_path / "run"),
        progress=False,
        device="cpu",
    )
    run = train_classifier(cfg)
    summary = json.loads((run / "summary.json").read_text())
    with open(run / "metrics.csv", newline="", encoding="utf-8") as fh:
        epochs = len(list(csv.DictReader(fh)))
    assert epochs <= 10
    assert summary["best_val"]["balanced_accuracy"] >= 0.8, summary["best_val"]
