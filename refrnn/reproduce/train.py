r"""Training: Adam over truncated BPTT, with checkpoints that resume bit for bit.

The loop (the paper's Sec. VI-A: BPTT over 50 steps, hidden state kept between segments, reset
every 1000 updates, minibatch 64, Adam, lr 0.001)::

    S = streams(train, B)                      (B, L): B contiguous stretches of the training text
    for step = 0, 1, ...:
        if step % reset_every == 0 or pos + T + 1 > L:   h = 0 (and pos = 0 at the end of the text)
        ids, targets = S[:, pos : pos+T], S[:, pos+1 : pos+T+1]       (transposed: time-major)
        bpc, g, h = loss_and_grads(model, ids, targets, h)            the compiled forward and backward
        g = g * min(1, clip / ||g||)                                   global-norm clipping
        m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2                Adam (Kingma & Ba, bias-corrected)
        theta -= lr * (m / (1 - b1^k)) / (sqrt(v / (1 - b2^k)) + eps)
        pos += T

Checkpoints (``.npz``, written to a temporary file, then renamed: a crash never leaves half of one)
hold everything the next update depends on: parameters and running statistics, Adam's moments,
the step, the data position, the carried hidden state, the random generator's state, and the
curves so far. ``resume=True`` continues from one, and the result is *identical* to an
uninterrupted run (``tests/test_reproduce.py`` checks every array bit for bit): the loop has no
other state, and every operation is deterministic for a given machine and thread count.

A checkpoint is written every ``checkpoint_every`` updates (so a crash loses at most that many) and
at the end.

After training, :func:`reestimate_statistics` replaces a conditional cell's running (EMA) batch-norm
statistics by the exact mean and variance of its pre-activations over a pass of training data with
the weights frozen; it reads only the final model and the corpus, so resuming does not affect it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time

import numpy as np

from . import model as lm
from .data import Corpus, streams


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One model's training run. ``g``: blocks (block), rank (lowrank); None for the dense GRU."""

    name: str
    kind: str
    hidden: int
    g: int | None = None
    s: float = 0.0
    embed: int = 0
    batch: int = 64
    bptt: int = 50
    steps: int = 1000
    lr: float = 1e-3
    clip: float = 5.0
    reset_every: int = 1000
    checkpoint_every: int = 200
    eval_every: int = 200
    eval_symbols: int = 50_000  # validation symbols for the curves (the final BPC uses all of them)
    dtype: str = "float32"
    seed: int = 0
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-8

    def __post_init__(self):
        if self.kind not in lm.KINDS:
            raise ValueError(f"kind: unknown cell {self.kind!r}; expected one of {', '.join(map(repr, lm.KINDS))}")
        for name in ("hidden", "batch", "bptt", "steps", "reset_every", "checkpoint_every", "eval_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {self.dtype!r}")
        if self.kind == "block" and (self.g is None or self.g < 1 or self.hidden % self.g):
            raise ValueError(
                f"g: the block variant needs the number of blocks g to divide hidden={self.hidden}; got g={self.g!r}"
            )
        if self.kind != "gru" and self.batch < 2:
            raise ValueError(f"batch: the conditional cells train with batch statistics, which need batch >= 2; got {self.batch}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


@dataclasses.dataclass
class State:
    """Everything the next update depends on, plus the curves."""

    model: lm.LM
    m: dict
    v: dict
    step: int
    pos: int
    h: np.ndarray
    rng: np.random.Generator
    train_bpc: list  # one value per update
    val_steps: list
    val_bpc: list
    elapsed: float  # seconds of training, summed over resumed runs (not part of the identity)


def fresh_state(config: TrainConfig) -> State:
    rng = np.random.default_rng(config.seed)
    model = lm.init(config.kind, config.hidden, g=config.g, s=config.s, embed=config.embed, rng=rng,
                    dtype=np.dtype(config.dtype))
    zeros = {k: np.zeros_like(a) for k, a in lm.trainable(model).items()}
    return State(model, zeros, {k: a.copy() for k, a in zeros.items()}, 0, 0,
                 np.zeros((config.batch, config.hidden), config.dtype), rng, [], [], [], 0.0)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def save_checkpoint(path: str, config: TrainConfig, st: State) -> None:
    arrays = {f"model.{k}": a for k, a in lm.trainable(st.model).items()}
    if st.model.kind != "gru":
        arrays["model.cell.running_mean"] = st.model.cell.running_mean
        arrays["model.cell.running_var"] = st.model.cell.running_var
    arrays.update({f"adam_m.{k}": a for k, a in st.m.items()})
    arrays.update({f"adam_v.{k}": a for k, a in st.v.items()})
    arrays.update(
        config=np.array(config.to_json()),
        rng=np.array(json.dumps(st.rng.bit_generator.state)),
        step=np.array(st.step),
        pos=np.array(st.pos),
        h=st.h,
        train_bpc=np.array(st.train_bpc, np.float64),
        val_steps=np.array(st.val_steps, np.int64),
        val_bpc=np.array(st.val_bpc, np.float64),
        elapsed=np.array(st.elapsed),
    )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_checkpoint(path: str, config: TrainConfig) -> State:
    """The state saved at ``path``; its config must equal ``config`` (else resuming would mix runs)."""
    with np.load(path) as f:
        saved = json.loads(str(f["config"]))
        if saved != json.loads(config.to_json()):
            diff = {k: (saved.get(k), v) for k, v in json.loads(config.to_json()).items() if saved.get(k) != v}
            raise ValueError(f"resume: checkpoint {path!r} was written by another configuration (saved, now): {diff}")
        st = fresh_state(config)
        trained = {k: f[f"model.{k}"] for k in lm.trainable(st.model)}
        model = lm.with_trainable(st.model, trained)
        if model.kind != "gru":
            model = model.replace(cell=model.cell.replace(
                running_mean=f["model.cell.running_mean"], running_var=f["model.cell.running_var"]))
        st.model = model
        st.m = {k: f[f"adam_m.{k}"] for k in st.m}
        st.v = {k: f[f"adam_v.{k}"] for k in st.v}
        st.rng.bit_generator.state = json.loads(str(f["rng"]))
        st.step, st.pos = int(f["step"]), int(f["pos"])
        st.h = f["h"]
        st.train_bpc = f["train_bpc"].tolist()
        st.val_steps = f["val_steps"].tolist()
        st.val_bpc = f["val_bpc"].tolist()
        st.elapsed = float(f["elapsed"])
    return st


# ---------------------------------------------------------------------------------------------
# Progress bar
# ---------------------------------------------------------------------------------------------


class _NoBar:
    """What :func:`_progress` returns when progress is off: nothing drawn, tqdm not imported."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(name: str, total: int, start: int, enabled: bool):
    """A tqdm bar on stderr, ``name  k/n  [elapsed<eta, it/s]  bpc 2.310``, resumed at ``start``.
    On a terminal it is redrawn in place (at most 5 times a second); in a log file a line every 10%."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(total=total, initial=start, desc=f"{name:<22}", file=sys.stderr, unit="it", dynamic_ncols=tty,
                mininterval=0.2 if tty else 0.0, miniters=None if tty else max(1, total // 10))


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def _clip(grads: dict, clip: float) -> float:
    """Scale the arrays of ``grads`` (replaced in the dict: a cell's gradients are read-only) to global norm
    <= ``clip``; returns the norm before clipping."""
    norm = math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads.values()))
    if norm > clip:
        scale = clip / norm
        for name, g in grads.items():
            grads[name] = g * scale
    return norm


def _adam(config: TrainConfig, st: State, grads: dict) -> None:
    k = st.step + 1
    b1, b2 = config.beta1, config.beta2
    c1, c2 = 1.0 - b1**k, 1.0 - b2**k
    params = lm.trainable(st.model)
    new = {}
    for name, g in grads.items():
        m = st.m[name] = b1 * st.m[name] + (1.0 - b1) * g
        v = st.v[name] = b2 * st.v[name] + (1.0 - b2) * (g * g)
        new[name] = params[name] - config.lr * (m / c1) / (np.sqrt(v / c2) + config.adam_eps)
    st.model = lm.with_trainable(st.model, new)


def train(config: TrainConfig, corpus: Corpus, checkpoint: str | None = None, *, resume: bool = False,
          progress: bool = True, stop_after: int | None = None, evaluate=None, backend: str = "jit") -> State:
    """Train ``config`` on ``corpus``; returns the final state.

    ``backend``: ``"jit"`` (default) trains through the cells' compiled forward and backward,
    ``"reference"`` through the NumPy reference cells (:func:`refrnn.reproduce.model.cell_paths`);
    the two agree to rounding (float64 within 1e-10 a step), not bit for bit.
    ``checkpoint``: the ``.npz`` path (None: no checkpoints). ``resume``: continue from it when it
    exists. ``stop_after``: stop (after checkpointing) once this many updates are done, as a crash
    would; a later ``resume=True`` run finishes. ``evaluate(model, ids) -> (bpc, sparsity)``
    computes the validation curve's points (None: no validation curve).
    """
    if resume and checkpoint and os.path.exists(checkpoint):
        st = load_checkpoint(checkpoint, config)
    else:
        st = fresh_state(config)
    S = streams(corpus.train, config.batch)
    L, T = S.shape[1], config.bptt
    if L < T + 1:
        raise ValueError(f"bptt: {T} steps need training streams of at least {T + 1} symbols; got {L} "
                         f"({len(corpus.train)} symbols in {config.batch} streams)")
    val_ids = corpus.valid[: config.eval_symbols]
    bar = _progress(config.name, config.steps, st.step, progress)
    t_run = time.perf_counter()
    try:
        while st.step < config.steps:
            if st.pos + T + 1 > L:
                st.pos = 0
                st.h = np.zeros_like(st.h)
            if st.step % config.reset_every == 0:
                st.h = np.zeros_like(st.h)
            window = S[:, st.pos : st.pos + T + 1].T  # (T+1, B)
            bpc, grads, h_T, st.model = lm.loss_and_grads(st.model, window[:-1], window[1:], st.h, backend=backend)
            _clip(grads, config.clip)
            _adam(config, st, grads)
            st.h, st.pos = h_T, st.pos + T
            st.step += 1
            st.train_bpc.append(bpc)
            if evaluate is not None and (st.step % config.eval_every == 0 or st.step == config.steps):
                st.val_steps.append(st.step)
                st.val_bpc.append(float(evaluate(st.model, val_ids)[0]))
            bar.set_postfix_str(f"bpc {bpc:.3f}", refresh=False)
            bar.update(1)
            done = stop_after is not None and st.step >= stop_after
            if checkpoint and (st.step % config.checkpoint_every == 0 or st.step == config.steps or done):
                st.elapsed += time.perf_counter() - t_run
                t_run = time.perf_counter()
                save_checkpoint(checkpoint, config, st)
            if done:
                break
    finally:
        bar.close()
    st.elapsed += time.perf_counter() - t_run
    return st


# ---------------------------------------------------------------------------------------------
# Batch-norm re-estimation ("recalibration") after training
# ---------------------------------------------------------------------------------------------


def reestimate_statistics(model: lm.LM, train_ids: np.ndarray, *, batch: int, bptt: int, segments: int,
                          reset_every: int, backend: str = "jit") -> lm.LM:
    r"""``model`` with its running statistics replaced by the exact ones of a pass over training data.

    The running statistics a conditional cell carries out of training are an exponential moving
    average (momentum 0.1, one update per time step) taken while the weights were still moving, and
    for the block variant over only ``B`` values per block and step, so they can sit far from the
    statistics of the trained network; inference normalises with them. The standard remedy ("BN
    re-estimation"): freeze the weights, run the model as in training (batch statistics, hidden state
    carried across segments) over ``segments`` segments of ``bptt`` steps of ``batch`` training
    streams, and take the exact mean and variance of every unit's pre-activation ``a`` over all of
    them (``N = segments * bptt * batch`` values each)::

        running_mean = (1/N) sum a                 running_var = 1/(N - 1) sum (a - running_mean)^2

    The variance is the unbiased one, the convention of the running variance the cell itself keeps
    (:mod:`refrnn.cells.ccgru`: ``var * B / (B - 1)``, PyTorch's); the per-step normalisation in
    training mode divides by ``B`` instead, but the running variance estimates the population's.
    Accumulated in float64, segment by segment, with Chan et al.'s pairwise update of (count, mean,
    sum of squared deviations), so no large sum of squares cancels. The segments are the training
    loop's first ones: from position 0 with ``h = 0``, reset every ``reset_every`` segments and
    at the end of the streams (:func:`train`). Deterministic: no random numbers, fixed order.

    The dense GRU has no normalisation: it is returned unchanged. ``segments = 0`` returns ``model``.
    The forward passes run on ``backend`` (:func:`refrnn.reproduce.model.cell_paths`).
    """
    if model.kind == "gru" or segments == 0:
        return model
    if isinstance(segments, bool) or not isinstance(segments, (int, np.integer)) or segments < 0:
        raise ValueError(f"segments: expected a non-negative integer, got {segments!r}")
    cell = model.cell.replace(mode="train", norm="batch")
    forward, _ = lm.cell_paths(cell, backend)
    S = streams(train_ids, batch)
    L, T, K = S.shape[1], bptt, cell.gate_width
    if L < T + 1:
        raise ValueError(f"bptt: {T} steps need streams of at least {T + 1} symbols; got {L}")
    h = np.zeros((batch, model.hidden_size), model.dtype)
    pos, count = 0, 0
    mean, m2 = np.zeros(K), np.zeros(K)
    for k in range(segments):
        if pos + T + 1 > L:
            pos, h = 0, np.zeros_like(h)
        if k % reset_every == 0:
            h = np.zeros_like(h)
        x = lm.inputs(model, S[:, pos : pos + T].T)
        _, h, cache = forward(cell, x, h)
        a = lm.gate_preactivation(cell, cache).reshape(-1, K).astype(np.float64)
        n_b = a.shape[0]
        mean_b = a.mean(axis=0)
        m2_b = np.square(a - mean_b).sum(axis=0)
        delta, total = mean_b - mean, count + n_b
        mean = mean + delta * (n_b / total)
        m2 = m2 + m2_b + np.square(delta) * (count * n_b / total)
        count = total
        pos += T
    dt = model.dtype
    new = model.cell.replace(running_mean=mean.astype(dt), running_var=(m2 / (count - 1)).astype(dt))
    return model.replace(cell=new)
