r"""A trained model's validation BPC, z-sparsity, and measured inference speed-up (njit paths).

Validation. The validation text is cut into ``batch`` contiguous streams, run in chunks of
``chunk`` steps carrying the state (so memory stays bounded on TEXT8's 5M symbols), with the cell
in inference mode (running statistics), through the njit forward (:mod:`refrnn.jit.gru`,
:mod:`refrnn.jit.ccgru`'s dense path, which also returns ``z``). ``BPC`` is the mean of
``-log2 p(next symbol)`` over every prediction; the *z-sparsity* is the fraction of update-gate
entries that are exactly zero over the same run (the units a conditional fast path skips).

Speed-up (the paper's Tables II and IV: "acceleration factor over a fully-dense model"). For one
trained conditional model, on validation text in inference mode, these run interleaved, round
after round (rotated order, so all see the same machine load), and the medians are compared:

* ``dense``: :func:`refrnn.jit.ccgru.forward_inference` with ``algorithm="dense"``, every unit computed
  (the densely calculated baseline, same weights, same outputs);
* ``sparse``: the sparse path the paper pairs with the variant: ``"block"`` for block-sparse z at
  batch ``B`` (paper: the training minibatch, 64), ``"unstructured"`` for low-rank z at ``B = 1``
  (one stream);
Every candidate runs ``T`` steps of ``B`` validation streams from the state the model reached on the
``warmup`` symbols before them (from a zero state the gates start in a transient, far sparser than
in steady state: a block model measured 8% z-density from zero against 34% on validation);
``z_density_timed`` reports the density of the timed run.

* ``gru``: the trained dense GRU (:func:`refrnn.jit.gru.forward_inference`), when given, on the
  same input: ``speedup_vs_gru``, the other reading of "a fully-dense model".

``speedup = median(dense) / median(sparse)``. Each round calls a candidate ``number`` times so that a
round lasts at least ~20 ms. With ``clock="wall"`` the times carry a shared machine's load; with
``clock="cpu"`` (one thread) they count only this process's own CPU time.
"""

from __future__ import annotations

import time

import numpy as np

from . import model as lm

# Where the paper measured each variant: block-sparse for batch processing, unstructured for one stream.
SPEED_BATCH = {"block": 64, "lowrank": 1, "full": 1}
SPARSE_PATH = {"block": "block", "lowrank": "unstructured", "full": "unstructured"}


def _forward(model: lm.LM, cell, x, h, prepared):
    """(y, h_T, z or None) of the njit inference path."""
    if model.kind == "gru":
        from ..jit import gru as fast_gru

        y, h_T = fast_gru.forward_inference(cell, x, h, prepared=prepared)
        return y, h_T, None
    from ..jit import ccgru as fast

    y, h_T, cache = fast.forward(cell, x, h, algorithm="dense", prepared=prepared)
    return y, h_T, cache.z


def evaluate(model: lm.LM, ids: np.ndarray, *, batch: int = 32, chunk: int = 1000) -> tuple[float, float]:
    """``(bpc, z_sparsity)`` of ``model`` on ``ids`` (z_sparsity is nan for the dense GRU)."""
    ids = np.asarray(ids)
    batch = max(1, min(batch, (len(ids) - 1) // 2))
    L = (len(ids) - 1) // batch
    if L < 1:
        raise ValueError(f"ids: {len(ids)} symbols are too few to evaluate on")
    S = ids[: batch * L + 1]
    inp = np.stack([S[b * L : (b + 1) * L] for b in range(batch)], axis=1)  # (L, B)
    tgt = np.stack([S[b * L + 1 : (b + 1) * L + 1] for b in range(batch)], axis=1)
    cell = lm.inference_cell(model)
    if model.kind == "gru":
        from ..jit import gru as fast_gru

        prepared = fast_gru.prepare(cell)
    else:
        from ..jit import ccgru as fast

        prepared = fast.prepare(cell, "dense")
    h = np.zeros((batch, model.hidden_size), model.dtype)
    total_bits, zeros, count = 0.0, 0, 0
    for t0 in range(0, L, chunk):
        x = lm.inputs(model, inp[t0 : t0 + chunk])
        y, h, z = _forward(model, cell, x, h, prepared)
        logits = y @ model.W_y.T + model.b_y
        total_bits += lm.bits(logits, tgt[t0 : t0 + chunk]) * y.shape[0] * batch
        if z is not None:
            zeros += int(np.count_nonzero(z == 0))
            count += z.size
    return total_bits / (L * batch), (zeros / count if count else float("nan"))


def _median_times(cands: dict, repeats: int, clock=time.perf_counter) -> dict:
    """Medians of the interleaved timer (:mod:`refrnn.bench.timer`), rounds of at least ~20 ms."""
    from ..bench.timer import interleaved, medians

    return medians(interleaved(cands, repeats=repeats, warmup=1, clock=clock, min_round_s=0.02))


def speedup(model: lm.LM, ids: np.ndarray, *, T: int = 50, batch: int | None = None, repeats: int = 11,
            gru_model: lm.LM | None = None, clock: str = "wall", warmup: int = 200) -> dict:
    """Time the dense and sparse njit paths of a trained conditional model (see the module docstring).

    ``clock="cpu"`` times with the process CPU clock: with one thread it does not count the time
    other processes hold the core, which wall time (``"wall"``) does.
    """
    from ..jit import ccgru as fast

    if model.kind == "gru":
        raise ValueError("model: the speed-up is measured for the conditional cells; the dense GRU is the baseline")
    B = batch or SPEED_BATCH[model.kind]
    path = SPARSE_PATH[model.kind]
    # The timed steps start from the state the model reaches on the preceding `warmup` symbols of each
    # stream: from h = 0 the gates sit in a transient (block models: far sparser than in steady state).
    text = np.resize(np.asarray(ids), B * (warmup + T)).reshape(B, warmup + T).T  # wraps when short
    cell = lm.inference_cell(model)
    x_all = np.ascontiguousarray(lm.inputs(model, text))
    zeros = np.zeros((B, model.hidden_size), model.dtype)
    h0 = fast.forward_inference(cell, x_all[:warmup], zeros, algorithm="dense")[1] if warmup else zeros
    x = np.ascontiguousarray(x_all[warmup:])
    dense_p, sparse_p = fast.prepare(cell, "dense"), fast.prepare(cell, path)
    cands = {
        "dense": lambda: fast.forward_inference(cell, x, h0, algorithm="dense", prepared=dense_p),
        "sparse": lambda: fast.forward_inference(cell, x, h0, algorithm=path, prepared=sparse_p),
    }
    if gru_model is not None:
        from ..jit import gru as fast_gru

        gcell = gru_model.cell
        gx = np.ascontiguousarray(lm.inputs(gru_model, text[warmup:]))
        gh0 = np.zeros((B, gru_model.hidden_size), gru_model.dtype)
        gp = fast_gru.prepare(gcell)
        cands["gru"] = lambda: fast_gru.forward_inference(gcell, gx, gh0, prepared=gp)
    med = _median_times(cands, repeats, time.process_time if clock == "cpu" else time.perf_counter)
    z = fast.forward(cell, x, h0, algorithm=path, prepared=sparse_p)[2].z
    out = dict(
        path=path, B=B, T=T, warmup=warmup, repeats=repeats, clock=clock,
        t_dense=med["dense"], t_sparse=med["sparse"], speedup=med["dense"] / med["sparse"],
        z_density_timed=float(np.mean(z != 0)),
    )
    if "gru" in med:
        out.update(t_gru=med["gru"], speedup_vs_gru=med["gru"] / med["sparse"])
    return out


def evaluate_batch_statistics(model: lm.LM, ids: np.ndarray, *, batch: int = 32, chunk: int = 1000,
                              backend: str = "jit") -> tuple[float, float]:
    """``(bpc, z_sparsity)`` like :func:`evaluate`, but normalising with each step's *batch* statistics
    over the ``batch`` validation streams (training mode, the compiled training forward on
    ``backend="jit"``, the reference's on ``"reference"``).

    A diagnostic, not an inference procedure: every stream's prediction then depends on the other
    streams at the same step. It shows how far the running (or re-estimated) statistics are from
    what the network saw in training. The dense GRU has no normalisation: it is :func:`evaluate`.
    """
    if model.kind == "gru":
        return evaluate(model, ids, batch=batch, chunk=chunk)
    ids = np.asarray(ids)
    batch = max(2, min(batch, (len(ids) - 1) // 2))
    L = (len(ids) - 1) // batch
    S = ids[: batch * L + 1]
    inp = np.stack([S[b * L : (b + 1) * L] for b in range(batch)], axis=1)
    tgt = np.stack([S[b * L + 1 : (b + 1) * L + 1] for b in range(batch)], axis=1)
    cell = model.cell.replace(mode="train", norm="batch")
    forward, _ = lm.cell_paths(cell, backend)
    h = np.zeros((batch, model.hidden_size), model.dtype)
    total_bits, zeros, count = 0.0, 0, 0
    for t0 in range(0, L, chunk):
        y, h, cache = forward(cell, lm.inputs(model, inp[t0 : t0 + chunk]), h)
        logits = y @ model.W_y.T + model.b_y
        total_bits += lm.bits(logits, tgt[t0 : t0 + chunk]) * y.shape[0] * batch
        zeros += int(np.count_nonzero(cache.z == 0))
        count += cache.z.size
    return total_bits / (L * batch), zeros / count
