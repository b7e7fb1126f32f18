"""Data named by a spec instead of a path: ``phantom:MODALITY`` and ``medmnist:NAME``.

Every ``--data`` option and :func:`~medrobust.data.open_source` accept them. One grammar for
both schemes::

    SCHEME:NAME[@SIZE][?KEY=VALUE[&KEY=VALUE...]]

``phantom:MODALITY`` (``phantom:chest_xray``, ``phantom:skin@128``,
``phantom:brain_mri?n=600&size=64&seed=1``)
    The built-in labelled phantoms (:func:`~medrobust.data.phantoms.write_phantom`), generated
    once into a MedMNIST-style ``.npz`` under the phantom cache and read from there afterwards.
    Options: ``n`` (images, default 200, at most ``MAX_PHANTOM_IMAGES``), ``size`` (28..512,
    default 64; ``@SIZE`` is the same), ``seed`` (default 0). The cache folder is
    :func:`phantom_cache_root` / ``{modality}-n{n}-s{size}-seed{seed}-g{tag}/{modality}_phantom.npz``
    (``tag`` names the generator's code, :func:`generator_tag`),
    the layout the audit's ``data.phantom`` uses, so the same spec names the same file
    everywhere. Class names are the phantom's (``normal``, ``pneumonia``, ...).

``medmnist:NAME`` (``medmnist:pneumoniamnist``, ``medmnist:dermamnist@224``,
``medmnist:chestmnist?label_column=6``)
    A MedMNIST file where the ``medmnist`` package keeps it, never downloaded. The folder is
    the ``root`` option, else ``$MEDMNIST_ROOT``, else ``~/.medmnist`` (the package's
    ``DEFAULT_ROOT``). File names follow the package (medmnist 3.0.2, ``medmnist/dataset.py``:
    ``f"{flag}{size_flag}.npz"`` with ``size_flag`` empty for 28 pixels and ``f"_{size}"``
    otherwise): ``pneumoniamnist.npz``, ``pneumoniamnist_64.npz``, ``organmnist3d_64.npz``.
    Sizes: 28 (default), 64, 128, 224 for 2D sets; 28, 64 for 3D sets. Options: ``size``
    (``@SIZE`` is the same), ``root``, ``label_column`` (required for the multi-label
    ``chestmnist``: the finding used as a binary label). Class names are the package's
    (``medmnist/info.py``, ``INFO[flag]["label"]``). A missing file raises a
    :class:`~medrobust.errors.DataError` saying which file to place where.

A file literally named like a spec can still be opened as ``./phantom:...``.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medrobust.data.cache import CACHE_ENV
from medrobust.errors import ConfigError, DataError
from medrobust.registry import did_you_mean
from medrobust.utils.logging import get_logger

log = get_logger("data")

#: Schemes a data spec may start with.
SCHEMES: tuple[str, ...] = ("phantom", "medmnist")
#: Phantom cache folder when ``$MEDROBUST_CACHE`` is not set (relative to the working directory).
DEFAULT_PHANTOM_CACHE = Path("runs/cache/phantoms")
#: Defaults of ``phantom:`` specs (the audit's ``data.phantom`` defaults).
PHANTOM_DEFAULTS: dict[str, int] = {"n": 200, "size": 64, "seed": 0}
#: Environment variable naming the MedMNIST folder (before the package default ``~/.medmnist``).
MEDMNIST_ROOT_ENV = "MEDMNIST_ROOT"
#: Where the MedMNIST files are published (the package downloads from there).
MEDMNIST_URL = "https://zenodo.org/records/10519652/files/"
MEDMNIST_SIZES_2D: tuple[int, ...] = (28, 64, 128, 224)
MEDMNIST_SIZES_3D: tuple[int, ...] = (28, 64)

_ORGANS = ["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right"]
_ORGANS += ["liver", "lung-left", "lung-right", "pancreas", "spleen"]

#: MedMNIST flags and their class names, from medmnist 3.0.2 ``medmnist/info.py`` (``INFO[flag]["label"]``).
MEDMNIST_CLASSES: dict[str, list[str]] = {
    "pathmnist": [
        "adipose",
        "background",
        "debris",
        "lymphocytes",
        "mucus",
        "smooth muscle",
        "normal colon mucosa",
        "cancer-associated stroma",
        "colorectal adenocarcinoma epithelium",
    ],
    "chestmnist": [
        "atelectasis",
        "cardiomegaly",
        "effusion",
        "infiltration",
        "mass",
        "nodule",
        "pneumonia",
        "pneumothorax",
        "consolidation",
        "edema",
        "emphysema",
        "fibrosis",
        "pleural",
        "hernia",
    ],
    "dermamnist": [
        "actinic keratoses and intraepithelial carcinoma",
        "basal cell carcinoma",
        "benign keratosis-like lesions",
        "dermatofibroma",
        "melanoma",
        "melanocytic nevi",
        "vascular lesions",
    ],
    "octmnist": ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
    "pneumoniamnist": ["normal", "pneumonia"],
    "retinamnist": ["0", "1", "2", "3", "4"],
    "breastmnist": ["malignant", "normal, benign"],
    "bloodmnist": [
        "basophil",
        "eosinophil",
        "erythroblast",
        "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
        "lymphocyte",
        "monocyte",
        "neutrophil",
        "platelet",
    ],
    "tissuemnist": [
        "Collecting Duct, Connecting Tubule",
        "Distal Convoluted Tubule",
        "Glomerular endothelial cells",
        "Interstitial endothelial cells",
        "Leukocytes",
        "Podocytes",
        "Proximal Tubule Segments",
        "Thick Ascending Limb",
    ],
    "organamnist": list(_ORGANS),
    "organcmnist": list(_ORGANS),
    "organsmnist": list(_ORGANS),
    "organmnist3d": [
        "liver",
        "kidney-right",
        "kidney-left",
        "femur-right",
        "femur-left",
        "bladder",
        "heart",
        "lung-right",
        "lung-left",
        "spleen",
        "pancreas",
    ],
    "nodulemnist3d": ["benign", "malignant"],
    "adrenalmnist3d": ["normal", "hyperplasia"],
    "fracturemnist3d": ["buckle rib fracture", "nondisplaced rib fracture", "displaced rib fracture"],
    "vesselmnist3d": ["vessel", "aneurysm"],
    "synapsemnist3d": ["inhibitory synapse", "excitatory synapse"],
}
#: Multi-label MedMNIST sets: one column must be picked as a binary label.
MEDMNIST_MULTI_LABEL: frozenset[str] = frozenset({"chestmnist"})

_OPTIONS: dict[str, tuple[str, ...]] = {
    "phantom": ("n", "seed", "size"),
    "medmnist": ("label_column", "root", "size"),
}


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec.

    Attributes:
        scheme: ``"phantom"`` or ``"medmnist"``.
        name: The modality or MedMNIST flag as written.
        options: ``KEY=VALUE`` options as text (``@SIZE`` becomes ``size``).
        text: The spec as given (named in messages).
    """

    scheme: str
    name: str
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""


@dataclass(frozen=True)
class ResolvedSpec:
    """Where a spec's data are and how to open them.

    Attributes:
        path: The ``.npz`` file.
        spec: The canonical spec (every option spelled out), recorded as ``Source.spec``.
        source_options: Defaults for the source (``class_names``, ``label_column``).
    """

    path: Path
    spec: str
    source_options: dict[str, Any] = field(default_factory=dict)


def is_spec(value: object) -> bool:
    """True when ``value`` is a string starting with a known scheme (``phantom:``, ``medmnist:``)."""
    if not isinstance(value, str):
        return False
    scheme, sep, _ = value.partition(":")
    return bool(sep) and scheme.strip().lower() in SCHEMES


def parse_spec(text: str) -> DataSpec:
    """Parse ``SCHEME:NAME[@SIZE][?KEY=VALUE&...]``.

    Raises:
        ConfigError: naming the spec for an unknown scheme or option, an empty name, a
            malformed or repeated option, or ``@SIZE`` given together with ``size=``.
    """
    scheme, sep, rest = text.partition(":")
    scheme = scheme.strip().lower()
    if not sep or scheme not in SCHEMES:
        raise ConfigError(f"The data spec {text!r} must start with one of {[s + ':' for s in SCHEMES]}.")
    body, _, query = rest.partition("?")
    name, at, size = body.partition("@")
    name = name.strip()
    if not name:
        what = (
            "a modality, e.g. phantom:chest_xray"
            if scheme == "phantom"
            else "a name, e.g. medmnist:pneumoniamnist"
        )
        raise ConfigError(f"The data spec {text!r} names no data; write {what}.")
    options: dict[str, str] = {}
    if at:
        options["size"] = size.strip()
    for part in query.split("&") if query else []:
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"The data spec {text!r} has a malformed option {part!r}; write KEY=VALUE.")
        valid = _OPTIONS[scheme]
        if key not in valid:
            raise ConfigError(
                f"The data spec {text!r} has an unknown option {key!r}.{did_you_mean(key, list(valid))} "
                f"Valid {scheme}: options: {list(valid)}."
            )
        if key in options:
            again = "given twice" if key != "size" or not at else "given both as @SIZE and size="
            raise ConfigError(f"The data spec {text!r} has the option {key!r} {again}.")
        options[key] = value.strip()
    return DataSpec(scheme, name, options, text)


def _int_option(spec: DataSpec, key: str, default: int | None = None) -> int | None:
    raw = spec.options.get(key)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(
            f"The {key!r} option of the data spec {spec.text!r} must be an integer. Got {raw!r}."
        ) from None


def resolve_spec(text: str) -> ResolvedSpec:
    """Find (and for phantoms, generate once) the ``.npz`` file a spec names.

    Raises:
        ConfigError: for a malformed spec, an unknown modality or MedMNIST name, or an option
            out of range (checked before anything is generated or read).
        DataError: for a MedMNIST file that is not where the spec says (naming the file,
            the folder and where to get it).
    """
    spec = parse_spec(text)
    if spec.scheme == "phantom":
        return _resolve_phantom(spec)
    return _resolve_medmnist(spec)


# --- phantom: ----------------------------------------------------------------------------------


def phantom_cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder phantom sets are generated into.

    ``cache_dir`` when given, else ``$MEDROBUST_CACHE/phantoms``, else ``runs/cache/phantoms``
    relative to the working directory (the audit's default).
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() / "phantoms" if env else DEFAULT_PHANTOM_CACHE


@functools.lru_cache(maxsize=64)
def generator_tag(generator: type) -> str:
    """8 hex digits naming the code that draws a phantom: a changed generator gets a new cache folder.

    The SHA-256 of the source files of the generator's package and of the classification phantoms
    (whose drawing helpers every generator may use), so a cache written by an older medrobust is
    never read as if it held today's phantoms.
    """
    import hashlib
    import inspect

    own = inspect.getsourcefile(generator)
    folders = {Path(__file__).parent / "phantoms", *([Path(own).parent] if own else [])}
    digest = hashlib.sha256()
    for file in sorted(f for folder in folders for f in folder.glob("*.py")):
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:8]


def phantom_set_name(modality: str, n: int, size: int, seed: int, generator: type) -> str:
    """``{modality}-n{n}-s{size}-seed{seed}-g{tag}``: the cache folder of one phantom set."""
    return f"{modality}-n{n}-s{size}-seed{seed}-g{generator_tag(generator)}"


def phantom_npz_path(
    modality: str, n: int, size: int, seed: int, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """``<cache>/{modality}-n{n}-s{size}-seed{seed}-g{tag}/{modality}_phantom.npz`` (nothing is written).

    ``tag`` is :func:`generator_tag` of the modality's generator.
    """
    from medrobust.data.phantoms.base import PHANTOMS

    name = phantom_set_name(modality, n, size, seed, PHANTOMS.get(modality))
    return phantom_cache_root(cache_dir) / name / f"{modality}_phantom.npz"


def phantom_npz(
    modality: str,
    n: int = PHANTOM_DEFAULTS["n"],
    size: int = PHANTOM_DEFAULTS["size"],
    seed: int = PHANTOM_DEFAULTS["seed"],
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Path:
    """The phantom set as a MedMNIST-style ``.npz``, generated on first use and reused after.

    Everything is validated before anything is generated (``n`` within
    ``MAX_PHANTOM_IMAGES`` and the in-memory cap, ``size`` 28..512). The set is written into a
    private folder renamed into place in one step, so concurrent processes (torchrun ranks) at
    worst generate it twice and never read half a file.

    Raises:
        ConfigError: for an unknown modality or an out-of-range ``n``, ``size`` or ``seed``.
    """
    from medrobust.data.phantoms import get_phantom, write_phantom
    from medrobust.data.phantoms.base import check_in_memory, check_phantom_count

    gen = get_phantom(modality, size=size, seed=seed)
    n = check_phantom_count(n, f"phantom {gen.modality!r}")
    check_in_memory(n, gen, f"phantom {gen.modality!r}")
    path = phantom_npz_path(gen.modality, n, gen.size, gen.seed, cache_dir)
    for folder in (path.parent, *path.parent.parents):
        if folder.exists() and not folder.is_dir():
            raise DataError(
                folder,
                f"is not a folder, so the phantom cache {path.parent} cannot be made; remove it "
                f"or set ${CACHE_ENV} to another folder",
            )
    if path.is_file():
        return path
    log.info("generating %d %s phantoms (%dx%d, seed %d) in %s", n, gen.modality, size, size, seed, path)
    folder = path.parent
    if folder.is_dir() and any(folder.iterdir()):  # an interrupted earlier run: complete it in place
        return Path(write_phantom(gen.modality, n, gen.size, "npz", folder, seed=gen.seed, progress=progress))
    # Written into a private folder, then renamed into place in one step, so processes starting
    # together (torchrun ranks) never see each other's half-written folder.
    folder.parent.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        written = Path(
            write_phantom(gen.modality, n, gen.size, "npz", private, seed=gen.seed, progress=progress)
        )
        try:
            os.rename(private, folder)  # replaces a missing or empty folder atomically
        except OSError:
            if not path.is_file():  # not another process's finished set: a real failure
                raise
        return folder / written.name
    finally:
        if private.exists():
            shutil.rmtree(private)


def phantom_options(text: str) -> dict[str, Any]:
    """The options of a ``phantom:`` spec spelled out: ``{"modality", "n", "size", "seed"}``.

    ``"phantom:chest_xray@32?n=40"`` gives ``{"modality": "chest_xray", "n": 40, "size": 32,
    "seed": 0}`` (defaults from :data:`PHANTOM_DEFAULTS`): the audit's ``data.phantom`` block for
    the same data. Nothing is generated.

    Raises:
        ConfigError: for a malformed spec, another scheme or an option that is not an integer.
    """
    spec = parse_spec(text)
    if spec.scheme != "phantom":
        raise ConfigError(f"The data spec {text!r} is not a phantom: spec; write phantom:MODALITY.")
    values = {k: int(_int_option(spec, k, d) or 0) for k, d in PHANTOM_DEFAULTS.items()}
    return {"modality": spec.name, **values}


def resolve_phantom(
    modality: str,
    n: int = PHANTOM_DEFAULTS["n"],
    size: int = PHANTOM_DEFAULTS["size"],
    seed: int = PHANTOM_DEFAULTS["seed"],
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> ResolvedSpec:
    """The phantom set's ``.npz`` (generated once, :func:`phantom_npz`), canonical spec and class names.

    The one way phantoms are opened by name: ``phantom:`` specs (:func:`resolve_spec`) and the
    audit's ``data.phantom`` block both come here, so the same phantom set is the same file
    with the phantom's class names (``normal``, ``pneumonia``, ...) wherever it is named.

    Raises:
        ConfigError: for an unknown modality or an out-of-range ``n``, ``size`` or ``seed``.
    """
    from medrobust.data.phantoms import get_phantom

    gen = get_phantom(modality, size=size, seed=seed)  # unknown modality / bad size or seed: ConfigError
    path = phantom_npz(gen.modality, n, size, seed, cache_dir, progress=progress)
    canonical = f"phantom:{gen.modality}?n={n}&size={size}&seed={seed}"
    return ResolvedSpec(path, canonical, {"class_names": list(gen.class_names)})


def _resolve_phantom(spec: DataSpec) -> ResolvedSpec:
    values = {k: _int_option(spec, k, d) for k, d in PHANTOM_DEFAULTS.items()}
    n, size, seed = (int(values[k] or 0) for k in ("n", "size", "seed"))
    return resolve_phantom(spec.name, n, size, seed)


# --- medmnist: ---------------------------------------------------------------------------------


def medmnist_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The MedMNIST folder: ``root``, else ``$MEDMNIST_ROOT``, else ``~/.medmnist`` (the package's)."""
    if root is not None and str(root):
        return Path(root).expanduser()
    env = os.environ.get(MEDMNIST_ROOT_ENV)
    return Path(env).expanduser() if env else Path("~/.medmnist").expanduser()


def medmnist_filename(flag: str, size: int = 28) -> str:
    """The medmnist package's file name: ``{flag}.npz`` at 28 pixels, ``{flag}_{size}.npz`` otherwise."""
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def _medmnist_flag(spec: DataSpec) -> str:
    flag = spec.name.lower().replace("-", "").replace("_", "")
    if flag in MEDMNIST_CLASSES:
        return flag
    if f"{flag}mnist" in MEDMNIST_CLASSES:  # "pneumonia" -> "pneumoniamnist"
        return f"{flag}mnist"
    names = sorted(MEDMNIST_CLASSES)
    raise ConfigError(
        f"The data spec {spec.text!r} names no MedMNIST set: unknown {spec.name!r}."
        f"{did_you_mean(spec.name, names)} Valid: {', '.join(names)}."
    )


def _resolve_medmnist(spec: DataSpec) -> ResolvedSpec:
    flag = _medmnist_flag(spec)
    sizes = MEDMNIST_SIZES_3D if flag.endswith("3d") else MEDMNIST_SIZES_2D
    size = _int_option(spec, "size", 28)
    if size not in sizes:
        raise ConfigError(
            f"The 'size' option of the data spec {spec.text!r} must be one of {list(sizes)} for {flag}. "
            f"Got {spec.options.get('size')!r}."
        )
    names = MEDMNIST_CLASSES[flag]
    column = _int_option(spec, "label_column")
    options: dict[str, Any] = {}
    if flag in MEDMNIST_MULTI_LABEL:
        if column is None or not 0 <= column < len(names):
            listed = ", ".join(f"{i}: {n}" for i, n in enumerate(names))
            got = "none" if column is None else repr(spec.options.get("label_column"))
            raise ConfigError(
                f"The data spec {spec.text!r} names the multi-label set {flag}; pick the finding used as a "
                f"binary label with ?label_column=K ({listed}). Got {got}."
            )
        options.update(label_column=column, class_names=[f"no {names[column]}", names[column]])
    elif column is not None:
        raise ConfigError(
            f"The 'label_column' option of the data spec {spec.text!r} applies to multi-label sets "
            f"({sorted(MEDMNIST_MULTI_LABEL)}); {flag} has one label per image."
        )
    else:
        options["class_names"] = list(names)
    root = medmnist_root(spec.options.get("root"))
    filename = medmnist_filename(flag, size)
    path = root / filename
    if not path.is_file():
        where = "" if root.is_dir() else ", a folder that does not exist yet"
        if root.exists() and not root.is_dir():
            where = ", which is a file, not a folder"
        raise DataError(
            path,
            f"MedMNIST file not found; medrobust never downloads: place {filename} in {root}{where} "
            f"(the medmnist package's folder; choose another with ?root=DIR or ${MEDMNIST_ROOT_ENV}); "
            f"get it from {MEDMNIST_URL}{filename} or with the medmnist package (download=True, size={size})",
        )
    canonical = f"medmnist:{flag}@{size}" + ("" if column is None else f"?label_column={column}")
    return ResolvedSpec(path, canonical, options)
