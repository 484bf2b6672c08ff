r"""Workloads for ``refrnn bench``: the z-sparse conditional GRU against its dense twin.

Each workload times the dense njit path of :mod:`refrnn.jit.ccgru` (every unit computed) and the
sparse path of the same cell at several z-densities, float32, H = 1024, D = 27 (one-hot characters,
the paper's input):

* ``ccgru-unstructured-r{16,32,64}``: low-rank z (bottleneck g = 16/32/64), B = 1, T = 200; the
  sparse path computes only the active units, each from its own contiguous weight rows.
* ``ccgru-block-bs{16,32,64}``: block z with blocks of bs = 16/32/64 units (g = H/bs blocks),
  B = 64, T = 50; per block one product over the samples whose block is active.

The z-density (fraction of non-zero ``z`` entries) is set through the cell's own shift ``s``
(Eq. 7): :func:`calibrate_shift` bisects ``s`` until the sparse path, run on the workload's data,
gives the target density; the density actually reached is measured on the same run that is timed
(the same data, the same ``s``) and reported. Density 1.00 uses a large ``s`` (every unit active).

The bound. Both paths do the same update-gate work, then the dense path computes r and ĥ for all H
units, the sparse path for the active ones only. Counting multiply-adds as 2 FLOPs::

    per unit and sample:  4 (D + H)                  r: [W_r | U_r] [x; h],  ĥ: W_h x and U_h h
    z, per sample:        full 2H(D+H);  lowrank 2g(D+H) + 2gH;  block 2g(D+H)
    dense  = T B (4H(D+H) + z)         sparse = 4(D+H) nnz(z) + T B z
    bound  = dense / sparse            (the speed-up if time followed FLOPs)

Element-wise work (O(H) a sample, against O(H^2)) is left out. The bars: at z-densities 0.25 and 0.10 the measured speed-up over the dense path is at least
90% of the bound for unstructured z (B = 1) and 85% for block z (B = 64, where the gathered
products have few rows).

Run them alone with ``refrnn bench --only ccgru-block-bs16 ...``; ``--clock cpu`` times with the
process CPU clock: on a shared machine it does not count the time other processes hold the core,
which wall time does (use it with one thread, e.g. ``OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1``;
with more threads it adds their times up).
"""

from __future__ import annotations

import functools

import numpy as np

from ..registry import SEED, SPARSE_SIZES, Bar, Case, data, sizes_for, workload

DENSITIES = (1.0, 0.5, 0.25, 0.10)
BAR_DENSITIES = (0.25, 0.10)
BAR_FRACTION = {"lowrank": 0.90, "block": 0.85}  # of the FLOP-ratio bound, by variant (see above)

_UNSTRUCTURED = SPARSE_SIZES["paper"]["unstructured"]
_BLOCKED = SPARSE_SIZES["paper"]["block"]
_TINY_UNSTRUCTURED = dict(B=1, T=4, D=5, H=16)
_TINY_BLOCKED = dict(B=3, T=4, D=5, H=16)
_ALL_ACTIVE_SHIFT = 50.0  # BN(a, s) = n + s > 0 for every unit unless n < -50


def z_flops(params) -> float:
    """FLOPs of the update gate for one sample and step (input and recurrent side)."""
    H, D = params.hidden_size, params.input_size
    if params.variant == "full":
        return 2.0 * H * (D + H)
    g = params.g
    return 2.0 * g * (D + H) + (2.0 * g * H if params.variant == "lowrank" else 0.0)


def flop_counts(params, z: np.ndarray) -> tuple[float, float]:
    """``(dense, sparse)`` FLOPs of a forward pass whose update gate was ``z`` (T, B, H)."""
    T, B, H = z.shape
    D = params.input_size
    per_unit = 4.0 * (D + H)
    gate = T * B * z_flops(params)
    return T * B * H * per_unit + gate, float(np.count_nonzero(z)) * per_unit + gate


def density(params, x, path: str = "sparse", prepared=None) -> tuple[float, np.ndarray]:
    """Fraction of non-zero update-gate entries when the fast path runs ``x``, and that gate."""
    from ...jit import ccgru as fast

    z = fast.forward(params, x, algorithm=path, prepared=prepared)[2].z
    return float(np.mean(z != 0)), z


def calibrate_shift(params, x, target: float, *, path: str = "sparse", iters: int = 14, tol: float = 0.005):
    """``params`` with the shift ``s`` (Eq. 7) that gives z-density ``target`` on ``x``.

    Bisection on s in [-8, 8]: lowering s makes z sparser. The density is a step function of s
    (and of the trajectory it induces), so the target is met to ``tol`` where it can be; the
    caller measures what was reached. ``target >= 1`` returns every unit active.
    """
    from ...jit import ccgru as fast

    if target >= 1.0:
        return params.replace(s=_ALL_ACTIVE_SHIFT)
    lo, hi = -8.0, 8.0
    best, best_err = params.replace(s=0.0), np.inf
    prepared = fast.prepare(params, path)  # the weights do not depend on s: re-arrange them once
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        trial = params.replace(s=mid)
        d, _ = density(trial, x, path, prepared._replace(s=prepared.s.dtype.type(mid), params=trial))
        if abs(d - target) < best_err:
            best, best_err = trial, abs(d - target)
        if best_err <= tol:
            break
        if d > target:
            hi = mid
        else:
            lo = mid
    return best


def label(d: float) -> str:
    return f"njit sparse, z-density {d:.2f}"


@functools.lru_cache(maxsize=4)
def _shared_rh(D: int, H: int):
    """W_rh, U_rh, b_rh of the paper's initialisation, shared by every workload of one size: the
    two H x H orthogonal draws (QR) cost ~1 s at H = 1024, the rest of a cell's draws far less."""
    from ...cells import ccgru as reference

    p = reference.init(D, H, variant="block", g=1, rng=np.random.default_rng(SEED), dtype=np.float32)
    return p.W_rh, p.U_rh, p.b_rh


def _cell(variant: str, g: int, D: int, H: int):
    """An inference-mode cell with the paper's initialisation (Glorot W, orthogonal U, zero biases,
    running mean 0, variance 1), its r/ĥ weights shared across workloads (:func:`_shared_rh`)."""
    from ...cells import ccgru as reference

    rng = np.random.default_rng([SEED, g])
    W_rh, U_rh, b_rh = _shared_rh(D, H)
    z = dict(W_z_lr=reference._glorot(rng, g, D), U_z_lr=reference._orthogonal(rng, g, H), b_z_lr=np.zeros(g))
    cls = reference.CCGRUBlockParams
    if variant == "lowrank":
        z.update(W_z=reference._glorot(rng, H, g), b_z=np.zeros(H))
        cls = reference.CCGRULowRankParams
    K = g if variant == "block" else H
    z = {k: v.astype(np.float32) for k, v in z.items()}
    return cls(W_rh=W_rh, U_rh=U_rh, b_rh=b_rh, **z, running_mean=np.zeros(K, np.float32),
               running_var=np.ones(K, np.float32), mode="inference")


def _sparse_candidate(p, prepared, x, h0):
    """The sparse path at shift ``p.s``; ``.twin`` runs the dense path of the same cell (the
    candidates of one workload are different cells, one ``s`` per z-density: compare each with
    its twin, not with each other)."""
    from ...jit import ccgru as fast

    def run():
        return fast.forward_inference(p, x, h0, algorithm="sparse", prepared=prepared)

    run.twin = lambda: fast.forward_inference(p, x, h0, algorithm="dense")
    return run


def _sparse_case(scale: str, variant: str, g_full: int, g_tiny: int, full: dict, tiny: dict) -> Case:
    from ...cells import ccgru as reference
    from ...jit import ccgru as fast

    s = sizes_for(scale, full, tiny)
    T, B, D, H = s["T"], s["B"], s["D"], s["H"]
    g = g_full if scale != "tiny" else g_tiny
    rng, x = data(D, H, T, B)
    base = _cell(variant, g, D, H)
    h0 = np.zeros((B, H), np.float32)
    dense_prepared = fast.prepare(base, "dense")
    def dense():
        return fast.forward_inference(base, x, h0, algorithm="dense", prepared=dense_prepared)

    dense.twin = lambda: reference.forward(base, x, h0)  # its own cell (default s), not the subject's
    cands = {"njit dense": dense}
    bars, notes, bounds = [], [], {}
    for target in DENSITIES:
        p = calibrate_shift(base, x, target, tol=0.005 if scale == "full" else 0.02)
        prepared = fast.prepare(p, "sparse")
        reached, z = density(p, x, prepared=prepared)
        dense_f, sparse_f = flop_counts(p, z)
        bounds[target] = dense_f / sparse_f
        cands[label(target)] = _sparse_candidate(p, prepared, x, h0)
        notes.append(
            f"z-density {target:.2f}: reached {reached:.3f} with s = {p.s:+.4f}; GFLOP dense {dense_f / 1e9:.4g}, "
            f"sparse {sparse_f / 1e9:.4g}; FLOP-ratio bound {bounds[target]:.2f}x"
        )
        if target in BAR_DENSITIES:
            bars.append(
                Bar(
                    label(target),
                    "njit dense",
                    BAR_FRACTION[variant] * bounds[target],
                    f">= {BAR_FRACTION[variant]:.0%} of the FLOP-ratio bound {bounds[target]:.2f}x over njit dense",
                )
            )
        if variant == "block" and target == BAR_DENSITIES[-1]:
            cands[FLOOR], note = _floor_candidate(prepared, z, H // g)
            notes.append(note)
    # The dense path's cost does not depend on s: it computes every unit whatever z is.
    notes.append("bound = dense / sparse FLOPs, z included (refrnn.bench.workloads.ccgru); element-wise work left out")
    sizes = {**s, "g": g} if variant == "lowrank" else {**s, "g": g, "bs": H // g}
    return Case(sizes, cands, label(BAR_DENSITIES[-1]), tuple(bars), notes=tuple(notes),
                bounds={label(d): bound for d, bound in bounds.items()}, floor=FLOOR if FLOOR in cands else None)


FLOOR = "memory floor: active blocks' weights read once a step"


def active_blocks(z: np.ndarray, bs: int) -> np.ndarray:
    """``(T, g)``: whether block k is active at step t in at least one sample, from the gate ``z`` (T, B, H)
    of the block variant (constant on each block of ``bs`` units)."""
    T, B, H = z.shape
    return np.any(z.reshape(T, B, H // bs, bs)[..., 0] != 0, axis=1)


def _floor_candidate(prepared, z, bs):
    """The block path's unavoidable memory traffic at the subject's density, timed on its own: per
    step, the r/ĥ weights of every block some sample has active, each read once
    (:func:`refrnn.bench._products.weights_streamed`). At B = 64 nearly every block is active in some
    sample, so nearly all of ``[U_r; U_h]`` (8 MB at H = 1024) is read every step; it does not fit in
    the cores' L2, so it comes from L3 or memory, and that takes what this candidate takes however few
    rows each product has. ``run()`` returns ``(the per-worker sums,)``, not an output of the cell."""
    from numba import get_num_threads

    from .._products import weights_streamed
    from ...jit import _blas

    Ut, Wt = prepared.weights["Ut"], prepared.weights["Wt"]
    active = active_blocks(z, bs)
    workers = min(get_num_threads(), active.shape[1])
    out = np.zeros(workers, Ut.dtype)

    def run():
        out[:] = 0
        with _blas.threads(1):
            weights_streamed(Ut, Wt, active, bs, workers, out)
        return (out,)

    block_bytes = (Ut[0].nbytes + Wt[0].nbytes) * (bs // (Ut.shape[2] // 2))
    per_step = active.sum(axis=1).mean() * block_bytes
    note = (f"{FLOOR}: at z-density {BAR_DENSITIES[-1]:.2f} {active.mean():.1%} of the (step, block) pairs are active "
            f"in some sample, {per_step / 2**20:.2f} MB of weights a step ({block_bytes / 2**10:.0f} KB a block)")
    return run, note


def _register_unstructured(rank: int) -> None:
    title = f"Conditional GRU, unstructured z-sparse inference, B=1, rank {rank} (float32)"

    @workload(f"ccgru-unstructured-r{rank}", title)
    def build(scale):
        return _sparse_case(scale, "lowrank", rank, 4, _UNSTRUCTURED, _TINY_UNSTRUCTURED)


def _register_block(bs: int) -> None:
    @workload(f"ccgru-block-bs{bs}", f"Conditional GRU, block-sparse inference, B=64, blocks of {bs} units (float32)")
    def build(scale):
        return _sparse_case(scale, "block", _BLOCKED["H"] // bs, 4, _BLOCKED, _TINY_BLOCKED)


for _rank in (16, 32, 64):
    _register_unstructured(_rank)
for _bs in (16, 32, 64):
    _register_block(_bs)

NAMES = tuple(f"ccgru-unstructured-r{r}" for r in (16, 32, 64)) + tuple(f"ccgru-block-bs{b}" for b in (16, 32, 64))



# ---------------------------------------------------------------------------------------------
# ccgru-train-mid, ccgru-train-paper: forward and backward back to back (see refrnn.bench.workloads.train_sru_ccgru)
# ---------------------------------------------------------------------------------------------

TRAIN_BLOCK = 16  # units per block of the trained cell (g = H / 16), as in refrnn reproduce's grid


def build_train(scale: str, size: str) -> Case:
    from ...cells import ccgru as reference
    from ...jit import ccgru as fast
    from . import train_sru_ccgru as tr

    s = sizes_for(scale, tr.FULL_SIZES[size], tr.TINY)
    T, B, D, H = s["T"], s["B"], s["D"], s["H"]
    g = max(1, H // TRAIN_BLOCK) if scale != "tiny" else 2
    rng, x = data(D, H, T, B)
    p = reference.init(D, H, variant="block", g=g, rng=rng, dtype=np.float32)  # mode="train": batch statistics
    dy = tr.upstream(T, B, H)
    cands = {
        tr.SUBJECT: tr.steps(fast.forward, fast.backward, p, x, dy),
        tr.BEFORE: tr.steps(fast.forward, reference.backward, p, x, dy),
        tr.REFERENCE: tr.steps(reference.forward, reference.backward, p, x, dy),
        **tr.torch_candidates(("GRU",), D, H, x, dy),
    }
    Kz, TB = g, T * B
    shapes = [(TB, D, 2 * H), (TB, D, Kz),  # input projections
              (2 * H + Kz, TB, H), (2 * H, TB, D), (Kz, TB, D),  # weight gradients
              (TB, 2 * H, D), (TB, Kz, D)]  # dx
    run, flops = tr.gemm_products(T, B, shapes, [(H, 2 * H + Kz), (2 * H + Kz, H)],  # the per-step products
                                  lambda: fast._step_threads(B, H, Kz))
    cands[tr.SGEMM] = run
    notes = (
        f"{tr.STEPS} training steps per call (forward, backward), back to back; block z, g = {g}, batch statistics; "
        "run with --pause 0",
        f"GFLOP of products per call: {flops / 1e9:.3g} (per step h [U_rh; U_z]^T and [dq, du] [U_rh; U_z]; "
        "one T*B-row GEMM per weight)",
        "torch.nn.GRU autograd of the same size: a dense GRU, the comparison point (torch has no conditional GRU)",
    )
    return Case({**s, "g": g}, cands, tr.SUBJECT, (), tr.SGEMM, flops, flops, notes)


workload("ccgru-train-mid", "Conditional GRU training step (block z, batch statistics), T=100, B=32, D=H=256 (float32)")(
    lambda scale: build_train(scale, "h256"))
workload("ccgru-train-paper", "Conditional GRU training step (block z, batch statistics), the paper's size T=50, B=64, "
         "D=27, H=1024 (float32)")(lambda scale: build_train(scale, "h1024"))
