"""Hostile data files through the CLI: manifests, labels, links, devices, decoded-size bombs, phantoms.

Most cases run ``data inspect``. Exit code 2 where the source itself is unusable (an empty or
malformed manifest, impossible labels, a single class, a device); exit 0 where one file is
unreadable and ``data inspect`` correctly lists it (a bomb, a mislabelled DICOM, a link loop)
beside readable ones. One-class and train/test-leak cases run ``train classifier`` and must fail
while the data are opened, before training starts.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ._case import Call, hostile

_TRAIN = ["train", "classifier", "--modality", "chest_xray", "--epochs", "1", "--device", "cpu"]


def _out(d: Path) -> str:
    return str(d / "out")


def _train(d: Path, data: Path) -> list[str]:
    return [*_TRAIN, "--data", str(data), "--out", _out(d)]


def _inspect(path: Path | str, *extra: str) -> list[str]:
    return ["data", "inspect", str(path), *extra]


# --- file builders ---------------------------------------------------------------------------


def png(path: Path, value: int = 0, size: int = 16) -> Path:
    """A real grey PNG."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_bomb(path: Path, width: int, height: int) -> Path:
    """A few hundred bytes of PNG whose header declares ``width`` x ``height`` grey pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def jpeg_header_bomb(path: Path, width: int, height: int) -> Path:
    """A small JPEG whose SOF0 marker is patched to declare ``width`` x ``height``."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def pydicom_file(name: str) -> Path:
    """A DICOM file shipped inside pydicom (never downloaded)."""
    import pydicom.data

    local = Path(pydicom.data.__file__).parent / "test_files" / name
    assert local.is_file(), f"{name} is not shipped with pydicom"
    return local


def dicom(path: Path, name: str = "CT_small.dcm", **elements: object) -> Path:
    """A copy of a pydicom test file with some elements changed."""
    import pydicom

    ds = pydicom.dcmread(pydicom_file(name))
    for key, value in elements.items():
        setattr(ds, key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return path


def dicom_corrupt_frame(path: Path, name: str) -> Path:
    """A compressed pydicom test file whose first frame is cut to its first bytes plus zeros."""
    import pydicom
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(pydicom_file(name))
    frame = next(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))
    ds.PixelData = encapsulate([frame[:2] + b"\x00" * 50])
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return path


def nifti_header_bomb(path: Path, shape: tuple[int, ...]) -> Path:
    """A gzipped NIfTI header declaring ``shape`` (uint8) followed by a few bytes of data."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    raw = header.binaryblock + b"\x00" * 4 + b"\x00" * 1024
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def npz(path: Path, labels: object, n: int = 6) -> Path:
    """A MedMNIST-layout npz with ``train_images`` and the given ``train_labels``."""
    images = np.zeros((n, 8, 8), np.uint8)
    np.savez(path, train_images=images, train_labels=np.asarray(labels).reshape(n, -1))
    return path


def image_csv(d: Path, rows: list[str], name: str = "labels.csv", n_images: int = 4) -> Path:
    """``images/0.png`` .. and a manifest with ``rows`` under the header ``path,label``."""
    for i in range(n_images):
        png(d / "images" / f"{i}.png", value=(40 * i) % 256)
    path = d / name
    path.write_text("path,label\n" + "".join(r + "\n" for r in rows), encoding="utf-8")
    return path


def two_class_tree(d: Path, name: str = "tree") -> Path:
    """``tree/a/*.png`` and ``tree/b/*.png`` with three readable images each."""
    root = d / name
    for cls in ("a", "b"):
        for i in range(3):
            png(root / cls / f"{i}.png", value=30 * i)
    return root


# --- CSV manifests ---------------------------------------------------------------------------


@hostile("data-csv-zero-byte")
def _csv_zero(d: Path) -> Call:
    (d / "empty.csv").write_bytes(b"")
    return Call(_inspect(d / "empty.csv"), names=("empty.csv",))


@hostile("data-csv-only-blank-lines")
def _csv_blank(d: Path) -> Call:
    (d / "blank.csv").write_text("\n\n  \n", encoding="utf-8")
    return Call(_inspect(d / "blank.csv"), names=("blank.csv",))


@hostile("data-csv-binary-nul-bytes")
def _csv_binary(d: Path) -> Call:
    (d / "data.csv").write_bytes(b"path,label\n\x00\x01\x02\x00" * 50)
    return Call(_inspect(d / "data.csv"), names=("data.csv",))


@hostile("data-csv-latin1-not-utf8")
def _csv_latin1(d: Path) -> Call:
    png(d / "r\xe9sum\xe9.png")
    (d / "data.csv").write_bytes("path,label\nr\xe9sum\xe9.png,0\n".encode("latin-1"))
    return Call(_inspect(d / "data.csv"), names=("data.csv",))


@hostile("data-csv-one-column-not-split-on-t")
def _csv_one_column(d: Path) -> Call:
    png(d / "test.png")
    png(d / "tt.png")
    (d / "one.csv").write_text("path\ntest.png\ntt.png\n", encoding="utf-8")
    return Call(_inspect(d / "one.csv"), names=("one.csv",))


@hostile("data-csv-extra-fields")
def _csv_extra(d: Path) -> Call:
    path = image_csv(d, ["images/0.png,0", "images/1.png,1,oops,more"])
    return Call(_inspect(path), names=("labels.csv",))


@hostile("data-csv-label-1e9")
def _csv_label_1e9(d: Path) -> Call:
    path = image_csv(d, ["images/0.png,0", "images/1.png,1e9"])
    return Call(_inspect(path), names=("1e9",), bomb=True)


@hostile("data-csv-label-1000000000")
def _csv_label_billion(d: Path) -> Call:
    path = image_csv(d, ["images/0.png,0", "images/1.png,1000000000"])
    return Call(_inspect(path), names=("1000000000",), bomb=True)


@hostile("data-csv-label-1e7-train")
def _csv_label_1e7(d: Path) -> Call:
    path = image_csv(d, ["images/0.png,0", "images/1.png,1", "images/2.png,1e7"])
    return Call(_train(d, path), names=("1e7",))


@hostile("data-csv-label-negative")
def _csv_label_negative(d: Path) -> Call:
    path = image_csv(d, ["images/0.png,0", "images/1.png,-1"])
    return Call(_inspect(path), names=("labels.csv",))


@hostile("data-csv-label-fraction")
def _csv_label_fraction(d: Path) -> Call:
    path = image_csv(d, ["images/0.png,0", "images/1.png,0.5"])
    return Call(_inspect(path), names=("labels.csv",))


@hostile("data-csv-label-nan")
def _csv_label_nan(d: Path) -> Call:
    path = image_csv(d, ["images/0.png,0", "images/1.png,nan"])
    return Call(_inspect(path), names=("labels.csv",))


@hostile("data-csv-duplicate-row-train")
def _csv_duplicate(d: Path) -> Call:
    path = image_csv(d, ["images/0.png,0", "images/1.png,1", "images/2.png,0", "images/0.png,0"])
    return Call(_train(d, path), names=("lines 2 and 5",))


@hostile("data-csv-conflicting-labels-train")
def _csv_conflict(d: Path) -> Call:
    path = image_csv(d, ["images/0.png,0", "images/1.png,1", "images/0.png,1"])
    return Call(_train(d, path), names=("line 2",))


@hostile("data-csv-duplicates-leak-across-splits")
def _csv_leak(d: Path) -> Call:
    """The tester's case: 20 files, 12 of them listed twice (they landed in two splits)."""
    rows = [f"images/{i}.png,{i % 2}" for i in range(20)] + [f"./images/{i}.png,{i % 2}" for i in range(12)]
    path = image_csv(d, rows, n_images=20)
    return Call(_train(d, path), names=("labels.csv",))


@hostile("data-csv-duplicate-row-semicolon")
def _csv_duplicate_semicolon(d: Path) -> Call:
    png(d / "a.png")
    png(d / "b.png", 90)
    (d / "m.csv").write_text("path;label\na.png;x\nb.png;y\na.png;x\n", encoding="utf-8")
    return Call(_inspect(d / "m.csv"), names=("m.csv",))


@hostile("data-csv-path-escapes-dotdot")
def _csv_escape(d: Path) -> Call:
    path = image_csv(d, ["images/0.png,0", "../../../../../../etc/passwd,1"])
    return Call(_inspect(path), names=("../../../../../../etc/passwd",))


@hostile("data-csv-path-absolute-outside")
def _csv_absolute(d: Path) -> Call:
    path = image_csv(d, ["images/0.png,0", "/etc/passwd,1"])
    return Call(_inspect(path), names=("/etc/passwd",))


@hostile("data-csv-tab-path-escapes")
def _csv_escape_tab(d: Path) -> Call:
    png(d / "in" / "a.png")
    png(d / "outside.png")
    (d / "in" / "m.csv").write_text("path\tlabel\na.png\t0\n../outside.png\t1\n", encoding="utf-8")
    return Call(_inspect(d / "in" / "m.csv"), names=("../outside.png",))


@hostile("data-csv-one-class-train")
def _csv_one_class(d: Path) -> Call:
    path = image_csv(d, ["images/0.png,normal", "images/1.png,normal", "images/2.png,normal"])
    return Call(_train(d, path), names=("found 1 class",))


@hostile("data-csv-missing-file-listed")
def _csv_missing(d: Path) -> Call:
    path = image_csv(d, ["images/0.png,0", "images/1.png,1", "images/2.png,0", "images/nope.png,1"])
    return Call(_inspect(path), exit_code=0)


@hostile("data-csv-lists-a-fifo")
def _csv_fifo(d: Path) -> Call:
    os.mkfifo(d / "pipe.png")
    path = image_csv(d, ["images/0.png,0", "images/1.png,1", "pipe.png,0"])
    return Call(_inspect(path), exit_code=0)


# --- npz labels and files --------------------------------------------------------------------


@hostile("data-npz-label-1e9-float")
def _npz_1e9(d: Path) -> Call:
    path = npz(d / "big.npz", np.array([0, 1, 0, 1, 0, 1e9]))
    return Call(_inspect(path), names=("big.npz",), bomb=True)


@hostile("data-npz-label-1e7-int")
def _npz_1e7(d: Path) -> Call:
    path = npz(d / "big7.npz", np.array([0, 1, 0, 1, 0, 10**7], np.int64))
    return Call(_inspect(path), names=("10000000",))


@hostile("data-npz-label-negative")
def _npz_negative(d: Path) -> Call:
    path = npz(d / "neg.npz", np.array([0, 1, -4, 1, 0, 1], np.int16))
    return Call(_inspect(path), names=("neg.npz",))


@hostile("data-npz-label-fraction")
def _npz_fraction(d: Path) -> Call:
    path = npz(d / "frac.npz", np.array([0, 1, 0.5, 1, 0, 1], np.float32))
    return Call(_inspect(path), names=("frac.npz",))


@hostile("data-npz-label-uint64-huge")
def _npz_uint64(d: Path) -> Call:
    path = npz(d / "u64.npz", np.array([0, 1, 2**63 + 7, 1, 0, 1], np.uint64))
    return Call(_inspect(path), names=("u64.npz",))


@hostile("data-npz-object-labels")
def _npz_object(d: Path) -> Call:
    labels = np.empty(6, dtype=object)
    labels[:] = [0, 1, {"x": 1}, 1, 0, 1]
    np.savez(d / "obj.npz", train_images=np.zeros((6, 8, 8), np.uint8), train_labels=labels)
    return Call(_inspect(d / "obj.npz"), names=("obj.npz",))


@hostile("data-npz-zero-byte")
def _npz_zero(d: Path) -> Call:
    (d / "empty.npz").write_bytes(b"")
    return Call(_inspect(d / "empty.npz"), names=("empty.npz",))


@hostile("data-npz-truncated")
def _npz_truncated(d: Path) -> Call:
    path = npz(d / "full.npz", np.array([0, 1, 0, 1, 0, 1]))
    (d / "cut.npz").write_bytes(path.read_bytes()[:300])
    return Call(_inspect(d / "cut.npz"), names=("cut.npz",))


@hostile("data-npz-one-class-inspect")
def _npz_one_class(d: Path) -> Call:
    path = npz(d / "one.npz", np.zeros(6, np.uint8))
    return Call(_inspect(path), names=("found 1 class",))


# --- folders, links, devices -----------------------------------------------------------------


@hostile("data-folder-one-class-train")
def _folder_one_class_train(d: Path) -> Call:
    for i in range(4):
        png(d / "data" / "pneumonia" / f"{i}.png", 20 * i)
    return Call(_train(d, d / "data"), names=("found 1 class",))


@hostile("data-folder-one-class-with-splits-inspect")
def _folder_one_class_inspect(d: Path) -> Call:
    for split in ("train", "test"):
        for i in range(2):
            png(d / "data" / split / "NORMAL" / f"{i}.png", 20 * i)
    return Call(_inspect(d / "data"), names=("found 1 class",))


@hostile("data-folder-symlink-loop-listed")
def _symlink_loop_inspect(d: Path) -> Call:
    root = two_class_tree(d)
    os.symlink("loop.png", root / "a" / "loop.png")
    return Call(_inspect(root), exit_code=0)


@hostile("data-folder-symlink-loop-train")
def _symlink_loop_train(d: Path) -> Call:
    root = two_class_tree(d)
    os.symlink("loop.png", root / "a" / "loop.png")
    return Call(_train(d, root), names=("loop.png",))


@hostile("data-folder-broken-symlink-listed")
def _broken_link(d: Path) -> Call:
    root = two_class_tree(d)
    os.symlink(d / "gone.png", root / "b" / "gone.png")
    return Call(_inspect(root, "--modality", "chest_xray"), exit_code=0)


@hostile("data-dev-null")
def _dev_null(d: Path) -> Call:
    return Call(_inspect("/dev/null"), names=("/dev/null",))


@hostile("data-fifo-named-csv")
def _fifo_csv(d: Path) -> Call:
    os.mkfifo(d / "manifest.csv")
    return Call(_inspect(d / "manifest.csv"), names=("manifest.csv",))


@hostile("data-folder-zero-byte-and-truncated-png")
def _bad_pngs(d: Path) -> Call:
    root = two_class_tree(d)
    (root / "a" / "zero.png").write_bytes(b"")
    good = (root / "b" / "0.png").read_bytes()
    (root / "b" / "cut.png").write_bytes(good[: len(good) // 2])
    return Call(_inspect(root), exit_code=0)


# --- decoded-size bombs ----------------------------------------------------------------------


@hostile("data-png-bomb-12000")
def _png_bomb(d: Path) -> Call:
    root = two_class_tree(d)
    png_header_bomb(root / "a" / "bomb.png", 12000, 12000)
    return Call(_inspect(root, "--modality", "chest_xray"), exit_code=0, bomb=True)


@hostile("data-png-bomb-20000-pillow-limit")
def _png_bomb_pillow(d: Path) -> Call:
    root = two_class_tree(d)
    png_header_bomb(root / "b" / "huge.png", 20000, 20000)
    return Call(_inspect(root), exit_code=0)


@hostile("data-png-bomb-in-csv-train")
def _png_bomb_train(d: Path) -> Call:
    png_header_bomb(d / "images" / "0.png", 12000, 12000)
    path = image_csv(d, ["images/0.png,0", "images/1.png,1", "images/2.png,0", "images/3.png,1"], n_images=0)
    for i in range(1, 4):
        png(d / "images" / f"{i}.png", 50 * i)
    return Call(_train(d, path), names=("0.png",))


@hostile("data-jpeg-bomb-12000")
def _jpeg_bomb(d: Path) -> Call:
    root = two_class_tree(d)
    jpeg_header_bomb(root / "b" / "bomb.jpg", 12000, 12000)
    return Call(_inspect(root), exit_code=0)


@hostile("data-dicom-bomb-rows-columns")
def _dicom_bomb(d: Path) -> Call:
    path = dicom(d / "bomb.dcm", Rows=12000, Columns=12000)
    return Call(_inspect(path), exit_code=0)


@hostile("data-dicom-bomb-jpeg-compressed")
def _dicom_bomb_jpeg(d: Path) -> Call:
    dicom(d / "scans" / "ok.dcm")
    dicom(d / "scans" / "bomb.dcm", "SC_rgb_jpeg_dcmtk.dcm", Rows=12000, Columns=12000)
    return Call(_inspect(d / "scans"), exit_code=0)


@hostile("data-nifti-bomb-gz")
def _nifti_bomb(d: Path) -> Call:
    path = nifti_header_bomb(d / "bomb.nii.gz", (12000, 12000, 3))
    return Call(_inspect(path), exit_code=0)


@hostile("data-nifti-bomb-uncompressed")
def _nifti_bomb_raw(d: Path) -> Call:
    path = nifti_header_bomb(d / "bomb.nii", (30000, 30000, 2))
    return Call(_inspect(path), exit_code=0)


# --- DICOM and NIfTI content -----------------------------------------------------------------


@hostile("data-dicom-mislabelled-bits-allocated")
def _dicom_mislabelled(d: Path) -> Call:
    dicom(d / "scans" / "ok.dcm")
    dicom(d / "scans" / "mislabelled.dcm", BitsAllocated=8, BitsStored=8, HighBit=7)
    return Call(_inspect(d / "scans"), exit_code=0)


@hostile("data-dicom-pixel-data-truncated")
def _dicom_short(d: Path) -> Call:
    import pydicom

    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.PixelData = ds.PixelData[:1000]
    ds.save_as(d / "short.dcm")
    return Call(_inspect(d / "short.dcm"), exit_code=0)


@hostile("data-dicom-frames-1e9")
def _dicom_frames(d: Path) -> Call:
    path = dicom(d / "frames.dcm", NumberOfFrames=1_000_000_000)
    return Call(_inspect(path), exit_code=0)


@hostile("data-dicom-corrupt-jpeg")
def _dicom_corrupt_jpeg(d: Path) -> Call:
    dicom(d / "scans" / "ok.dcm")
    dicom_corrupt_frame(d / "scans" / "bad_jpeg.dcm", "SC_rgb_jpeg_dcmtk.dcm")
    return Call(_inspect(d / "scans"), exit_code=0)


@hostile("data-dicom-corrupt-jpeg2000")
def _dicom_corrupt_j2k(d: Path) -> Call:
    dicom(d / "scans" / "ok.dcm")
    dicom_corrupt_frame(d / "scans" / "bad_j2k.dcm", "MR_small_jp2klossless.dcm")
    return Call(_inspect(d / "scans"), exit_code=0)


@hostile("data-dicom-zero-byte")
def _dicom_zero(d: Path) -> Call:
    (d / "empty.dcm").write_bytes(b"")
    return Call(_inspect(d / "empty.dcm"), exit_code=0)


@hostile("data-nifti-zero-byte")
def _nifti_zero(d: Path) -> Call:
    (d / "empty.nii.gz").write_bytes(b"")
    return Call(_inspect(d / "empty.nii.gz"), exit_code=0)


# --- phantoms ------------------------------------------------------------------------------


@hostile("data-phantom-n-billion")
def _phantom_billion(d: Path) -> Call:
    argv = ["data", "phantom", "--modality", "chest_xray", "--samples", "1000000000", "--out", _out(d)]
    return Call(argv, names=("'n'",), bomb=True)


@hostile("data-phantom-n-zero")
def _phantom_zero(d: Path) -> Call:
    return Call(["data", "phantom", "--modality", "skin", "--samples", "0", "--out", _out(d)], names=("'n'",))


@hostile("data-phantom-npz-too-big-for-memory")
def _phantom_npz_memory(d: Path) -> Call:
    argv = ["data", "phantom", "-m", "skin", "-n", "1000000", "--size", "512", "-f", "npz", "--out", _out(d)]
    return Call(argv, names=("'n'",))
