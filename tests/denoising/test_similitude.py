import numpy as np
import pytest
import torch

from medrobust.denoising.similitude import relative_transfer, transfer_similitude, transfer_tables


def test_relative_transfer_and_similitude_formula():
    raw = np.array([[2.0, 1.0, 0.2], [1.5, 4.0, 0.1], [0.5, 0.5, 0.001]])
    rel = relative_transfer(raw)
    assert np.allclose(np.diag(rel)[:2], 1.0)
    assert rel[0, 1] == pytest.approx(1.0 / 4.0) and rel[1, 0] == pytest.approx(1.5 / 2.0)
    assert np.isnan(rel[:, 2]).all()  # target 2's own drop is below MIN_DROP_DB
    sim = transfer_similitude(rel)
    assert sim[0, 1] == pytest.approx(0.5 * (0.25 + 0.75)) and sim[0, 1] == sim[1, 0]
    rel2 = relative_transfer(np.array([[1.0, 3.0], [1.0, 1.0]]))  # T > 1 is clipped in S
    assert transfer_similitude(rel2)[0, 1] == pytest.approx(1.0)


def test_transfer_tables_diagonal_and_cosine():
    cells = {
        "a": {
            "a": {"psnr_drop": [2.0, 4.0], "ssim_drop": [0.1, 0.1]},
            "b": {"psnr_drop": [1.0, 1.0], "ssim_drop": [0, 0]},
        },
        "b": {
            "a": {"psnr_drop": [3.0, 3.0], "ssim_drop": [0, 0]},
            "b": {"psnr_drop": [2.0, 2.0], "ssim_drop": [0.2, 0]},
        },
    }
    d = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    t = transfer_tables(["a", "b"], cells, {"a": d, "b": -d})
    assert t["raw_psnr_drop"] == [[3.0, 1.0], [3.0, 2.0]]
    assert t["relative"][0][0] == 1.0 and t["relative"][1][1] == 1.0
    assert t["relative"][1][0] == pytest.approx(1.0) and t["relative"][0][1] == pytest.approx(0.5)
    assert t["cosine"][0][1] == pytest.approx(-1.0) and t["cosine"][0][0] == pytest.approx(1.0)
