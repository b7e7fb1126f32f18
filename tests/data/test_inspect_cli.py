"""`medrobust data inspect`: counts, shapes, dtypes, ranges, unreadable files; one JSON object."""

from __future__ import annotations

import json

import numpy as np

from medrobust.cli.main import main
from medrobust.data import inspect_source


def test_inspect_report(image_tree):
    root, written = image_tree(n=2)
    (root / "train" / "NORMAL" / "broken.png").write_bytes(b"")
    report = inspect_source(root)
    assert report["counts"] == {"train": {"NORMAL": 3, "PNEUMONIA": 2}, "test": {"NORMAL": 2, "PNEUMONIA": 2}}
    assert report["shapes"] == {"1x16x20": 8} and report["dtypes"] == {"uint8": 8}
    pixels = np.concatenate([a.ravel() for a in written.values()]).astype(float)
    r = report["intensity"]["all"]
    assert (r["min"], r["max"]) == (pixels.min(), pixels.max())
    assert abs(r["p1"] - np.percentile(pixels, 1)) <= 3 and abs(r["p99"] - np.percentile(pixels, 99)) <= 3
    assert report["unreadable"] == [{"path": "train/NORMAL/broken.png", "reason": "file is empty (0 bytes)"}]


def test_cli_json_is_one_object(medmnist_npz, capsys):
    path, _ = medmnist_npz(rgb=True)
    assert main(["data", "inspect", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)  # the whole stdout parses as exactly one JSON object
    assert isinstance(report, dict)
    assert report["source"]["kind"] == "npz" and report["n_records"] == 11
    assert report["shapes"] == {"3x28x28": 11} and report["channels"] == {"3": 11}
    assert report["counts"]["val"] == {"0": 1, "1": 1, "2": 0}


def test_cli_text_and_modality(image_tree, capsys):
    root, _ = image_tree(n=2)
    assert main(["data", "inspect", str(root)]) == 0
    text = capsys.readouterr().out
    assert "4 samples" not in text and "8 samples" in text and "unreadable files: 0" in text
    try:
        import medrobust.data.presets  # noqa: F401
    except ModuleNotFoundError:
        return
    assert main(["data", "inspect", str(root), "--modality", "chest_xray", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    lo, hi = report["preset"]["bounds"]
    after = report["preset"]["after_preset"]
    assert after["n"] == 8 and lo <= after["min"] <= after["max"] <= hi


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["data", "inspect", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    bad = tmp_path / "evil.npz"
    obj = np.empty(1, dtype=object)
    np.savez(bad, train_images=obj, train_labels=obj)
    assert main(["data", "inspect", str(bad), "--json"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and "evil.npz" in cap.err and len(cap.err.strip().splitlines()) == 1
    assert main(["data", "inspect", str(tmp_path), "--modality", "chest_xra"]) == 2
