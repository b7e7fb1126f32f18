"""ONNX and TorchScript segmenters: same logits as the original, attackable through the conversion,
loaded by the audit's model loader, and the program rules (suffix or format only, a task card)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from medrobust.attacks.segmentation import create_segmentation_attack
from medrobust.errors import CheckpointError
from medrobust.models.segmentation import SegmentationCard, build_segmenter, load_segmenter

LABELS = ["background", "organ", "lesion"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny 2D segmenter (normalisation in its card) and its backbone as ONNX and TorchScript files."""
    root = tmp_path_factory.mktemp("exported")
    torch.manual_seed(0)
    card = SegmentationCard(
        in_channels=1,
        class_names=LABELS,
        lesion_classes=["lesion"],
        bounds=(0.0, 1.0),
        mean=[0.4],
        std=[0.2],
        spatial_size=(16, 16),
    )
    model = build_segmenter("tiny", card, width=4).eval()
    net = model.backbone
    example = torch.rand(2, 1, 16, 16)
    (root / "onnx").mkdir()
    torch.onnx.export(
        net,
        (example,),
        str(root / "onnx" / "seg.onnx"),
        dynamo=False,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
    )
    imported = card.model_copy(update={"arch": None})
    imported.save(root / "onnx" / "card.json")
    torch.jit.trace(net, example).save(str(root / "seg.ts"))
    imported.save(root / "seg_card.json")
    return model, root


def test_onnx_and_torchscript_give_the_original_logits(exported):
    model, root = exported
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(x)
        from_onnx = load_segmenter(root / "onnx" / "seg.onnx")  # card.json beside it
        from_folder = load_segmenter(root / "onnx")  # a folder with card.json and one program
        from_ts = load_segmenter(root / "seg.ts", card=root / "seg_card.json")
        for imported in (from_onnx, from_folder, from_ts):
            torch.testing.assert_close(imported(x), want, rtol=1e-4, atol=1e-5)
            assert imported.card.task == "segmentation" and imported.card.lesion_classes == ["lesion"]
    assert from_onnx.import_info == {"format": "onnx"} and from_ts.import_info == {"format": "torchscript"}
    assert "onnxruntime" in from_onnx.card.notes[-1]
    assert from_onnx.card.roi_size == (16, 16)  # fixed spatial size: larger images go window by window
    with torch.no_grad():
        big = torch.rand(1, 1, 24, 40)
        assert from_onnx(big).shape == (1, 3, 24, 40)


def test_attacks_differentiate_through_the_imported_programs(exported):
    model, root = exported
    gen = torch.Generator().manual_seed(2)
    images = torch.rand(2, 1, 16, 16, generator=gen)
    masks = torch.randint(0, 3, (2, 16, 16), generator=gen)
    atk = create_segmentation_attack("pgd", model, eps="8/255", steps=1, random_start=False)
    want = atk.input_gradient(images, masks)
    for imported in (
        load_segmenter(root / "onnx" / "seg.onnx"),
        load_segmenter(root / "seg.ts", card=root / "seg_card.json"),
    ):
        grad = create_segmentation_attack(
            "pgd", imported, eps="8/255", steps=1, random_start=False
        ).input_gradient(images, masks)
        torch.testing.assert_close(grad, want, rtol=1e-3, atol=1e-7)
        result = create_segmentation_attack("apgd", imported, eps="8/255", steps=4, seed=0)(images, masks)
        assert float(result.linf.max()) <= 8 / 255 * (1 + 1e-5) and float(result.changed.max()) > 0


def test_the_audits_model_loader_takes_them(exported):
    from medrobust.evaluation.segmentation.targets import load_audited_segmenter

    _, root = exported
    spec = SimpleNamespace(path=root / "onnx" / "seg.onnx", card=None, weights=None, format=None)
    model = load_audited_segmenter(spec, torch.device("cpu"))
    assert model.card.class_names == LABELS and not model.training


def test_programs_by_suffix_or_format_only_and_with_a_segmentation_card(exported, tmp_path):
    model, root = exported
    disguised = tmp_path / "model.pt"
    disguised.write_bytes((root / "seg.ts").read_bytes())
    with pytest.raises(CheckpointError, match=r"model\.pt: a segmenter is a run folder .* got suffix '\.pt'"):
        load_segmenter(disguised, card=root / "seg_card.json")  # a .pt is never run as a program
    loaded = load_segmenter(disguised, card=root / "seg_card.json", format="torchscript")
    assert loaded.import_info == {"format": "torchscript"}
    classifier_card = tmp_path / "cls.json"
    classifier_card.write_text('{"in_channels": 1, "class_names": ["a", "b", "c"], "bounds": [0, 1]}')
    with pytest.raises(CheckpointError, match=r"cls\.json: the card does not say \"task\": \"segmentation\""):
        load_segmenter(root / "seg.ts", card=classifier_card)
    two = model.card.model_copy(
        update={"class_names": ["background", "lesion"], "lesion_classes": [], "arch": None}
    )
    with pytest.raises(CheckpointError, match=r"seg\.ts: the TorchScript segmenter returns \(2, 3, 16, 16\)"):
        load_segmenter(root / "seg.ts", card=two)
    with pytest.raises(CheckpointError, match=r"importing a segmenter needs a card"):
        load_segmenter(root / "seg.ts")


def test_segmenter_files_names_what_is_read_for_the_provenance_hashes(exported, skin_run):
    from medrobust.models.segmentation.checkpoint import segmenter_files

    _, root = exported
    assert segmenter_files(root / "onnx") == (root / "onnx" / "seg.onnx", root / "onnx" / "card.json")
    assert segmenter_files(root / "seg.ts", card=root / "seg_card.json") == (
        root / "seg.ts",
        root / "seg_card.json",
    )
    assert segmenter_files(skin_run) == (skin_run / "model.safetensors", skin_run / "card.json")


def test_a_segmentation_audit_takes_card_and_model_format_and_hashes_the_program(skin_run, tmp_path):
    """`--card` and `--model-format` reach the segmentation audit; provenance hashes the program and card."""
    import hashlib
    import json

    import yaml

    from medrobust.cli.main import main

    model = load_segmenter(skin_run)
    program, card = tmp_path / "skin_model.pt", tmp_path / "skin_card.json"
    torch.jit.trace(model.backbone, torch.rand(1, 3, 32, 32)).save(str(program))  # a .pt: format needed
    model.card.model_copy(update={"arch": None}).save(card)
    cfg = {
        "task": "segmentation",
        "data": {"source": str(skin_run.parent / "data"), "split": "test"},
        "model": {"path": str(program)},
        "attacks": [{"name": "fgsm"}],
        "budgets": {"linf": ["2/255"]},
        "n_samples": 4,
        "batch_size": 4,
        "device": "cpu",
        "save_examples": 0,
    }
    config = tmp_path / "audit.yaml"
    config.write_text(yaml.safe_dump(cfg))
    args = ["audit", "--config", str(config), "--card", str(card), "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "refused")]) == 2  # a .pt is never run as a program
    assert main([*args, "--model-format", "torchscript", "--out", str(tmp_path / "out")]) == 0
    recorded = json.loads((tmp_path / "out" / "results.json").read_text())["provenance"]["model"]
    for key, path in (("weights", program), ("card", card)):
        assert recorded[key]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
