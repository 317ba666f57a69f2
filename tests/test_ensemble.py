"""segdiff_core.ensemble: from G sampled masks to probability, mask and uncertainty maps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segdiff_core.ensemble import binary_entropy, summarize, to_probability


def test_probability_maps_minus_one_one_onto_zero_one_and_clamps() -> None:
    x = torch.tensor([-1.5, -1.0, 0.0, 0.5, 1.0, 2.0])
    np.testing.assert_allclose(to_probability(x).numpy(), [0.0, 0.0, 0.5, 0.75, 1.0, 1.0])


def test_summary_of_three_generations_by_hand() -> None:
    # pixel (0, 0): p = 0, 1, 1 -> mean 2/3, std sqrt(2)/3; pixel (0, 1): p = 0.5 everywhere
    x0 = torch.tensor([[[-1.0, 0.0]], [[1.0, 0.0]], [[1.0, 0.0]]])  # (G=3, H=1, W=2)
    res = summarize(x0, threshold=0.5, keep_generations=True)
    np.testing.assert_allclose(res.probability, [[2 / 3, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(res.std, [[np.sqrt(2) / 3, 0.0]], rtol=1e-6)
    # a pixel exactly at the threshold is background
    assert res.mask.tolist() == [[True, False]]
    h = -(2 / 3 * np.log2(2 / 3) + 1 / 3 * np.log2(1 / 3))
    np.testing.assert_allclose(res.entropy, [[h, 1.0]], rtol=1e-6)
    assert res.num_generations == 3 and res.generations.shape == (3, 1, 2)
    assert res.uncertainty("entropy") is res.entropy and res.uncertainty() is res.std
    with pytest.raises(ValueError, match="'std' or 'entropy'"):
        res.uncertainty("variance")


def test_channel_axis_and_shapes() -> None:
    x0 = torch.zeros(4, 1, 5, 6)
    res = summarize(x0)
    assert res.probability.shape == (5, 6) and res.generations is None
    assert res.probability.dtype == np.float32 and res.mask.dtype == bool
    with pytest.raises(ValueError, match="one mask channel"):
        summarize(torch.zeros(4, 2, 5, 6))
    with pytest.raises(ValueError, match=r"\(G, H, W\)"):
        summarize(torch.zeros(5, 6))


def test_binary_entropy_endpoints() -> None:
    np.testing.assert_allclose(binary_entropy(np.array([0.0, 0.5, 1.0])), [0.0, 1.0, 0.0])
