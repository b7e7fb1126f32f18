"""Hostile data specs and orientation tags: ``phantom:``/``medmnist:`` specs, NIfTI affines, EXIF.

Bad specs must fail while the spec is read, before anything is generated or allocated (a phantom
spec asking for a billion images, or 244 GiB in memory, is one line naming ``'n'``), and a
``medmnist:`` spec never downloads: a missing file is one line naming the file to place. Broken
orientation metadata (a NaN or singular NIfTI affine, EXIF Orientation 42 or a garbage EXIF
block) never makes an image unreadable: it is read as stored (exit 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medrobust.data.specs import phantom_npz_path

from ._case import Call, hostile

_TRAIN = ["train", "classifier", "--modality", "chest_xray", "--epochs", "1", "--device", "cpu"]


def _inspect(spec: str, *extra: str) -> list[str]:
    return ["data", "inspect", spec, *extra]


def _train(d: Path, spec: str) -> list[str]:
    return [*_TRAIN, "--data", spec, "--out", str(d / "out")]


# --- phantom: --------------------------------------------------------------------------------


#: The cache folder of ``phantom:chest_xray?n=40&size=32`` (its name ends in the generator's code tag).
_CHEST_SET = phantom_npz_path("chest_xray", 40, 32, 0).parent.name


@hostile("data-spec-phantom-n-billion")
def _phantom_billion(d: Path) -> Call:
    return Call(_inspect("phantom:chest_xray?n=1000000000"), names=("'n'",), bomb=True)


@hostile("data-spec-phantom-244-gib-in-memory")
def _phantom_memory(d: Path) -> Call:
    return Call(_inspect("phantom:chest_xray?n=1000000&size=512"), names=("'n'",))


@hostile("data-spec-phantom-unknown-modality")
def _phantom_modality(d: Path) -> Call:
    return Call(_inspect("phantom:chest_xrya"), names=("chest_xrya",))


@hostile("data-spec-phantom-unknown-option")
def _phantom_option(d: Path) -> Call:
    return Call(_inspect("phantom:chest_xray?sise=64"), names=("sise",))


@hostile("data-spec-phantom-n-not-a-number")
def _phantom_n_text(d: Path) -> Call:
    return Call(_inspect("phantom:chest_xray?n=lots"), names=("'n'",))


@hostile("data-spec-phantom-n-1e9-float-text")
def _phantom_n_float(d: Path) -> Call:
    return Call(_inspect("phantom:chest_xray?n=1e9"), names=("'n'",))


@hostile("data-spec-phantom-size-4")
def _phantom_size(d: Path) -> Call:
    return Call(_inspect("phantom:chest_xray@4"), names=("'size'",))


@hostile("data-spec-phantom-negative-seed")
def _phantom_seed(d: Path) -> Call:
    return Call(_inspect("phantom:skin?seed=-5"), names=("'seed'",))


@hostile("data-spec-phantom-option-without-value")
def _phantom_malformed(d: Path) -> Call:
    return Call(_inspect("phantom:chest_xray?n"), names=("KEY=VALUE",))


@hostile("data-spec-phantom-no-modality")
def _phantom_empty(d: Path) -> Call:
    return Call(_inspect("phantom:"), names=("phantom:",))


@hostile("data-spec-phantom-kind-folder")
def _phantom_kind(d: Path) -> Call:
    return Call(_inspect("phantom:chest_xray", "--kind", "folder"), names=("'kind'",))


@hostile("data-spec-phantom-cache-path-is-a-file")
def _phantom_cache_file(d: Path) -> Call:
    cache = d / "runs" / "cache" / "phantoms"
    cache.mkdir(parents=True)
    (cache / _CHEST_SET).write_text("not a folder")
    return Call(_inspect("phantom:chest_xray?n=40&size=32"), names=(_CHEST_SET,))


@hostile("data-spec-phantom-cache-holds-another-set")
def _phantom_cache_other(d: Path) -> Call:
    folder = d / "runs" / "cache" / "phantoms" / _CHEST_SET
    folder.mkdir(parents=True)
    other = '{"modality": "skin", "n": 7, "size": 32, "seed": 0, "format": "npz"}'
    (folder / "phantom.json").write_text(other)
    return Call(_inspect("phantom:chest_xray?n=40&size=32"), names=(_CHEST_SET,))


@hostile("data-spec-phantom-cached-npz-corrupt")
def _phantom_cache_corrupt(d: Path) -> Call:
    folder = d / "runs" / "cache" / "phantoms" / _CHEST_SET
    folder.mkdir(parents=True)
    (folder / "chest_xray_phantom.npz").write_bytes(b"PK\x03\x04 truncated by hand")
    return Call(_inspect("phantom:chest_xray?n=40&size=32"), names=("chest_xray_phantom.npz",))


@hostile("data-spec-phantom-train-n-zero")
def _phantom_train(d: Path) -> Call:
    return Call(_train(d, "phantom:chest_xray?n=0"), names=("'n'",))


# --- medmnist: -------------------------------------------------------------------------------


@hostile("data-spec-medmnist-missing-file")
def _medmnist_missing(d: Path) -> Call:
    return Call(_inspect(f"medmnist:pneumoniamnist@64?root={d / 'mm'}"), names=("pneumoniamnist_64.npz",))


@hostile("data-spec-medmnist-root-is-a-file")
def _medmnist_root_file(d: Path) -> Call:
    (d / "mm").write_text("a file where the folder should be")
    return Call(_inspect(f"medmnist:pneumoniamnist?root={d / 'mm'}"), names=("pneumoniamnist.npz",))


@hostile("data-spec-medmnist-unknown-name")
def _medmnist_name(d: Path) -> Call:
    return Call(_inspect("medmnist:pneumoniamnis"), names=("pneumoniamnis",))


@hostile("data-spec-medmnist-3d-size-128")
def _medmnist_size(d: Path) -> Call:
    return Call(_inspect("medmnist:organmnist3d@128"), names=("'size'",))


@hostile("data-spec-medmnist-chest-without-label-column")
def _medmnist_chest(d: Path) -> Call:
    return Call(_inspect(f"medmnist:chestmnist?root={d}"), names=("label_column",))


@hostile("data-spec-medmnist-zero-byte-file")
def _medmnist_empty(d: Path) -> Call:
    (d / "pneumoniamnist.npz").write_bytes(b"")
    return Call(_inspect(f"medmnist:pneumoniamnist?root={d}"), names=("pneumoniamnist.npz",))


@hostile("data-spec-medmnist-pickled-labels")
def _medmnist_pickle(d: Path) -> Call:
    obj = np.empty(2, dtype=object)
    obj[:] = [{"payload": 1}, {"payload": 2}]
    np.savez(d / "pneumoniamnist.npz", train_images=np.zeros((2, 28, 28), np.uint8), train_labels=obj)
    return Call(_inspect(f"medmnist:pneumoniamnist?root={d}"), names=("pneumoniamnist.npz",))


@hostile("data-spec-medmnist-train-missing-file")
def _medmnist_train(d: Path) -> Call:
    return Call(_train(d, f"medmnist:pneumoniamnist?root={d / 'mm'}"), names=("pneumoniamnist.npz",))


# --- orientation metadata --------------------------------------------------------------------


def _nifti_with_sform(path: Path, rows: list[list[float]]) -> Path:
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header["sform_code"] = 2
    header["srow_x"], header["srow_y"], header["srow_z"] = rows
    data = np.arange(6 * 6 * 3, dtype=np.float32).reshape(6, 6, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, None, header=header), str(path))
    return path


@hostile("data-nifti-nan-and-singular-affines-read-as-stored")
def _nifti_affines(d: Path) -> Call:
    vols = d / "vols"
    _nifti_with_sform(vols / "nan.nii.gz", [[float("nan"), 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
    _nifti_with_sform(vols / "inf.nii.gz", [[float("inf"), 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
    _nifti_with_sform(vols / "singular.nii.gz", [[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
    return Call(_inspect(str(vols), "--json"), exit_code=0)


@hostile("data-jpeg-exif-orientation-42-and-garbage-exif")
def _jpeg_exif(d: Path) -> Call:
    from PIL import Image

    for cls in ("benign", "malignant"):
        folder = d / "photos" / cls
        folder.mkdir(parents=True)
        img = Image.fromarray(np.full((12, 20, 3), 120, np.uint8))
        exif = img.getexif()
        exif[0x0112] = 42
        img.save(folder / "tag42.jpg", exif=exif.tobytes())
        img.save(folder / "garbage.jpg", exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff\x12\x01")
    return Call(_inspect(str(d / "photos")), exit_code=0)
