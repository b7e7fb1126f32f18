"""Hostile data inputs: each ends as a DataError/ConfigError naming the file or value (or a listed skip)."""

from __future__ import annotations

import gzip
import io
import logging
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from medrobust.cli.main import main
from medrobust.data import inspect_source, load_arrays, make_dataset, open_source
from medrobust.errors import ConfigError, DataError
from medrobust.limits import MAX_CLASSES, MAX_IMAGE_PIXELS, MAX_PHANTOM_IMAGES


def _png(path: Path, value: int = 0, shape: tuple[int, ...] = (8, 8)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_bomb(path: Path, width: int, height: int) -> Path:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def _tree(root: Path, classes=("a", "b"), n: int = 2) -> Path:
    for c in classes:
        for i in range(n):
            _png(root / c / f"{i}.png", 40 * i)
    return root


def _manifest(tmp_path: Path, text: str, name: str = "m.csv", images: int = 4, encoding="utf-8") -> Path:
    for i in range(images):
        _png(tmp_path / f"{i}.png", (30 * i) % 256)
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


# --- 1. CSV manifests ------------------------------------------------------------------------


def test_zero_byte_and_blank_csv(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty") as info:
        open_source(empty)
    assert info.value.path == str(empty)
    blank = tmp_path / "blank.csv"
    blank.write_text("\n \n")
    with pytest.raises(DataError, match="blank") as info:
        open_source(blank)
    assert info.value.path == str(blank)


def test_bom_csv_from_excel_is_read(tmp_path):
    path = _manifest(tmp_path, "\ufeffpath,label\n0.png,cat\n1.png,dog\n2.png,cat\n3.png,dog\n")
    src = open_source(path)
    assert src.class_names == ["cat", "dog"] and len(src) == 4
    # A BOM with semicolons (Excel in many locales) too.
    semi = _manifest(tmp_path, "\ufeffpath;label\n0.png;0\n1.png;1\n", name="semi.csv")
    assert open_source(semi).class_names == ["0", "1"]


@pytest.mark.parametrize("sep", [",", "\t", ";"])
def test_delimiters(tmp_path, sep):
    path = _manifest(tmp_path, f"path{sep}label{sep}split\n0.png{sep}a{sep}train\n1.png{sep}b{sep}test\n")
    src = open_source(path)
    assert src.class_names == ["a", "b"] and src.split_info["kind"] == "own"


def test_one_column_csv_is_not_split_on_t(tmp_path):
    _png(tmp_path / "test.png")
    path = tmp_path / "one.csv"
    path.write_text("path\ntest.png\n")
    with pytest.raises(DataError, match=r"no 'label' column .* \['path'\]") as info:
        open_source(path)
    assert info.value.path == str(path)


def test_non_utf8_binary_and_ragged_csv(tmp_path):
    latin = _manifest(tmp_path, "path,label\n0.png,caf\xe9\n", name="latin.csv", encoding="latin-1")
    with pytest.raises(DataError, match="not UTF-8") as info:
        open_source(latin)
    assert info.value.path == str(latin)
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"path,label\n\x00\x00")
    with pytest.raises(DataError, match="NUL"):
        open_source(binary)
    ragged = _manifest(tmp_path, "path,label\n0.png,a\n1.png,b,c\n", name="ragged.csv")
    with pytest.raises(DataError, match="line 3 has 3 fields") as info:
        open_source(ragged)
    assert info.value.path == str(ragged)


def test_duplicate_rows_name_both_lines(tmp_path):
    path = _manifest(tmp_path, "path,label\n0.png,a\n1.png,b\n2.png,a\n./0.png,a\n")
    with pytest.raises(DataError, match=r"'\./0\.png' twice \(lines 2 and 5\)") as info:
        open_source(path)
    assert info.value.path == str(path)
    # Refused also when reading with on_error="skip" (data inspect): it is not a bad file.
    with pytest.raises(DataError, match="twice"):
        open_source(path, on_error="skip")


def test_one_file_two_labels(tmp_path):
    path = _manifest(tmp_path, "path,label\n0.png,a\n1.png,b\n0.png,b\n")
    with pytest.raises(DataError, match=r"two labels: 'a' on line 2 and 'b' on line 4") as info:
        open_source(path)
    assert info.value.path == str(path)


def test_duplicates_no_longer_leak_across_splits(tmp_path):
    rows = [f"{i}.png,{i % 2}" for i in range(20)] + [f"{i}.png,{i % 2}" for i in range(12)]
    path = _manifest(tmp_path, "path,label\n" + "\n".join(rows) + "\n", images=20)
    with pytest.raises(DataError, match=r"lines 2 and 22"):
        open_source(path)


def test_paths_outside_the_manifest_folder(tmp_path):
    inside = tmp_path / "set"
    _png(inside / "a.png")
    outside = _png(tmp_path / "elsewhere" / "b.png", 90)
    for rel in ("../elsewhere/b.png", str(outside), "../../../../../../etc/passwd"):
        path = inside / "m.csv"
        path.write_text(f"path,label\na.png,x\n{rel},y\n")
        with pytest.raises(DataError, match="outside the manifest's folder") as info:
            open_source(path)
        assert rel in str(info.value) and "allow_outside=True" in str(info.value)
    path.write_text("path,label\na.png,x\n../elsewhere/b.png,y\n")
    src = open_source(path, allow_outside=True)
    assert sorted(r.id for r in src.records()) == ["../elsewhere/b.png", "a.png"]
    with pytest.raises(ConfigError, match="'allow_outside'"):
        open_source(path, allow_outside="yes")


def test_csv_row_naming_a_fifo_is_listed(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    path = _manifest(tmp_path, "path,label\n0.png,a\n1.png,b\npipe.png,a\n")
    src = open_source(path, on_error="skip")
    assert src.skipped == [
        (
            str(tmp_path / "pipe.png"),
            "listed in m.csv line 4 but is not a regular file (a device, pipe or socket)",
        )
    ]


# --- 2. labels -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1e9", "1000000000", "1e7", str(MAX_CLASSES)])
def test_huge_csv_label_refused_before_building_classes(tmp_path, value):
    path = _manifest(tmp_path, f"path,label\n0.png,0\n1.png,{value}\n")
    with pytest.raises(DataError, match="MAX_CLASSES") as info:
        open_source(path)
    assert str(info.value).startswith(f"{path} line 3: label '{value}'")


@pytest.mark.parametrize(
    ("value", "why"), [("-1", "negative"), ("0.5", "not an integer"), ("nan", "not an integer")]
)
def test_bad_csv_labels(tmp_path, value, why):
    path = _manifest(tmp_path, f"path,label\n0.png,0\n1.png,{value}\n")
    with pytest.raises(DataError, match=why) as info:
        open_source(path)
    assert f"{path} line 3" in str(info.value) and repr(value) in str(info.value)


def test_too_many_distinct_label_names(tmp_path, monkeypatch):
    monkeypatch.setattr("medrobust.data.sources.csv.MAX_CLASSES", 3)
    path = _manifest(tmp_path, "path,label\n0.png,a\n1.png,b\n2.png,c\n3.png,d\n")
    with pytest.raises(DataError, match="4 distinct labels, more than MAX_CLASSES=3"):
        open_source(path)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.array([0, 1e9, 1]), "too large"),
        (np.array([0, 10**7, 1], np.int64), "10000000 is too large"),
        (np.array([0, -2, 1], np.int8), "-2 is negative"),
        (np.array([0, 1.5, 1], np.float32), "1.5 is not an integer"),
        (np.array([0, np.nan, 1]), "nan is not an integer"),
        (np.array([0, 2**63 + 1, 1], np.uint64), "too large"),
    ],
)
def test_npz_labels(tmp_path, labels, match):
    path = tmp_path / "labels.npz"
    np.savez(path, train_images=np.zeros((3, 8, 8), np.uint8), train_labels=labels.reshape(3, 1))
    with pytest.raises(DataError, match=match) as info:
        open_source(path)
    assert str(info.value).startswith(f"{path}[train_labels] row 1: label ")


def test_npz_object_labels_refused(tmp_path):
    labels = np.empty(3, dtype=object)
    labels[:] = [0, 1, [2]]
    path = tmp_path / "obj.npz"
    np.savez(path, train_images=np.zeros((3, 8, 8), np.uint8), train_labels=labels)
    with pytest.raises(DataError, match="allow_pickle=False") as info:
        open_source(path)
    assert str(path) in str(info.value)


def test_one_class_sources(tmp_path):
    folder = _tree(tmp_path / "one", classes=("pneumonia",))
    with pytest.raises(DataError, match=r"found 1 class \(folder 'pneumonia'\), need \u2265 2") as info:
        open_source(folder)
    assert info.value.path == str(folder)
    with pytest.raises(DataError, match=r"found 1 class \(pneumonia\), need \u2265 2"):
        open_source(folder, kind="folder")
    csv = _manifest(tmp_path, "path,label\n0.png,normal\n1.png,normal\n")
    with pytest.raises(DataError, match=r"found 1 class \(normal\)") as info:
        open_source(csv)
    assert info.value.path == str(csv)
    npz = tmp_path / "one.npz"
    np.savez(npz, train_images=np.zeros((3, 8, 8), np.uint8), train_labels=np.zeros((3, 1), np.uint8))
    with pytest.raises(DataError, match=r"found 1 class \(0\)"):
        open_source(npz)


def test_one_class_fails_train_before_training(tmp_path, capsys):
    folder = _tree(tmp_path / "one", classes=("pneumonia",))
    out = tmp_path / "run"
    argv = ["train", "classifier", "--data", str(folder), "--modality", "chest_xray", "--epochs", "1"]
    assert main([*argv, "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "found 1 class" in err and str(folder) in err and not out.exists()


# --- 3. links and devices --------------------------------------------------------------------


def test_self_referencing_symlink_in_a_class_folder(tmp_path):
    root = _tree(tmp_path / "tree")
    loop = root / "a" / "loop.png"
    os.symlink("loop.png", loop)
    with pytest.raises(DataError, match="points to itself or into a loop") as info:
        open_source(root)
    assert info.value.path == str(loop)
    src = open_source(root, on_error="skip")
    assert [p for p, _ in src.skipped] == [str(loop)] and len(src) == 4
    report = inspect_source(root)
    assert [u["path"] for u in report["unreadable"]] == ["a/loop.png"] and report["n_read"] == 4


def test_broken_symlink_is_listed(tmp_path):
    root = _tree(tmp_path / "tree")
    os.symlink(tmp_path / "gone.png", root / "b" / "gone.png")
    src = open_source(root, on_error="skip")
    assert src.skipped == [
        (str(root / "b" / "gone.png"), "is a broken symbolic link (its target does not exist)")
    ]


def test_devices_and_pipes_are_named(tmp_path):
    with pytest.raises(DataError, match="character device") as info:
        open_source("/dev/null")
    assert info.value.path == "/dev/null"
    fifo = tmp_path / "labels.csv"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="named pipe") as info:
        open_source(fifo)  # would block forever if it were opened
    assert info.value.path == str(fifo)
    loop = tmp_path / "loop.csv"
    os.symlink("loop.csv", loop)
    with pytest.raises(DataError, match="cannot be opened") as info:
        open_source(loop)
    assert info.value.path == str(loop)


def test_inspect_dev_null_cli(capsys):
    assert main(["data", "inspect", "/dev/null"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: /dev/null: is a character device") and len(err.strip().splitlines()) == 1


# --- 4. decoded-size bombs -------------------------------------------------------------------


def test_check_decoded_size_limit():
    from medrobust.data.readers.pil import check_decoded_size

    check_decoded_size("f.png", (8192, 8192))
    with pytest.raises(DataError, match=r"8192 x 8193 = 67117056 pixels, more than MAX_IMAGE_PIXELS") as info:
        check_decoded_size("f.png", (8192, 8193))
    assert info.value.path == "f.png"
    assert MAX_IMAGE_PIXELS == 8192 * 8192


@pytest.mark.parametrize(
    ("side", "shown"), [(12000, "12000 x 12000 = 144000000 pixels"), (20000, "400000000")]
)
def test_png_bomb_refused_from_the_header(tmp_path, side, shown):
    root = _tree(tmp_path / "tree")
    bomb = _png_bomb(root / "a" / "bomb.png", side, side)
    assert bomb.stat().st_size < 1000
    src = open_source(root)
    rec = next(r for r in src.records() if r.path == bomb)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DataError, match="MAX_IMAGE_PIXELS") as info:
            src.load(rec)
    assert info.value.path == str(bomb) and shown in info.value.reason
    assert not [w for w in caught if "DecompressionBomb" in type(w.message).__name__]  # our message only


def test_jpeg_bomb_refused_from_the_header(tmp_path):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", 12000, 12000)
    root = _tree(tmp_path / "tree")
    bomb = root / "b" / "bomb.jpg"
    bomb.write_bytes(bytes(data))
    report = inspect_source(root)
    assert (
        report["unreadable"] == [{"path": "b/bomb.jpg", "reason": report["unreadable"][0]["reason"]}]
        and "12000 x 12000" in report["unreadable"][0]["reason"]
    )


def test_dicom_bomb_refused_from_the_header(dicom_copy):
    path = dicom_copy("CT_small.dcm", "bomb.dcm", Rows=12000, Columns=12000)
    with pytest.raises(DataError, match="12000 x 12000 = 144000000 pixels") as info:
        _only_record_of(path)
    assert info.value.path == str(path)
    jpeg = dicom_copy("SC_rgb_jpeg_dcmtk.dcm", "bomb_jpeg.dcm", Rows=12000, Columns=12000)
    with pytest.raises(DataError, match="MAX_IMAGE_PIXELS") as info:
        _only_record_of(jpeg)
    assert info.value.path == str(jpeg)


def _only_record_of(path, **options):
    src = open_source(path, **options)
    return src.load(src.records()[0])


def _nifti_header(path: Path, shape: tuple[int, ...]) -> Path:
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    raw = header.binaryblock + b"\x00" * 4 + b"\x00" * 512
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def test_nifti_bomb_refused_from_the_header(tmp_path):
    for name in ("bomb.nii.gz", "bomb.nii"):
        path = _nifti_header(tmp_path / name, (12000, 12000, 3))
        with pytest.raises(DataError, match="12000 x 12000 = 144000000 pixels") as info:
            _only_record_of(path)
        assert info.value.path == str(path)
    # A volume read whole counts all its voxels; its middle slice alone is fine.
    vol = _nifti_header(tmp_path / "vol.nii.gz", (4096, 4096, 8))
    with pytest.raises(DataError, match="4096 x 4096 x 8"):
        _only_record_of(vol, slice="volume")


def test_frame_count_bomb_with_frame_all(dicom_copy):
    path = dicom_copy("CT_small.dcm", "frames.dcm", NumberOfFrames=1_000_000_000)
    with pytest.raises(DataError, match="1000000000 frames") as info:
        open_source(path, frame="all")
    assert info.value.path == str(path)


# --- 5. DICOM pixel data and decoder output --------------------------------------------------


def test_mislabelled_bits_allocated_refused(dicom_copy):
    path = dicom_copy("CT_small.dcm", "mislabelled.dcm", BitsAllocated=8, BitsStored=8, HighBit=7)
    with pytest.raises(DataError, match=r"pixel data holds 32768 bytes.* = 16384") as info:
        _only_record_of(path)
    assert info.value.path == str(path)
    with pytest.raises(DataError, match="pixel data holds"):
        _only_record_of(path, frame="volume")


def test_truncated_pixel_data_refused(tmp_path, dicom_testdata):
    import pydicom

    ds = pydicom.dcmread(dicom_testdata("CT_small.dcm"))
    ds.PixelData = ds.PixelData[:1000]
    path = tmp_path / "short.dcm"
    ds.save_as(path)
    with pytest.raises(DataError, match="pixel data holds 1000 bytes") as info:
        _only_record_of(path)
    assert info.value.path == str(path)


@pytest.mark.parametrize("name", ["SC_rgb_jpeg_dcmtk.dcm", "MR_small_jp2klossless.dcm", "JPEG2000.dcm"])
def test_corrupt_compressed_dicom_prints_nothing(tmp_path, dicom_testdata, capsys, name):
    import pydicom
    from pydicom.encaps import encapsulate, generate_frames

    logging.basicConfig(level=logging.WARNING)  # as the CLI does: decoder records would reach stderr
    ds = pydicom.dcmread(dicom_testdata(name))
    frame = next(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))
    ds.PixelData = encapsulate([frame[:2] + b"\x00" * 50])
    path = tmp_path / "bad.dcm"
    ds.save_as(path)
    with pytest.raises(DataError, match="cannot decode pixel data") as info:
        _only_record_of(path)
    assert info.value.path == str(path) and "\n" not in info.value.reason
    cap = capsys.readouterr()
    assert cap.err == "" and cap.out == ""


def test_decoder_output_is_captured():
    from medrobust.data.readers.dicom import decoder_output

    with decoder_output() as notes:
        logging.getLogger("pydicom.pixels.decoders.base").error("libjpeg error: bad marker")
        warnings.warn("odd length", UserWarning, stacklevel=1)
    assert notes == ["libjpeg error: bad marker", "odd length"]
    assert logging.getLogger("pydicom").propagate is True


# --- 6. MONAI-wrapped errors and the image cache ---------------------------------------------


def test_preset_error_reaches_the_caller_unwrapped(tmp_path, nifti_file):
    path = nifti_file(np.ones((8, 8, 4), np.float32), "vol.nii.gz")
    ds = make_dataset(path, preset="chest_xray", slice="volume")
    with pytest.raises(DataError, match="expects an image") as info:
        ds[0]
    assert type(info.value) is DataError and "vol.nii.gz" in str(info.value)


class _Preset:
    """A stand-in preset whose pipeline fails (or produces NaN) inside MONAI's Compose."""

    def __init__(self, fail: str) -> None:
        self.fail = fail

    def transform(self, spatial_size=None, augment=False):
        from monai.transforms import Compose, Lambdad

        def step(img):
            if self.fail == "value":
                raise ValueError("bad geometry")
            if self.fail == "data":
                raise DataError("inner.png", "inner problem")
            return np.full_like(np.asarray(img), np.nan)

        return Compose([Compose([Lambdad(keys="image", func=step)])])


def test_transform_errors_name_the_file(tmp_path):
    root = _tree(tmp_path / "tree")
    ds = make_dataset(root, preset=_Preset("data"))
    with pytest.raises(DataError, match="inner problem") as info:
        ds[0]
    assert info.value.path == "inner.png"
    ds = make_dataset(root, preset=_Preset("value"))
    with pytest.raises(DataError, match=r"preprocessing failed \(ValueError: bad geometry\)") as info:
        ds[0]
    assert info.value.path == str(ds.data[0].path)


def test_dataloader_worker_keeps_the_data_error(tmp_path):
    from torch.utils.data import DataLoader

    from medrobust.data.dataset import WorkerDataError, collate_samples

    root = _tree(tmp_path / "tree")
    bad = root / "b" / "1.png"
    bad.write_bytes(bad.read_bytes()[:40])
    ds = make_dataset(root)
    order = [i for i, r in enumerate(ds.data) if r.path == bad]
    loader = DataLoader(ds, batch_size=1, num_workers=1, collate_fn=collate_samples, sampler=order)
    with pytest.raises(DataError) as info:
        next(iter(loader))
    assert isinstance(info.value, WorkerDataError)
    assert info.value.path == str(bad) and "Traceback" not in str(info.value)
    assert WorkerDataError("just text").path == "<DataLoader worker>"


def test_image_cache_recomputes_non_finite_files(tmp_path, caplog):
    from medrobust.data.item_cache import CachedImages

    root = _tree(tmp_path / "tree")
    cache = CachedImages(make_dataset(root, preset="chest_xray"), tmp_path / "cache")
    first = cache[0]["image"].clone()
    path = cache.path(0)
    poisoned = np.load(path)
    poisoned[0, 0, 0] = np.nan
    np.save(path, poisoned)
    caplog.set_level(logging.WARNING)
    again = CachedImages(make_dataset(root, preset="chest_xray"), tmp_path / "cache")
    item = again[0]["image"]
    assert again.misses == 1 and again.hits == 0 and bool(item.isfinite().all())
    assert np.array_equal(item.numpy(), first.numpy()) and "non-finite" in caplog.text
    assert np.isfinite(np.load(path)).all()  # rewritten clean


def test_image_cache_never_stores_nan(tmp_path):
    from medrobust.data.item_cache import CachedImages

    root = _tree(tmp_path / "tree")
    cache = CachedImages(make_dataset(root, preset=_Preset("nan")), tmp_path / "cache")
    with pytest.raises(DataError, match="NaN/Inf") as info:
        cache[0]
    assert info.value.path == str(cache.dataset.data[0].path) and not cache.path(0).exists()


def test_source_image_decoding_to_nan_is_refused(tmp_path):
    from PIL import Image

    root = _tree(tmp_path / "tree")
    arr = np.zeros((8, 8), np.float32)
    arr[2, 2] = np.nan
    bad = root / "a" / "nan.tiff"
    Image.fromarray(arr, mode="F").save(bad)
    ds = make_dataset(root, on_error="skip")
    assert [(p, r.split(" (")[0]) for p, r in ds.skipped] == [(str(bad), "contains non-finite pixel values")]
    assert load_arrays(ds)[0].shape[0] == 4


# --- 7. phantoms -----------------------------------------------------------------------------


def test_phantom_count_capped_before_allocating(tmp_path):
    from medrobust.data.phantoms import make_phantom, write_phantom

    with pytest.raises(ConfigError, match=rf"'n' parameter .* \[1, {MAX_PHANTOM_IMAGES}\]\. Got 1000000000"):
        make_phantom("chest_xray", n=10**9)
    with pytest.raises(ConfigError, match="'n' parameter of write_phantom"):
        write_phantom("chest_xray", 10**9, 64, "png", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match=r"'n' and 'size' parameters of make_phantom .* GiB in memory"):
        make_phantom("skin", n=MAX_PHANTOM_IMAGES, size=512)
    with pytest.raises(ConfigError, match="'n' and 'size'"):
        write_phantom("skin", MAX_PHANTOM_IMAGES, 512, "npz", tmp_path / "npz")
    assert not (tmp_path / "npz").exists()


def test_phantom_cli_refuses_billion_and_hides_progress(tmp_path, capsys):
    assert (
        main(["data", "phantom", "-m", "chest_xray", "-n", "1000000000", "--out", str(tmp_path / "a")]) == 2
    )
    err = capsys.readouterr().err
    assert "'n'" in err and "1000000000" in err and not (tmp_path / "a").exists()
    argv = ["data", "phantom", "-m", "chest_xray", "--samples", "201", "--size", "28", "--format", "npz"]
    assert main([*argv, "--out", str(tmp_path / "quiet"), "--no-progress"]) == 0
    cap = capsys.readouterr()
    assert cap.err == "" and "wrote 201" in cap.out
    assert main([*argv, "--out", str(tmp_path / "loud")]) == 0
    assert "img" in capsys.readouterr().err  # the bar is shown without --no-progress
