"""The closed-form Haar transform against PyWavelets and its defining identities."""

import numpy as np
import pytest
import pywt
import torch
import torch.nn.functional as F

from wavecl.model.wavelet import haar_dwt2, haar_idwt2


@pytest.mark.parametrize("size", [(6, 8), (5, 7), (1, 3)])
def test_bands_equal_pywavelets(size: tuple[int, int]) -> None:
    # pywt.dwt2 returns (cA, (cH, cV, cD)). For Haar, cH is the high-pass along rows
    # (top minus bottom) = band1, cV the high-pass along columns (left minus right) = band2 and
    # cD the diagonal = band3, all with the same sign as ours. mode="zero" pads odd sizes with
    # zeros at the bottom/right, as haar_dwt2 does.
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    low, high = haar_dwt2(x)
    c_a, (c_h, c_v, c_d) = pywt.dwt2(x.numpy(), "haar", mode="zero", axes=(-2, -1))
    np.testing.assert_allclose(low.numpy(), c_a, atol=1e-12)
    np.testing.assert_allclose(high[:, :, 0].numpy(), c_h, atol=1e-12)
    np.testing.assert_allclose(high[:, :, 1].numpy(), c_v, atol=1e-12)
    np.testing.assert_allclose(high[:, :, 2].numpy(), c_d, atol=1e-12)
    assert high.shape == (2, 3, 3, (size[0] + 1) // 2, (size[1] + 1) // 2)


def test_band_formulas_on_one_block() -> None:
    a, b, c, d = 1.0, 2.0, 3.0, 5.0
    low, high = haar_dwt2(torch.tensor([[[[a, b], [c, d]]]]))
    assert low.item() == (a + b + c + d) / 2
    assert high.flatten().tolist() == [(a + b - c - d) / 2, (a - b + c - d) / 2, (a - b - c + d) / 2]


def test_inverse_equals_pywavelets() -> None:
    low, high = torch.randn(2, 3, 4, 5, dtype=torch.float64), torch.randn(2, 3, 3, 4, 5, dtype=torch.float64)
    expected = pywt.idwt2((low.numpy(), tuple(high[:, :, band].numpy() for band in range(3))), "haar", axes=(-2, -1))
    np.testing.assert_allclose(haar_idwt2(low, high).numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("size", [(8, 10), (7, 9), (5, 4), (1, 1)])
def test_perfect_reconstruction(size: tuple[int, int]) -> None:
    x = torch.randn(2, 4, *size)
    low, high = haar_dwt2(x)
    torch.testing.assert_close(haar_idwt2(low, high, size=size), x, atol=1e-6, rtol=0)


def test_low_band_is_twice_the_average_pool() -> None:
    x = torch.randn(3, 2, 6, 10)
    low, _ = haar_dwt2(x)
    torch.testing.assert_close(low, 2 * F.avg_pool2d(x, 2))


def test_energy_is_preserved() -> None:
    x = torch.randn(2, 3, 6, 8, dtype=torch.float64)
    low, high = haar_dwt2(x)
    torch.testing.assert_close(low.square().sum() + high.square().sum(), x.square().sum())


def test_gradients_flow_through_both_directions() -> None:
    x = torch.randn(1, 2, 5, 6, requires_grad=True)
    low, high = haar_dwt2(x)
    weights = torch.randn(1, 2, 5, 6)
    (haar_idwt2(low * 3, high, size=(5, 6)) * weights).sum().backward()
    # d/dx of idwt(3·LL, H) · w: the LL band of w scaled by 3 plus its high bands, mapped back.
    w_low, w_high = haar_dwt2(weights)
    expected = haar_idwt2(3 * w_low, w_high, size=(5, 6))
    torch.testing.assert_close(x.grad, expected)


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="N, C, H, W"):
        haar_dwt2(torch.randn(3, 4, 4))
    with pytest.raises(ValueError, match="high"):
        haar_idwt2(torch.randn(1, 2, 3, 3), torch.randn(1, 2, 2, 3, 3))
    with pytest.raises(ValueError, match="crop"):
        haar_idwt2(torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3, 3), size=(7, 6))
