"""Blockwise Gram matrices for wide problems (many voxels, many samples).

A dual (kernel) ridge decoder needs ``K = X Xᵀ`` (``n_samples x n_samples``)
but never ``X`` in memory at once: ``K`` is a sum over feature blocks,
``K = Σ_j X[:, j] X[:, j]ᵀ``.  This module streams feature blocks from an
array or ``np.memmap`` (float32 on disk), multiplies each block in float32
with BLAS ``syrk`` (only one triangle: half the flops of ``X @ X.T``), and
accumulates the blocks in float64.  Working memory is ``K`` (float64), one
float32 product buffer of ``K``'s size and one feature block — for 10,000
samples x 100,000 voxels about 1.4 GB instead of the 4 GB array plus its
float64 copy numpy would make.
"""

from __future__ import annotations

import mmap

import numpy as np
from scipy.linalg import blas

from ..errors import DataError

__all__ = ["blockwise_gram"]


_MAPPED_BYTES = 64 << 20  # rows of a memmap read between two unmappings


def _block(X, start, stop, dtype):
    """Feature columns ``start:stop`` as a C-contiguous array of ``dtype``.

    From a ``np.memmap`` the columns are copied a band of rows at a time and
    the band is unmapped after each copy: reading a few columns faults in
    whole neighbourhoods of every row (fault-around, large page-cache
    folios), so copying all rows at once would map the entire file.
    """
    if getattr(X, "_mmap", None) is None:
        return np.ascontiguousarray(X[:, start:stop], dtype=dtype)
    n, p = X.shape
    out = np.empty((n, min(stop, p) - start), dtype=dtype)
    rows = max(1, _MAPPED_BYTES // max(1, p * X.dtype.itemsize))
    for r in range(0, n, rows):
        out[r:r + rows] = X[r:r + rows, start:stop]
        _release_pages(X)
    return out


def blockwise_gram(X, block_size: int = 4096, Y=None, *, dtype=np.float32, progress=False):
    """Gram matrix ``X Xᵀ`` (or cross-Gram ``X Yᵀ``), accumulated over feature blocks.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Typically a float32 ``np.memmap``; only ``block_size`` columns are
        read at a time.
    block_size : int, default=4096
        Features per block: larger blocks mean fewer, bigger BLAS calls and
        more memory (``n_samples * block_size`` values of ``dtype``).
    Y : array-like of shape (n_other, n_features), optional
        Second operand (e.g. test samples): returns ``X Yᵀ``.
    dtype : {np.float32, np.float64}, default=np.float32
        Precision of each block product.  Blocks are always summed in
        float64, so float32 costs ~``sqrt(block_size) * 6e-8`` relative
        error per entry for half the time and memory of float64.
    progress : bool, default=False
        Show a progress bar over blocks.

    Returns
    -------
    K : ndarray of shape (n_samples, n_samples) or (n_samples, n_other), float64
        Symmetric when ``Y`` is None.

    Raises
    ------
    DataError
        If the arrays are not 2D or their feature counts differ.
    """
    X_shape = getattr(X, "shape", None)
    if X_shape is None or len(X_shape) != 2:
        raise DataError(f"blockwise_gram: X must be 2D (samples x features), got shape {X_shape}",
                        "reshape the data to (n_samples, n_features)")
    if int(block_size) < 1:
        raise DataError(f"blockwise_gram: block_size must be >= 1, got {block_size}",
                        "use e.g. block_size=4096")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise DataError(f"blockwise_gram: dtype must be float32 or float64, got {dtype}",
                        "pass dtype=np.float32")
    n, p = X_shape
    if Y is not None:
        if len(Y.shape) != 2 or Y.shape[1] != p:
            raise DataError(f"blockwise_gram: X has {p} features but Y has shape {Y.shape}",
                            "give both operands the same features (columns)")
    m = n if Y is None else Y.shape[0]
    block_size = int(block_size)
    starts = range(0, p, block_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc="gram blocks", unit="block")

    # Fortran-ordered so BLAS writes the product in place without a copy.
    K = np.zeros((n, m), dtype=np.float64, order="F")
    # zeros: syrk writes only the upper triangle, the lower one must stay 0 for K +=
    product = np.zeros((n, m), dtype=dtype, order="F")
    syrk = blas.ssyrk if dtype == np.float32 else blas.dsyrk
    for start in starts:
        A = _block(X, start, start + block_size, dtype)
        if Y is None:
            # A is C-contiguous (n, b): A.T is Fortran (b, n) and trans=1 gives
            # A @ A.T in the upper triangle, written into ``product`` directly.
            product = syrk(1.0, A.T, beta=0.0, c=product, trans=1, lower=0, overwrite_c=1)
        else:
            np.matmul(A, _block(Y, start, start + block_size, dtype).T, out=product)
        K += product  # float64 accumulator
    del product
    if Y is None:
        _symmetrize_upper(K)
    return np.ascontiguousarray(K) if Y is not None else K.T  # K.T: C-ordered, same values


def _release_pages(arr) -> None:
    """Unmap the pages of a ``np.memmap`` read so far (they stay in the page cache).

    Without this the process's resident set grows to the whole file (4 GB at
    10,000 x 100,000) although the kernel could reclaim it; dropping the
    mappings keeps RSS at the working set, and a later read of the same
    pages is a cheap page-cache hit.
    """
    handle = getattr(arr, "_mmap", None)  # numpy keeps the mmap object here
    if handle is None or not hasattr(handle, "madvise"):
        return
    try:
        handle.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError, AttributeError):  # platform without MADV_DONTNEED
        pass


def _symmetrize_upper(K, rows: int = 2048) -> None:
    """Copy the upper triangle onto the lower one in place, a band at a time.

    ``np.triu_indices`` would need 16 bytes per entry (1.6 GB at n=10,000).
    """
    n = K.shape[0]
    for i in range(0, n, rows):
        j = min(i + rows, n)
        band = K[i:j, i:j]
        K[i:j, i:j] = np.triu(band) + np.triu(band, 1).T
        K[j:, i:j] = K[i:j, j:].T
