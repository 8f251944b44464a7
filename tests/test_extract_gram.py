"""Blockwise Gram matrix: equals X Xᵀ for any block size, streams from a memmap."""

from __future__ import annotations

import numpy as np
import pytest

from decoder.errors import DataError
from decoder.features._gram import blockwise_gram


@pytest.fixture
def X():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(157, 1000)) + rng.normal(size=1000)).astype(np.float32)


def _exact(A, B=None):
    A = A.astype(np.float64)
    return A @ (A if B is None else B.astype(np.float64)).T


@pytest.mark.parametrize("block_size", [1, 64, 333, 1000, 5000])
def test_equals_the_full_product_for_any_block_size(X, block_size):
    K = blockwise_gram(X, block_size)
    ref = _exact(X)
    assert K.dtype == np.float64 and K.shape == (157, 157)
    np.testing.assert_allclose(K, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    np.testing.assert_array_equal(K, K.T)


def test_float64_blocks_are_exact_to_rounding(X):
    K = blockwise_gram(X, 300, dtype=np.float64)
    np.testing.assert_allclose(K, _exact(X), rtol=1e-12)


def test_cross_gram_with_other_samples(X):
    Y = np.random.default_rng(1).normal(size=(23, 1000)).astype(np.float32)
    K = blockwise_gram(X, 256, Y)
    assert K.shape == (157, 23) and K.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(K, _exact(X, Y), rtol=1e-5, atol=1e-4)


def test_reads_a_memmap_block_by_block(tmp_path, X):
    path = tmp_path / "X.dat"
    X.tofile(path)
    mm = np.memmap(path, dtype=np.float32, mode="r", shape=X.shape)
    np.testing.assert_array_equal(blockwise_gram(mm, 128), blockwise_gram(X, 128))


def test_bad_shapes_raise_data_errors(X):
    with pytest.raises(DataError, match="2D"):
        blockwise_gram(X[0], 10)
    with pytest.raises(DataError, match="features"):
        blockwise_gram(X, 10, X[:, :5])
    with pytest.raises(DataError, match="block_size"):
        blockwise_gram(X, 0)
