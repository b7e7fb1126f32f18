"""benchmarks/segmentation.py runs in its --quick mode: 3D PGD against its floor, and the
sliding-window attack's peak memory measured in fresh subprocesses."""

from __future__ import annotations

import json

import torch


def test_quick_segmentation_benchmark_runs_and_writes_its_measurements(tmp_path, capsys, load_benchmark):
    bench = load_benchmark("segmentation")
    threads = torch.get_num_threads()
    out = tmp_path / "seg.json"
    assert bench.main(["--quick", "--threads", "1", "--json", str(out)]) == 0
    assert torch.get_num_threads() == threads  # the benchmark's thread setting is undone
    stored = json.loads(out.read_text(encoding="utf-8"))
    pgd = stored["pgd_3d"]
    assert pgd["side"] == 32 and pgd["steps"] == 3 and pgd["t_floor"] > 0 and pgd["ratio"] > 0
    rows = stored["sliding_memory"]
    # one window alone, two volumes with checkpointing, the smaller one without
    expected = [(16, "auto"), (32, "auto"), (64, "auto"), (32, "off"), (64, "off")]
    assert [(r["side"], r["checkpoint"]) for r in rows] == expected
    assert [r["windows"] for r in rows] == [1, 27, 125, 27, 125]  # 16³ windows, stride 12
    assert all(r["peak_rss_mb"] >= r["base_rss_mb"] > 0 for r in rows)
    printed = capsys.readouterr().out
    assert "3D PGD-3" in printed and "Sliding-window PGD step" in printed
