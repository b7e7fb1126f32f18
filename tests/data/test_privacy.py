"""PHI: canary values planted in DICOM identifying elements appear in no output of medrobust."""

from __future__ import annotations

import json
import logging

import pytest

from medrobust.cli.main import main
from medrobust.data import inspect_source, load_arrays, make_dataset, open_source
from medrobust.errors import DataError


def _variants(value: str) -> list[str]:
    return [value, value.replace("^", " "), *[p for p in value.split("^") if len(p) >= 5]]


def _assert_clean(text: str, canaries: dict[str, str]) -> None:
    for key, value in canaries.items():
        for v in _variants(value):
            assert v not in text, f"{key} canary {v!r} leaked"


@pytest.fixture
def phi_tree(dicom_copy, canaries):
    """Class folders with canary-laden DICOM files (good ones and one with broken pixel data)."""
    dicom_copy("CT_small.dcm", "phi/train/normal/a.dcm", **canaries)
    dicom_copy("MR_small.dcm", "phi/train/abnormal/b.dcm", **canaries)
    dicom_copy("CT_small.dcm", "phi/test/normal/c.dcm", **canaries)
    dicom_copy("MR_small_RLE.dcm", "phi/test/abnormal/d.dcm", **canaries)
    broken = dicom_copy("MR_small.dcm", "phi/test/abnormal/e.dcm", **canaries)
    import pydicom

    ds = pydicom.dcmread(broken)
    ds.PixelData = ds.PixelData[:100]  # decoding fails: an error message is produced
    ds.save_as(broken)
    return broken.parents[3] / "phi"


def test_canaries_in_no_meta_log_inspect_or_error(phi_tree, canaries, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    src = open_source(phi_tree)
    texts = []
    errors = []
    for r in src.records():
        try:
            sample = src.load(r)
        except DataError as exc:
            errors.append(str(exc))
            continue
        texts.append(json.dumps(sample["meta"]))
        assert set(sample["meta"]) <= set(__import__("medrobust.data.base").data.base.SAFE_META_KEYS)
    assert len(texts) == 4 and len(errors) == 1 and "e.dcm" in errors[0]
    ds = make_dataset(phi_tree, on_error="skip", spatial_size=(32, 32))
    _x, _y = load_arrays(ds, limit=2)
    texts.extend(json.dumps(ds[i]["meta"]) for i in range(len(ds)))
    texts.append(repr(ds.skipped))
    texts.append(json.dumps(inspect_source(phi_tree)))
    assert main(["data", "inspect", str(phi_tree), "--json"]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert report["n_records"] == 5 and len(report["unreadable"]) == 1
    texts.extend([out.out, out.err])
    assert main(["data", "inspect", str(phi_tree / "test" / "abnormal" / "e.dcm")]) == 0
    out = capsys.readouterr()
    texts.extend([out.out, out.err])
    texts.extend(errors)
    texts.append(caplog.text)
    texts.extend(rec.getMessage() for rec in caplog.records)
    assert caplog.records, "the skip path logs a warning; the log text must be checked too"
    _assert_clean("\n".join(texts), canaries)


def test_redact_scrubs_error_text(dicom_testdata, canaries):
    import pydicom

    from medrobust.data.readers.dicom import redact

    ds = pydicom.dcmread(dicom_testdata("CT_small.dcm"))
    for key, value in canaries.items():
        setattr(ds, key, value)
    text = f"failed for {canaries['PatientName']} / {canaries['PatientID']} at {canaries['InstitutionName']}"
    clean = redact(text, ds)
    _assert_clean(clean, canaries)
    assert clean.count("<redacted>") == 3
