r"""Fast SRU (numba), forward and backward: the twin of :mod:`refrnn.cells.sru`, every option included.

Equations (those of :mod:`refrnn.cells.sru`; ``*`` is the element-wise product)::

    U     = x W^T                                   ONE product for all T*B rows: (T*B, D) @ (D, k*H)
    f_t   = sigmoid(U_f,t + v_f * c_{t-1} + b_f)    v terms absent when params.v is None
    r_t   = sigmoid(U_r,t + v_r * c_{t-1} + b_r)
    c_t   = f_t * c_{t-1} + (1 - f_t) * U_c,t
    h_t   = r_t * g(c_t) + (1 - r_t) * s_t          s_t = alpha * x_t[o:o+H] | alpha * U_s,t | absent
    padded step (mask_pad true): c_t = c_{t-1}, h_t = 0

Backward (BPTT, the reference's derivation; ``dc`` is dL/dc_t flowing back, ``dh = dy_t``)::

    dc_t~ = dc + dh * r * g'(c_t)                   total dL/dc_t
    dU_c  = dc_t~ * (1 - f)
    dU_f  = dc_t~ * (c_{t-1} - U_c) * f (1 - f)     = da_f
    dU_r  = dh * (g - s) * r (1 - r)                = da_r   (s = 0 without a skip term)
    ds    = alpha * dh * (1 - r)                    into dU_s (projection) or dx[..., o:o+H] (identity)
    dc    = dc_t~ * f + da_f * v_f + da_r * v_r     dL/dc_{t-1}
    dv   += [da_f * c_{t-1}, da_r * c_{t-1}],  db += [da_f, da_r]
    dW    = dU^T x,  dx = dU W                      two products over all T*B rows

Batching. As in the reference, the only products are over all T*B rows at once: ``U = x W^T``
forward, ``dW = dU^T x`` and ``dx = dU W`` backward, one GEMM each; the recurrence is element-wise
(no per-step product). Per step and task, backward's gate derivatives (``dc_t~``, ``da_f``,
``da_r``, ``dU_c``, the skip gradient, ``dc_{t-1}``, the ``dv``/``db`` sums) are one pass over the
task's units: a few row loops back to back whose rows stay in L1.

How it runs. The products go through BLAS (``np.dot`` inside numba, i.e. the library SciPy ships,
one thread pool for the whole path). Everything else is one element-wise kernel per direction,
``prange`` over *tasks*: a task owns one sample ``b`` and one stretch ``[j0, j1)`` of units and
walks all T steps itself, so the state ``c`` of its units never leaves the core, no two threads
touch the same output, and the backward's ``dv``/``db`` are summed per sample (``acc`` (B, 4H),
reduced over ``B`` afterwards) with no race. Tasks are whole rows when ``B`` alone keeps every
thread busy, otherwise rows split in stretches of a multiple of 16 units.

Inside a task each step is a few row loops over contiguous 1-d slices, each touching at most ~6
arrays: LLVM vectorises a loop only if it can rule out overlap between what it writes and what it
reads by run-time checks, whose number it caps; one loop doing the whole step (11+ arrays) stays
scalar (see :mod:`refrnn.jit._kernels`, "Row loops"). The state of inference is a two-slot ring
(writing ``c`` in place over ``c_{t-1}`` would make the overlap check fail and the loop scalar).

Caches. :func:`forward` returns the reference's :class:`refrnn.cells.sru.SRUCache`, so either
backward (this module's or :func:`refrnn.cells.sru.backward`) consumes it; ``g`` is the view
``c[1:]`` when g is the identity and nothing is padded (equal values, no copy). :func:`backward`
accepts a cache from either forward.

Activations: float32 uses the polynomial ``exp`` of :mod:`refrnn.jit._kernels` (no SVML in this
llvmlite, so ``math.exp`` in a loop runs scalar); float64 uses libm, and agrees with the reference
within 1e-10 (the on-disk cache of :mod:`refrnn.jit._cache` recompiles these kernels when
:mod:`refrnn.jit._kernels` changes). The float32 tolerance is argued in
``tests/test_jit_sru.py``.

Directions: :func:`reverse_forward` / :func:`bidirectional_forward` and their backwards mirror the
reference's, built on the functions here.

Shapes: x (T, B, D); state0 = c_0 (B, H); y (T, B, H) = h_1..h_T; c_T (B, H); mask_pad (T, B).
Time-major. ``state0`` and ``dstate_T`` (dL/dc_T) are the names every cell uses; the former
``c0=`` and ``dc_T=`` still work for one release (with a DeprecationWarning).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import get_num_threads, prange

from .._checks import float_array
from .._moved import renamed
from ..cells import sru as reference
from ..cells._common import frozen
from ..cells.sru import SRUCache, SRUParams
from . import _kernels
from ._cache import njit
from ._kernels import _copy, _sigmoid_grad_of_difference, _sigmoid_grad_of_product
from ._kernels import sigmoid as _sigmoid
from ._onepool import product as _product  # a @ b in the BLAS the kernels use (one thread pool)
# Every array the kernels only read goes in read-only, whatever the caller had (an ``x`` that is a
# frozen ``y`` of the layer below, a frozen cache, a fresh ``dy``): one signature per dtype, and each
# costs ~10 s of compilation on a cold cache.
from ._onepool import readonly as _readonly

SKIP_CODES = {"none": 0, "identity": 1, "projection": 2}
# Fused multiply-add only, and no zero test in every division (which would keep sigmoid's loops
# scalar; the divisors here are 1 + exp(.) >= 1): the options of every kernel, see refrnn.jit._kernels.
JIT = _kernels.JIT
LANES = 16  # stretches of units are multiples of this: one AVX-512 register of float32
TASKS_PER_THREAD = 4  # enough tasks that threads finishing early find work


class Options(NamedTuple):
    """The scalar options of an SRU, as both kernels read them (build with :func:`_options`)."""

    skip: int  # SKIP_CODES[params.skip]
    offset: int  # params.skip_offset: x's first column of the identity skip
    alpha: np.generic  # the highway scale, a scalar of the params' dtype
    use_tanh: bool  # g = tanh, else the identity
    has_v: bool  # params.v is not None (backward: accumulate dv)

# ---------------------------------------------------------------------------------------------
# Row loops: 1-d contiguous slices of one task's units, few arrays each (see the module docstring)
# ---------------------------------------------------------------------------------------------


@njit(**JIT)
def _gate(out, u, bias, v, c):
    """out = sigmoid(u + bias + v * c)"""
    for j in range(out.shape[0]):
        out[j] = _sigmoid(u[j] + bias[j] + v[j] * c[j])


@njit(**JIT)
def _update(c_next, f, c_prev, u_c):
    """c_next = f * c_prev + (1 - f) * u_c"""
    for j in range(c_next.shape[0]):
        c_next[j] = f[j] * c_prev[j] + (1.0 - f[j]) * u_c[j]


@njit(**JIT)
def _zero(out):
    for j in range(out.shape[0]):
        out[j] = 0.0


@njit(**JIT)
def _scale(out, a, alpha):
    """out = alpha * a: the skip term s_t, stored for backward."""
    for j in range(out.shape[0]):
        out[j] = alpha * a[j]


@njit(**JIT)
def _gated(h, r, g):
    """h = r * g (skip="none")"""
    for j in range(h.shape[0]):
        h[j] = r[j] * g[j]


@njit(**JIT)
def _highway(h, r, g, src, alpha):
    """h = r * g + (1 - r) * (alpha * src)"""
    for j in range(h.shape[0]):
        h[j] = r[j] * g[j] + (1.0 - r[j]) * (alpha * src[j])


@njit(**JIT)
def _task(i, n_stretch, stretch, H):
    """Task i -> (sample b, units [j0, j1))."""
    b = i // n_stretch
    j0 = (i - b * n_stretch) * stretch
    return b, j0, min(j0 + stretch, H)


@njit(parallel=True, **JIT)
def forward_kernel(U, x, pad, vb, options, h, cache, stretch):
    """The recurrence over U (T, B, kH) = x W^T (without bias).

    ``pad`` (T, B) bool, or (0, 0) without a mask. ``vb`` (4, H) = [v_f, v_r, b_f, b_r] (zeros for
    v when the model has none: adding +-0 changes no bit). ``options``: :class:`Options`. ``h``
    (T, B, H) = y. ``cache`` = (cs, f, r, g, uc, s), the arrays of an
    :class:`refrnn.cells.sru.SRUCache` it fills: ``cs`` (T+1, B, H) training or (2, B, H) inference
    ring, ``cs[0] = c0`` filled by the caller; ``f, r`` (T, B, H) training or (1, B, H) scratch;
    ``g`` (T, B, H) written when kept (the cache) and, with ``use_tanh``, also as scratch (then
    (1, B, H) in inference), or (0, B, H): g(c) = c is read from ``cs``. ``uc``, ``s`` (T, B, H)
    receive the cache's U_c and s_t, or are (0, B, H): not kept.
    """
    T, B, H = h.shape
    n_stretch = (H + stretch - 1) // stretch
    # The parallel loop only calls the task: numba's parfor passes then analyse a one-line body, and
    # the task compiles as plain njit code (measured: about half the cold compile time).
    for i in prange(B * n_stretch):
        _forward_task(i, n_stretch, stretch, U, x, pad, vb, options, h, cache)


@njit(**JIT)
def _forward_task(i, n_stretch, stretch, U, x, pad, vb, options, h, cache):
    """One task of :func:`forward_kernel`: sample b, units [j0, j1), all T steps."""
    cs, f, r, g, uc, s = cache
    skip, off, alpha, use_tanh = options.skip, options.offset, options.alpha, options.use_tanh
    T, B, H = h.shape
    n_ring, last_f, last_g = cs.shape[0], f.shape[0] - 1, g.shape[0] - 1
    write_g, keep_uc, keep_s, has_pad = g.shape[0] > 0, uc.shape[0] > 0, s.shape[0] > 0, pad.shape[0] > 0
    b, j0, j1 = _task(i, n_stretch, stretch, H)
    v_f, v_r, b_f, b_r = vb[0][j0:j1], vb[1][j0:j1], vb[2][j0:j1], vb[3][j0:j1]
    for t in range(T):
        U_tb = U[t, b]
        c_prev = cs[t % n_ring, b][j0:j1]
        c_next = cs[(t + 1) % n_ring, b][j0:j1]
        f_t = f[min(t, last_f), b][j0:j1]
        r_t = r[min(t, last_f), b][j0:j1]
        u_c = U_tb[j0:j1]
        _gate(f_t, U_tb[H + j0 : H + j1], b_f, v_f, c_prev)
        _gate(r_t, U_tb[2 * H + j0 : 2 * H + j1], b_r, v_r, c_prev)
        _update(c_next, f_t, c_prev, u_c)
        if keep_uc:
            _copy(uc[t, b][j0:j1], u_c)
        g_t = c_next
        if write_g:  # kept for the cache, or the scratch of tanh
            g_t = g[min(t, last_g), b][j0:j1]
            if use_tanh:
                _kernels._tanh(g_t, c_next)
            else:
                _copy(g_t, c_next)  # g = c, kept apart from c only where a mask will overwrite c
        h_t = h[t, b][j0:j1]
        # Two calls, not one on a row picked by a branch: x is read-only and U is not, and numba
        # cannot unify the two array types.
        if skip == 0:
            _gated(h_t, r_t, g_t)
        elif skip == 1:
            _highway(h_t, r_t, g_t, x[t, b][off + j0 : off + j1], alpha)
            if keep_s:
                _scale(s[t, b][j0:j1], x[t, b][off + j0 : off + j1], alpha)
        else:
            _highway(h_t, r_t, g_t, U_tb[3 * H + j0 : 3 * H + j1], alpha)
            if keep_s:
                _scale(s[t, b][j0:j1], U_tb[3 * H + j0 : 3 * H + j1], alpha)
        if has_pad and pad[t, b]:  # sru's mask_pad: the state passes through, the output is 0
            _copy(c_next, c_prev)
            _zero(h_t)


@njit(**JIT)
def _total_dc(out, dc, dh, r, g):
    """out = dc + dh * r   (g = identity: g' = 1)"""
    for j in range(out.shape[0]):
        out[j] = dc[j] + dh[j] * r[j]


@njit(**JIT)
def _total_dc_tanh(out, dc, dh, r, g):
    """out = dc + dh * r * (1 - g^2)"""
    for j in range(out.shape[0]):
        out[j] = dc[j] + dh[j] * r[j] * (1.0 - g[j] * g[j])


@njit(**JIT)
def _d_skip(out, dh, r, alpha):
    """out = alpha * (dh * (1 - r)): the gradient at U_s or at x's skip columns"""
    for j in range(out.shape[0]):
        out[j] = alpha * (dh[j] * (1.0 - r[j]))


@njit(**JIT)
def _du_c(out, dct, f):
    """out = dct * (1 - f)"""
    for j in range(out.shape[0]):
        out[j] = dct[j] * (1.0 - f[j])


@njit(**JIT)
def _dc_prev(out, dct, f, da_f, v_f, da_r, v_r):
    """out = dct * f + da_f * v_f + da_r * v_r"""
    for j in range(out.shape[0]):
        out[j] = dct[j] * f[j] + da_f[j] * v_f[j] + da_r[j] * v_r[j]


@njit(parallel=True, **JIT)
def backward_kernel(dy, cache, vb, options, dc, grads, stretch):
    """BPTT of the recurrence, t = T-1 .. 0, each task over its own units (see the module docstring).

    Reads ``cache`` = (x, cs, f, r, g, uc, s, pad), an :class:`refrnn.cells.sru.SRUCache`'s arrays
    (``cs`` (T+1, B, H), ``f, r, g, uc`` (T, B, H), ``s`` (T, B, H) or (0, B, H) without a skip
    term, ``pad`` (T, B) or (0, 0); ``x`` is not read), ``vb`` (4, H) = [v_f, v_r, ...] (zeros
    without v), ``options``: :class:`Options`. ``dc`` (B, H) holds dL/dc_T on entry and dL/dc_0 on
    exit. Writes ``grads`` = (dU, ds, acc): ``dU`` (T, B, kH), every block, the skip block included
    for a projection; ``ds`` (T, B, H) the identity skip's gradient at x's skip columns (else
    (0, B, H)); ``acc`` (B, 4H) += [dv_f, dv_r, db_f, db_r], per sample.
    """
    T, B, H = dy.shape
    n_stretch = (H + stretch - 1) // stretch
    dct = np.empty((B, H), dy.dtype)  # dL/dc_t in full, per task's units
    for i in prange(B * n_stretch):
        _backward_task(i, n_stretch, stretch, dy, cache, vb, options, dc, grads, dct)


@njit(**JIT)
def _backward_task(i, n_stretch, stretch, dy, cache, vb, options, dc, grads, dct):
    """One task of :func:`backward_kernel`: sample b, units [j0, j1), t = T-1 .. 0."""
    _, cs, f, r, g, uc, s, pad = cache
    dU, ds, acc = grads
    skip, alpha = options.skip, options.alpha
    T, B, H = dy.shape
    has_pad = pad.shape[0] > 0
    b, j0, j1 = _task(i, n_stretch, stretch, H)
    v_f, v_r = vb[0][j0:j1], vb[1][j0:j1]
    dc_b, dct_b = dc[b][j0:j1], dct[b][j0:j1]
    acc_b = acc[b]
    for t in range(T - 1, -1, -1):
        dU_tb = dU[t, b]
        du_c, da_f, da_r = dU_tb[j0:j1], dU_tb[H + j0 : H + j1], dU_tb[2 * H + j0 : 2 * H + j1]
        if has_pad and pad[t, b]:
            # Nothing at a padded step depends on x_t or the parameters; dc goes around the step.
            _zero(du_c)
            _zero(da_f)
            _zero(da_r)
            if skip == 2:
                _zero(dU_tb[3 * H + j0 : 3 * H + j1])
            elif skip == 1:
                _zero(ds[t, b][j0:j1])
            continue
        dh, f_t, r_t, g_t = dy[t, b][j0:j1], f[t, b][j0:j1], r[t, b][j0:j1], g[t, b][j0:j1]
        c_prev = cs[t, b][j0:j1]
        if options.use_tanh:
            _total_dc_tanh(dct_b, dc_b, dh, r_t, g_t)
        else:
            _total_dc(dct_b, dc_b, dh, r_t, g_t)
        if skip == 0:
            _sigmoid_grad_of_product(da_r, dh, g_t, r_t)  # da_r = dh * g * r'
        else:
            _sigmoid_grad_of_difference(da_r, dh, g_t, s[t, b][j0:j1], r_t)  # da_r = dh * (g - s) * r'
            if skip == 2:
                _d_skip(dU_tb[3 * H + j0 : 3 * H + j1], dh, r_t, alpha)
            else:
                _d_skip(ds[t, b][j0:j1], dh, r_t, alpha)
        _sigmoid_grad_of_difference(da_f, dct_b, c_prev, uc[t, b][j0:j1], f_t)  # da_f = dct * (c_prev - U_c) * f'
        _du_c(du_c, dct_b, f_t)
        _dc_prev(dc_b, dct_b, f_t, da_f, v_f, da_r, v_r)
        if options.has_v:
            _kernels._add_product_into(acc_b[j0:j1], da_f, c_prev)
            _kernels._add_product_into(acc_b[H + j0 : H + j1], da_r, c_prev)
        _kernels._add_into(acc_b[2 * H + j0 : 2 * H + j1], da_f)
        _kernels._add_into(acc_b[3 * H + j0 : 3 * H + j1], da_r)


# ---------------------------------------------------------------------------------------------
# Python entry points
# ---------------------------------------------------------------------------------------------


def _check_params(params) -> SRUParams:
    if not isinstance(params, SRUParams):
        raise TypeError(f"params: expected SRUParams (refrnn.cells.sru), got {type(params).__name__}")
    return params


def stretch_for(B: int, H: int, threads: int | None = None) -> int:
    """Units per task: whole rows when B samples already give every thread ``TASKS_PER_THREAD``
    tasks, else rows cut into stretches (multiples of ``LANES``) until they do."""
    threads = get_num_threads() if threads is None else threads
    want = TASKS_PER_THREAD * threads
    if B >= want:
        return H
    pieces = -(-want // max(B, 1))
    stretch = -(-H // pieces)
    return min(H, max(LANES, -(-stretch // LANES) * LANES))


def _vb(params: SRUParams) -> np.ndarray:
    """(4, H) = [v_f, v_r, b_f, b_r], read-only (v zeros when the model has none)."""
    H = params.hidden_size
    v = np.zeros(2 * H, params.dtype) if params.v is None else params.v
    return _readonly(np.concatenate([v, params.b]).reshape(4, H))


def _options(params: SRUParams) -> Options:
    return Options(SKIP_CODES[params.skip], params.skip_offset, params.dtype.type(params.alpha),
                   params.activation == "tanh", params.v is not None)


def _run(params, x, c0, mask_pad, train):
    params = _check_params(params)
    x, c0, pad = reference.check_inputs(params, x, c0, mask_pad)
    T, B, D = x.shape
    H, dt = params.hidden_size, params.dtype
    xc = _readonly(x)
    W = np.ascontiguousarray(params.W)
    U = _product(xc.reshape(T * B, D), W.T).reshape(T, B, params.k * H)  # no bias: the kernel adds it
    options = _options(params)
    skip, use_tanh = options.skip, options.use_tanh
    keep_g = train and pad is not None and not use_tanh
    steps = T if train else 1
    cs = np.empty((T + 1 if train else 2, B, H), dt)
    cs[0] = c0
    h = np.empty((T, B, H), dt)
    f, r = np.empty((steps, B, H), dt), np.empty((steps, B, H), dt)
    g = np.empty((steps if (use_tanh or keep_g) else 0, B, H), dt)
    uc = np.empty((T if train else 0, B, H), dt)
    s = np.empty((T if train and skip else 0, B, H), dt)
    pad_k = _readonly(np.zeros((0, 0), np.bool_) if pad is None else pad)
    forward_kernel(U, xc, pad_k, _vb(params), options, h, (cs, f, r, g, uc, s), stretch_for(B, H))
    c_T = cs[T % cs.shape[0]].copy()
    if not train:
        return h, c_T, None
    if not (use_tanh or keep_g):
        g = cs[1:]  # g = c_t itself: the same values the reference stores, without a copy
    frozen(cs, f, r, g, uc, h)
    if skip:
        frozen(s)
    else:
        s = None
    if pad is not None:
        frozen(pad)
    return h, c_T, SRUCache(x, cs, f, r, g, uc, s, pad)


@renamed(c0="state0")
def forward(params: SRUParams, x, state0=None, mask_pad=None) -> tuple[np.ndarray, np.ndarray, SRUCache]:
    """Training forward: ``(y, c_T, cache)`` exactly as :func:`refrnn.cells.sru.forward` returns them.

    ``cache`` is an :class:`refrnn.cells.sru.SRUCache` for :func:`backward` (or the reference's).
    ``y`` is read-only, like the reference's.
    """
    return _run(params, x, state0, mask_pad, train=True)


@renamed(c0="state0")
def forward_inference(params: SRUParams, x, state0=None, mask_pad=None) -> tuple[np.ndarray, np.ndarray]:
    """Inference forward: ``(y, c_T)``, nothing kept for backward (one step of gates, two of c)."""
    y, c_T, _ = _run(params, x, state0, mask_pad, train=False)
    return y, c_T


def _check_cache(params: SRUParams, cache) -> SRUCache:
    if not isinstance(cache, SRUCache):
        raise TypeError(f"cache: expected the SRUCache of refrnn.jit.sru.forward or refrnn.cells.sru.forward, got {type(cache).__name__}")
    x, c, f = cache.x, cache.c, cache.f
    T, B, _ = x.shape
    want = {"x": (T, B, params.input_size), "c": (T + 1, B, params.hidden_size), "f": (T, B, params.hidden_size)}
    for name, arr in (("x", x), ("c", c), ("f", f)):
        if arr.shape != want[name] or arr.dtype != params.dtype:
            raise ValueError(
                f"cache.{name}: shape {arr.shape} dtype {arr.dtype} does not fit these params: expected shape "
                f"{want[name]} dtype {params.dtype} (a cache from other parameters?)"
            )
    if (cache.s is None) != (params.skip == "none"):
        raise ValueError(f"cache.s: a cache {'without' if cache.s is None else 'with'} a skip term, but params.skip={params.skip!r}")
    return cache


@renamed(dc_T="dstate_T")
def backward(params: SRUParams, cache: SRUCache, dy, dstate_T=None) -> tuple[SRUParams, np.ndarray, np.ndarray]:
    """Backprop through time: ``(grads, dx, dc0)``, as :func:`refrnn.cells.sru.backward` returns them.

    ``dy`` (T, B, H) is dL/dy, ``dstate_T`` (B, H) dL/dc_T (None: zero). ``grads.v`` is None when
    ``params.v`` is. ``cache`` may come from this module's :func:`forward` or the reference's.
    """
    params = _check_params(params)
    x, c, f, r, g, U_c, s, pad = _check_cache(params, cache)
    T, B, H = f.shape
    D, k, dt = params.input_size, params.k, params.dtype
    dims = {"T": T, "B": B, "H": H}
    dy = float_array("dy", dy, ("T", "B", "H"), dims, dtype=dt)
    dc = np.zeros((B, H), dt) if dstate_T is None else float_array("dstate_T", dstate_T, ("B", "H"), dims, dtype=dt).copy()
    skip = SKIP_CODES[params.skip]
    C = _readonly
    dU = np.empty((T, B, k * H), dt)
    ds = np.empty((T if skip == 1 else 0, B, H), dt)
    acc = np.zeros((B, 4 * H), dt)
    # Placeholders read-only like the cache arrays they stand for: one compiled signature, not two.
    pad_k = C(np.zeros((0, 0), np.bool_) if pad is None else pad)
    s_k = C(np.empty((0, B, H), dt) if s is None else s)
    cached = (C(x), C(c), C(f), C(r), C(g), C(U_c), s_k, pad_k)
    backward_kernel(C(dy), cached, _vb(params), _options(params), dc, (dU, ds, acc), stretch_for(B, H))
    flat = dU.reshape(T * B, k * H)
    sums = acc.sum(axis=0)
    grads = params.replace(
        W=_product(flat.T, C(x).reshape(T * B, D)),
        v=None if params.v is None else sums[: 2 * H],
        b=sums[2 * H :],
    )
    dx = _product(flat, C(params.W)).reshape(T, B, D)
    if skip == 1:
        dx[..., params.skip_offset : params.skip_offset + H] += ds
    return grads, dx, dc


# ---------------------------------------------------------------------------------------------
# Directions: the reference's wrappers, on the fast forward and backward
# ---------------------------------------------------------------------------------------------


reverse_forward, reverse_backward, bidirectional_forward, bidirectional_backward = reference.directions(forward, backward)
