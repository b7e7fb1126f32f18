"""Streaming audit: images are read batch by batch and never all held in memory."""

from __future__ import annotations

import gc
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medrobust.errors import DataError
from medrobust.evaluation.config import config_from_dict
from medrobust.evaluation.runner import run_audit
from medrobust.evaluation.targets import AuditSamples, load_audit_data

SIZE = 32  # the fixture data's image size (conftest.SIZE)
BATCH = 8


def _live_images() -> int:
    """Images (1 x SIZE x SIZE float32) held by live tensors, counting each storage once."""
    seen: dict[int, int] = {}
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor) and obj.dim() >= 3 and tuple(obj.shape[-2:]) == (SIZE, SIZE):
            storage = obj.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values()) // (SIZE * SIZE * 4)


class _Probe(torch.utils.data.Dataset):
    """Wraps the audit's dataset; every ``every`` reads it records how many images are alive.

    (A scan of all live objects costs about 0.3 s here, so it samples every few batches:
    an implementation that accumulates images grows steadily and is caught anyway.)
    """

    def __init__(self, dataset, every: int = 3 * BATCH) -> None:
        self.dataset = dataset
        self.every = every
        self.reads = 0
        self.peak = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads % self.every == 0:
            self.peak = max(self.peak, _live_images())
        return self.dataset[i]


@pytest.fixture
def probe(monkeypatch):
    """Make the audit read its samples through a :class:`_Probe`."""
    import medrobust.data

    real = medrobust.data.make_dataset
    probes: list[_Probe] = []

    def make(*args, **kwargs):
        probes.append(_Probe(real(*args, **kwargs)))
        return probes[-1]

    monkeypatch.setattr(medrobust.data, "make_dataset", make)
    return probes


def _config(easy_npz, tiny_model, audit_dict, **over):
    cfg = audit_dict(
        easy_npz,
        tiny_model,
        defenses=[],
        attacks=["fgsm"],
        budgets={"linf": ["8/255"]},
        batch_size=BATCH,
        save_examples=2,
    )
    cfg.update(over)
    return config_from_dict(cfg)


def test_audit_never_holds_all_images(tmp_path, easy_npz, tiny_model, audit_dict, probe):
    # 96 samples of the fixture's train split in 12 batches of 8
    data = {**audit_dict(easy_npz, tiny_model)["data"], "split": "train"}
    config = _config(easy_npz, tiny_model, audit_dict, data=data, n_samples=96)
    gc.collect()
    baseline = _live_images()
    results = run_audit(config, tmp_path / "run", progress=False)
    assert results["data"]["n"] == 96
    cell = results["cells"][0]
    assert cell["metrics"]["n_attacked"] > 80  # the attack really ran over (almost) every batch
    (run_probe,) = probe
    assert run_probe.reads >= 2 * 96  # clean pass + one craft pass, batch by batch
    # at most a few batches (current + previous batch, its adversarial copy, the first samples)
    assert run_probe.peak - baseline <= 4 * BATCH, run_probe.peak

    # the probe does see materialised data: the in-memory helper holds every image
    probe.clear()
    data = load_audit_data(config, SimpleNamespace(bounds=(0.0, 1.0), in_channels=1, class_names=["0", "1"]))
    assert len(data.images) == 96 and probe[0].peak - baseline >= 90


def test_results_do_not_depend_on_num_workers(tmp_path, easy_npz, tiny_model, audit_dict):
    runs = []
    for workers in (0, 2):
        config = _config(easy_npz, tiny_model, audit_dict, n_samples=20, num_workers=workers)
        res = json.loads(json.dumps(run_audit(config, tmp_path / f"w{workers}", progress=False)))
        for c in res["cells"]:
            for key in ("seconds", "craft_seconds", "eval_seconds"):
                c.pop(key)
        res["config"].pop("num_workers")
        runs.append(res)
    assert runs[0] == runs[1]
    assert runs[0]["fingerprint"] == config.fingerprint()  # num_workers does not change the fingerprint


class _Items(torch.utils.data.Dataset):
    """Five 1x4x4 items as MONAI returns them (MetaTensor images); item 3 exceeds [0, 1]."""

    def __len__(self) -> int:
        return 5

    def __getitem__(self, i):
        from monai.data import MetaTensor

        img = torch.full((1, 4, 4), 0.1 * i)
        if i == 3:
            img[0, 1, 2] = 1.5
        return {"image": MetaTensor(img), "label": torch.tensor(i % 2), "meta": {"id": f"img{i}.png"}}


def test_batches_are_plain_and_checked_one_by_one(tmp_path):
    card = SimpleNamespace(bounds=(0.0, 1.0), in_channels=1)
    samples = AuditSamples(_Items(), [0, 1, 2, 3, 4], 2, card, tmp_path / "src.npz", preset="chest_xray")
    assert samples.n_batches == 3 and samples.positions(2).tolist() == [4]
    stream = samples.batches()
    first = next(stream)
    assert type(first.images) is torch.Tensor and first.images.shape == (2, 1, 4, 4)  # MetaTensor stripped
    assert first.labels.tolist() == [0, 1] and first.ids == ["img0.png", "img1.png"]
    assert first.positions.tolist() == [0, 1] and first.index == 0
    # batch 1 holds item 3, outside the card's bounds: the error names the source and the sample
    with pytest.raises(
        DataError,
        match=r"src\.npz: preset 'chest_xray' produced values in \[0\.2, 1\.5\] "
        r"outside the model card's bounds \[0, 1\] \(first such sample: img3\.png\)",
    ):
        next(stream)
    # asking for batches 2 and 0 only reads those, in that order
    got = [(b.index, b.positions.tolist()) for b in samples.batches([2, 0])]
    assert got == [(2, [4]), (0, [0, 1])]
    images, _ = samples.read([4, 0])
    np.testing.assert_allclose(images[:, 0, 0, 0].numpy(), [0.4, 0.0], atol=1e-7)
    with pytest.raises(DataError, match=r"img3\.png"):
        samples.read([3])
    three = AuditSamples(_Items(), [0], 1, SimpleNamespace(bounds=(0.0, 1.0), in_channels=3), tmp_path / "x")
    with pytest.raises(DataError, match=r"images have 1 channel\(s\); the model card expects 3"):
        list(three.batches())


def test_image_cache_changes_nothing_but_decoding(tiny_run, audit_dict, easy_npz, tiny_model, tmp_path):
    """data.cache_dir: same fingerprint and identical cells; the second run reads from the cache."""
    config, results, _, _ = tiny_run
    cfg = audit_dict(easy_npz, tiny_model)
    cfg["data"]["cache_dir"] = str(tmp_path / "cache")
    cached_config = config_from_dict(cfg)
    assert cached_config.fingerprint() == config.fingerprint()
    first = run_audit(cached_config, tmp_path / "run1", progress=False)
    files = list((tmp_path / "cache").rglob("*.npy"))
    assert len(files) == results["data"]["n"]

    def cells(res):
        return [{k: v for k, v in c.items() if not k.endswith("seconds")} for c in res["cells"]]

    for a, b in zip(cells(first), cells(results), strict=True):
        diff = {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
        assert not diff, (a["key"], diff)
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    second = run_audit(cached_config, tmp_path / "run2", progress=False)
    assert cells(second) == cells(results)
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes  # read, never rewritten
