"""Shared-memory tiled matrix products on the GPU, and the one tiled loop every product here uses.

The product ``C = op(A) @ op(B)`` with ``op(A)`` (M, K), ``op(B)`` (K, N) and C (M, N):

    C[m, n] = sum_k op(A)[m, k] op(B)[k, n]

Thread mapping: one block of TILE x TILE threads owns one TILE x TILE tile of C, and thread
(ty, tx) owns the element C[row0 + ty, col0 + tx]. Computing it needs a whole row of op(A) and a
whole column of op(B); read straight from global memory, every element of A would be fetched N
times and every element of B M times. The block instead walks K in steps of TILE: all its
threads together copy a TILE x TILE tile of op(A) and one of op(B) into shared memory (one
element per thread), wait at a barrier, and then each thread does TILE multiply-adds from the
fast shared copies. Every element loaded from global memory is used TILE times.

Which element each thread copies is chosen for coalescing: threads with consecutive
``threadIdx.x`` (they sit side by side in a warp) must read consecutive addresses. So the tile of
an operand is read along the axis that is contiguous in memory: along k for A stored (M, K), and
along m for A stored transposed, (K, M); the same for B. The transposed copy lands in shared
memory transposed (``tile[tx, ty]``), so the multiply-add loop reads the tiles the same way in
all cases. The tiles are TILE x (TILE + 1): with the extra column, a transposed copy (consecutive
threads writing down a column) spreads over (nearly) all shared-memory banks instead of a few.

The same loop computes convolutions (``conv.py``): an *implicit GEMM* has the same tiles but
gathers op(A) and op(B) from images through index arithmetic instead of reading stored matrices.
``tiled_product_kernel`` therefore takes three *index maps*, device functions that say where
op(A)[m, k], op(B)[k, n] and C[m, n] live in memory; this module and ``conv.py`` only differ in
those maps.

Products are batched: ``A`` (Z, M, K) with ``B`` (Z, K, N) gives ``C`` (Z, M, N), the batch
index running over the z axis of the grid; an operand with batch 1 is shared by every product.
"""
from __future__ import annotations

import functools

import numpy as np
from numba import cuda, from_dtype

from . import launch

# Largest grid size along y and z that CUDA allows.
_MAX_GRID_YZ = 65535


@functools.lru_cache(maxsize=None)
def tiled_product_kernel(dtype, a_index, a_along_k, b_index, b_along_n, c_index):
    """Compile ``kernel(c, a, b, M, N, K, batch, params, alpha, beta)`` for one dtype:

        C = alpha * op(A) @ op(B) + beta * C     (C is not read when beta is 0)

    ``a``, ``b`` and ``c`` are flat (1-D) device arrays, and where each matrix element lives in
    them is told by *index maps*, device functions of plain integers:
    ``a_index(params, z, m, k)`` and ``b_index(params, z, k, n)`` give the position of
    op(A)[m, k] and op(B)[k, n] of product z, or -1 for an element that is 0 without being
    stored (outside an image, say); ``c_index(params, z, m, n)`` gives the position of C[m, n].
    They are only called inside the M x N x K box. ``params`` is a tuple of integers (shapes,
    strides) passed through to them.

    ``a_along_k`` says that consecutive k are adjacent in memory for A (else consecutive m
    are), ``b_along_n`` the same for n in B: it decides which way the threads of a block walk a
    tile when they copy it (see the module docstring). Kernels are cached by their arguments;
    there is one per dtype because a shared array needs its element type at compile time.
    """
    element = from_dtype(np.dtype(dtype))
    TILE = launch.TILE
    ROW = TILE + 1      # a shared array's shape must be constants, so not computed in the kernel

    @cuda.jit
    def kernel(c, a, b, M, N, K, batch, params, alpha, beta):
        """Thread (ty, tx) of a TILE x TILE block owns C[row0 + ty, col0 + tx]. For each step
        of TILE along k it copies one element of op(A) and one of op(B) into the shared tiles
        (threadIdx.x walking the operand's contiguous axis, so a warp's loads are coalesced),
        then accumulates TILE products from shared memory. Writes: consecutive tx own
        consecutive columns n of C. Blocks walk the tiles of C (and the batch) in grid-stride
        loops, so any grid computes the same result; elements outside M x N x K are read as 0
        (ragged edge tiles) and not written."""
        a_tile = cuda.shared.array((TILE, ROW), element)    # a_tile[m, k]
        b_tile = cuda.shared.array((TILE, ROW), element)    # b_tile[k, n]
        zero = element(0)
        ty, tx = cuda.threadIdx.y, cuda.threadIdx.x
        # This thread copies a_tile[ai, aj] and b_tile[bi, bj]: tx runs along the operand's
        # contiguous axis, k for A stored (M, K), m for A stored (K, M); n or k for B.
        ai, aj = (ty, tx) if a_along_k else (tx, ty)
        bi, bj = (ty, tx) if b_along_n else (tx, ty)
        for z in range(cuda.blockIdx.z, batch, cuda.gridDim.z):
            for row0 in range(cuda.blockIdx.y * TILE, M, cuda.gridDim.y * TILE):
                for col0 in range(cuda.blockIdx.x * TILE, N, cuda.gridDim.x * TILE):
                    acc = zero
                    for k0 in range(0, K, TILE):
                        m, k = row0 + ai, k0 + aj
                        at = a_index(params, z, m, k) if m < M and k < K else -1
                        a_tile[ai, aj] = a[at] if at >= 0 else zero
                        k, n = k0 + bi, col0 + bj
                        at = b_index(params, z, k, n) if k < K and n < N else -1
                        b_tile[bi, bj] = b[at] if at >= 0 else zero
                        cuda.syncthreads()
                        for kk in range(TILE):
                            acc += a_tile[ty, kk] * b_tile[kk, tx]
                        # Nobody may overwrite the tiles while another thread still reads them.
                        cuda.syncthreads()
                    m, n = row0 + ty, col0 + tx
                    if m < M and n < N:
                        at = c_index(params, z, m, n)
                        if beta == 0:
                            c[at] = alpha * acc
                        else:
                            c[at] = alpha * acc + beta * c[at]

    return kernel


def tile_grid(rows, cols, batch=1, max_blocks=launch.MAX_BLOCKS):
    """(grid, block) for a tiled product: one TILE x TILE block per output tile (x along the
    columns, y along the rows, z along the batch), capped at ``max_blocks`` blocks in all and
    at CUDA's limit on y and z; the kernels loop over the remaining tiles."""
    T = launch.TILE
    gx = min((cols + T - 1) // T, max_blocks)
    gy = min((rows + T - 1) // T, max(1, max_blocks // gx), _MAX_GRID_YZ)
    gz = min(batch, max(1, max_blocks // (gx * gy)), _MAX_GRID_YZ)
    return (gx, gy, gz), (T, T)


def launch_tiled(kernel, c, a, b, M, N, K, params, batch=1, alpha=1.0, beta=0.0, grid=None):
    """Run a kernel from ``tiled_product_kernel`` on device arrays (any shape, contiguous) for
    an M x N x K product (times ``batch``). ``grid`` overrides the launch size (the tests use
    it: the result must not depend on it)."""
    if M == 0 or N == 0 or batch == 0:
        return
    if grid is None:
        grid, block = tile_grid(M, N, batch)
    else:
        block = (launch.TILE, launch.TILE)
    scalar = c.dtype.type
    kernel[grid, block](launch.flat(c), launch.flat(a), launch.flat(b), M, N, K, batch, params,
                        scalar(alpha), scalar(beta))


# --------------------------------------------------------------------------------------------
# Plain (batched) GEMM: the operands are stored matrices, (Z, M, K) or (Z, K, M) for A.
# --------------------------------------------------------------------------------------------


# The index maps; params = (M, N, K, A's batch stride, B's batch stride), where a stride of 0
# shares one operand among all products. Consecutive threads walk the last (contiguous) axis.

@cuda.jit(device=True)
def _a_index(params, z, m, k):
    """A stored (Z, M, K): element [z, m, k]."""
    M, N, K, a_batch_stride, b_batch_stride = params
    return z * a_batch_stride + m * K + k


@cuda.jit(device=True)
def _a_transposed_index(params, z, m, k):
    """A stored (Z, K, M): op(A)[m, k] is element [z, k, m]."""
    M, N, K, a_batch_stride, b_batch_stride = params
    return z * a_batch_stride + k * M + m


@cuda.jit(device=True)
def _b_index(params, z, k, n):
    """B stored (Z, K, N): element [z, k, n]."""
    M, N, K, a_batch_stride, b_batch_stride = params
    return z * b_batch_stride + k * N + n


@cuda.jit(device=True)
def _b_transposed_index(params, z, k, n):
    """B stored (Z, N, K): op(B)[k, n] is element [z, n, k]."""
    M, N, K, a_batch_stride, b_batch_stride = params
    return z * b_batch_stride + n * K + k


@cuda.jit(device=True)
def _c_index(params, z, m, n):
    """C stored (Z, M, N)."""
    M, N, K, a_batch_stride, b_batch_stride = params
    return (z * M + m) * N + n


def gemm_kernel(dtype, trans_a, trans_b):
    """The tiled kernel for op(A) @ op(B) with the given transposes (stored operands)."""
    return tiled_product_kernel(np.dtype(dtype),
                                _a_transposed_index if trans_a else _a_index, not trans_a,
                                _b_transposed_index if trans_b else _b_index, not trans_b,
                                _c_index)


def _batched_shape(a):
    """(Z, rows, cols) of a 2-D (Z = 1) or 3-D array."""
    shape = tuple(a.shape)
    return (1,) + shape if len(shape) == 2 else shape


def gemm_into(out, a, b, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, grid=None):
    """``out = alpha * op(A) @ op(B) + beta * out`` on device arrays, 2-D or batched 3-D.

    Shapes: A (M, K) or, transposed, (K, M); B (K, N) or (N, K); out (M, N). With a batch axis
    in front (Z, ...), an operand of batch 1 is shared by all Z products. ``out`` has the
    result dtype; its previous content is only read when ``beta`` is not 0.
    """
    a_batch, a_rows, a_cols = _batched_shape(a)
    b_batch, b_rows, b_cols = _batched_shape(b)
    batch, out_rows, out_cols = _batched_shape(out)
    M, K = (a_cols, a_rows) if trans_a else (a_rows, a_cols)
    K_b, N = (b_cols, b_rows) if trans_b else (b_rows, b_cols)
    if K_b != K or (out_rows, out_cols) != (M, N):
        raise ValueError(f"gemm: op(A) is {M}x{K}, op(B) {K_b}x{N}, out {tuple(out.shape)}")
    if a_batch not in (1, batch) or b_batch not in (1, batch):
        raise ValueError(f"gemm: batch sizes {a_batch}, {b_batch} do not fit {batch}")
    a_stride = 0 if a_batch == 1 else M * K
    b_stride = 0 if b_batch == 1 else K * N
    launch_tiled(gemm_kernel(out.dtype, trans_a, trans_b), out, a, b, M, N, K,
                 (M, N, K, a_stride, b_stride), batch=batch, alpha=alpha, beta=beta, grid=grid)
    return out


def gemm(a, b, trans_a=False, trans_b=False, out=None, alpha=1.0, beta=0.0):
    """``alpha * op(A) @ op(B) (+ beta * out)`` for host or device arrays (see ``gemm_into``).

    A new output is allocated unless ``out`` is given (then it is updated in place and must
    be a device array when the inputs are). Host inputs give a host result, device inputs a
    device result. The result dtype is A's.
    """
    host, a_dev, b_dev = launch.receive(a, b)
    host = host and launch.on_host(out)
    if out is not None and not host and not launch.is_device_array(out):
        raise ValueError("gemm: out is a host array but an operand is on the device; pass a "
                         "device array as out (or host operands)")
    if out is None:
        a_batch, a_rows, a_cols = _batched_shape(a_dev)
        b_batch, b_rows, b_cols = _batched_shape(b_dev)
        shape = (a_cols if trans_a else a_rows, b_rows if trans_b else b_cols)
        if len(a_dev.shape) == 3 or len(b_dev.shape) == 3:
            shape = (max(a_batch, b_batch),) + shape
        out_dev, beta = launch.empty(shape, a_dev.dtype), 0.0
    else:
        out_dev = launch.to_device(out)
    gemm_into(out_dev, a_dev, b_dev, trans_a, trans_b, alpha, beta)
    if host and out is not None:
        out[...] = out_dev.copy_to_host()
        return out
    return launch.like_input(host, out_dev)
