"""The segmentation audit on volumes: CLI end to end, overlays at the lesion slice, slice-wise denoisers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from medrobust.cli.main import main


@pytest.fixture(scope="module")
def brain_run(tmp_path_factory):
    """A tiny 3D segmenter trained 1 epoch on 20 brain MRI phantoms of 16³ (about 2 s on one thread)."""
    from medrobust.data.segmentation.phantoms import write_segmentation_phantom
    from medrobust.models.segmentation import train_segmenter

    root = tmp_path_factory.mktemp("brain3d")
    data = write_segmentation_phantom("brain_mri", 20, 16, "decathlon", root / "data", seed=0)
    return train_segmenter(
        {
            "data": str(data),
            "arch": "tiny",
            "arch_kwargs": {"width": 4},
            "epochs": 1,
            "batch_size": 4,
            "augment": False,
            "lr": 0.01,
            "out": str(root / "run"),
            "progress": False,
            "device": "cpu",
        }
    )


@pytest.fixture(scope="module")
def audited(brain_run, tmp_path_factory):
    """A CLI audit of the 3D segmenter bare and behind a slice-wise median (graybox, adaptive)."""
    tmp = tmp_path_factory.mktemp("brain3d_audit")
    cfg = {
        "task": "segmentation",
        "data": {"source": str(brain_run.parent / "data"), "split": "test"},
        "model": {"path": str(brain_run)},
        "defenses": [{"name": "median", "denoiser": "median", "params": {"kernel_size": 3}}],
        "attacks": [{"name": "pgd", "params": {"steps": 2}}],
        "budgets": {"linf": ["8/255"]},
        "threats": ["graybox", "adaptive"],
        "n_samples": 3,
        "batch_size": 3,
        "device": "cpu",
        "save_examples": 2,
    }
    config = tmp / "brain3d.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = tmp / "audit"
    code = main(["audit", "--config", str(config), "--out", str(out), "--no-progress"])
    return config, out, code


def test_3d_audit_through_the_cli_writes_results_and_overlays(audited):
    _, out, code = audited
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["spatial_size"] == [16, 16, 16] and results["model"]["card"]["spatial_dims"] == 3
    assert {(c["target"], c["threat"]) for c in results["cells"]} == {
        ("bare", "whitebox"),
        ("median", "graybox"),
        ("median", "adaptive"),
    }
    median = next(t for t in results["targets"] if t["name"] == "median")
    assert median["applied"] == "per axial slice" and median["uses_bpda"]
    for cell in results["cells"]:
        assert cell["median_linf"] <= 8 / 255 + 1e-6
        assert np.load(out / cell["predictions"])["labels"].shape == (3, 16, 16, 16)
    md = (out / "report.md").read_text()
    for target in ("bare", "median"):
        png = out / "plots" / f"overlay-{target}.png"
        assert f"](plots/overlay-{target}.png)" in md and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_failing_dice_gate_on_a_3d_audit_exits_1(audited, capsys):
    config, out, _ = audited
    argv = ["audit", "--config", str(config), "--out", str(out), "--no-progress"]
    junit = out.parent / "gates.xml"
    failing = "pgd@8/255:target=bare:dice:tumour>=0.999"
    assert main([*argv, "--gate", failing, "--junit", str(junit)]) == 1
    err = capsys.readouterr().err
    assert f"GATE FAILED: {failing}" in err
    import xml.etree.ElementTree as ET

    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == "1" and suite.get("failures") == "1"
    (case,) = suite.findall("testcase")
    assert case.get("name") == failing and "bare/whitebox/pgd@8/255" in case.find("failure").text
    assert main([*argv, "--gate", "pgd@8/255:target=bare:dice:tumour>=0", "--junit", str(junit)]) == 0
    suite = ET.parse(junit).getroot()
    assert suite.get("failures") == "0" and suite.find("testcase/system-out").text == "passed on 1 cell(s)"
    assert main([*argv, "--junit", str(out.parent / "missing" / "g.xml")]) == 2  # refused before auditing


def test_overlay_shows_the_axial_slice_with_the_most_lesion_voxels():
    from medrobust.evaluation.segmentation.report import _panels, axial, lesion_slice

    truth = np.zeros((8, 8, 8), dtype=np.uint8)
    truth[2:4, 2:4, 5] = 1  # 4 voxels at z=5
    truth[2:5, 2:5, 6] = 1  # 9 voxels at z=6: the slice to show
    empty = np.zeros_like(truth)
    invented = empty.copy()
    invented[0, 0, 1] = 1
    assert lesion_slice(truth, [empty, empty], [1]) == 6
    assert lesion_slice(empty, [empty, invented], [1]) == 1  # no true lesion: where the model put one
    assert lesion_slice(empty, [empty, empty], [1]) == 4  # nothing anywhere: the middle
    # radiological display: anterior (high Y) at the top, the patient's right (high X) on the left
    vol = np.zeros((1, 8, 8, 8))
    vol[0, 7, 7, 3] = 1.0
    assert axial(vol, 3)[0, 0, 0] == 1.0
    image = np.random.default_rng(0).uniform(size=(1, 1, 8, 8, 8)).astype(np.float32)
    data = {
        "image": image,
        "adv": image + 0.01,
        "truth": truth[None],
        "clean_pred": empty[None],
        "adv_pred": empty[None],
    }
    panels, where = _panels(data, 0, [1], (0.0, 1.0))
    assert "z=6" in where and [p[0].shape for p in panels] == [(8, 8)] * 5
    np.testing.assert_array_equal(panels[1][1], axial(truth, 6))


def test_2d_denoiser_filters_each_axial_slice_of_a_volume_with_its_gradient():
    from medrobust.defenses import create_denoiser
    from medrobust.defenses.defended import denoise_axial_slices

    x = torch.rand(2, 1, 6, 7, 5, requires_grad=True)
    den = create_denoiser("median", kernel_size=3)
    out = denoise_axial_slices(den, x)
    expected = torch.stack([den(x[..., z].detach()) for z in range(5)], dim=-1)
    torch.testing.assert_close(out.detach(), expected)
    out.sum().backward()  # BPDA: the identity gradient reaches every voxel
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_a_volumetric_denoiser_filters_whole_volumes_and_a_2d_one_each_slice():
    from medrobust.defenses import create_denoiser, defend
    from medrobust.errors import ConfigError
    from medrobust.evaluation.segmentation.targets import DefendedSegmenter, describe_segmentation_target
    from medrobust.models import ModelCard, build_classifier
    from medrobust.models.segmentation import SegmentationCard, build_segmenter

    torch.manual_seed(0)
    card = SegmentationCard(in_channels=1, class_names=["bg", "tumour"], spatial_dims=3)
    seg = build_segmenter("tiny", card, width=2).eval()
    x = torch.rand(1, 1, 6, 6, 6)
    whole = DefendedSegmenter(seg, create_denoiser("median3d"))
    sliced = DefendedSegmenter(seg, create_denoiser("median"))
    assert not whole.slicewise and sliced.slicewise
    with torch.no_grad():
        torch.testing.assert_close(whole(x), seg(create_denoiser("median3d")(x)))
    from medrobust.evaluation.config import DefenseConfig

    spec = DefenseConfig(name="m", denoiser="median")
    assert describe_segmentation_target("m3", whole, spec)["applied"] == "whole volume"
    assert describe_segmentation_target("m2", sliced, spec)["applied"] == "per axial slice"
    # classifiers: a 2D classifier refuses a volumetric denoiser; a 3D one takes either
    flat = build_classifier("small_cnn", ModelCard(in_channels=1, class_names=["a", "b"]))
    refused = r"defend\(\): the denoiser 'median3d' filters 3D images but the model is 2D"
    with pytest.raises(ConfigError, match=refused):
        defend(flat, create_denoiser("median3d"))
    with pytest.raises(ConfigError, match="in_channels=3 but the model's card expects 1"):
        defend(flat, create_denoiser("median", in_channels=3))


def test_shipped_brain3d_pipeline_validates(shipped_plan):
    from medrobust.evaluation.segmentation.gate import check_segmentation_gates, parse_segmentation_gate

    cfg, cells = shipped_plan("segmentation_brain3d")
    assert {c.threat for c in cells} == {"whitebox", "graybox", "adaptive"}
    # bare (white-box), then each defense gray-box and adaptive, at two budgets
    assert len(cells) == len(cfg.attacks) * 2 * (1 + 2 * len(cfg.defenses))
    assert cfg.attack("erase").goal == "erase-lesion"
    assert {d.denoiser for d in cfg.defenses} == {"median", "median3d"}
    assert {a.name for a in cfg.attacks} == {"fgsm", "pgd", "segpgd", "spsa"}
    assert cfg.gates and "brain_mri" in cfg.data.source
    # every gate names a known metric and label and matches a planned cell
    check_segmentation_gates([parse_segmentation_gate(g) for g in cfg.gates], cells, ["background", "tumour"])
