"""Cross-check the reference cells against PyTorch's ``nn.GRU``/``nn.LSTM``/``nn.GRUCell``/``nn.LSTMCell``.

Both sides get the same float64 weights (through :mod:`refrnn.layouts.torch`), inputs, initial states
and random upstream gradients; every output, final state and gradient is compared. torch is imported
only when a function here is called.
"""

from __future__ import annotations

import numpy as np

from . import stack
from .cells import gru, lstm, module_for
from .layouts.torch import from_torch, to_torch


def _module(torch, kind: str, layers: tuple):
    p = layers[0]
    D, H = p.input_size, p.hidden_size
    opts = dict(dtype=torch.float64)
    if kind == "GRU":
        return torch.nn.GRU(D, H, num_layers=len(layers), **opts)
    if kind == "LSTM":
        return torch.nn.LSTM(D, H, num_layers=len(layers), **opts)
    return getattr(torch.nn, kind)(D, H, **opts)


def compare(kind: str, layers, x: np.ndarray, state0=None, *, seed: int = 0) -> dict[str, float]:
    """Max absolute difference refrnn vs torch for outputs, final states and every gradient.

    ``layers`` is a sequence of :class:`GRUParams`/:class:`LSTMParams` (one layer for the ``*Cell``
    kinds); ``state0`` is refrnn's per-layer tuple of states, or None for zeros.
    """
    import torch

    layers = tuple(layers)
    is_cell = kind.endswith("Cell")
    is_lstm = kind.startswith("LSTM")
    if is_cell and len(layers) != 1:
        raise ValueError(f"layers: torch.nn.{kind} is a single layer, got {len(layers)} layers")
    module = _module(torch, kind, layers)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch(layers[0] if is_cell else layers, kind).items()})

    T, B, _ = x.shape
    L, H = len(layers), layers[-1].hidden_size
    if state0 is None:
        state0 = tuple(module_for(p).zero_state(p, B) for p in layers)
    y, state_T, cache = stack.forward(layers, x, state0)

    rng = np.random.default_rng(seed)
    G_y = rng.standard_normal(y.shape)
    G_s = tuple(tuple(rng.standard_normal(a.shape) for a in s) if is_lstm else rng.standard_normal(s.shape) for s in state_T)
    grads, dx, dstate0 = stack.backward(layers, cache, G_y, G_s)

    def leaf(a):
        return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=True)

    tx = leaf(x)
    if is_lstm:
        th0 = leaf(np.stack([s[0] for s in state0]))
        tc0 = leaf(np.stack([s[1] for s in state0]))
    else:
        th0 = leaf(np.stack(state0))
    if is_cell:
        hs, ht, ct = [], th0[0], (tc0[0] if is_lstm else None)
        for t in range(T):
            if is_lstm:
                ht, ct = module(tx[t], (ht, ct))
            else:
                ht = module(tx[t], ht)
            hs.append(ht)
        ty = torch.stack(hs) if hs else tx.new_zeros((0, B, H))
        th_n, tc_n = ht[None], (ct[None] if is_lstm else None)
    elif is_lstm:
        ty, (th_n, tc_n) = module(tx, (th0, tc0))
    else:
        ty, th_n = module(tx, th0)
        tc_n = None

    h_T = np.stack([s[0] if is_lstm else s for s in state_T])
    G_h = np.stack([g[0] if is_lstm else g for g in G_s])
    loss = (ty * torch.from_numpy(G_y)).sum() + (th_n * torch.from_numpy(G_h)).sum()
    if is_lstm:
        loss = loss + (tc_n * torch.from_numpy(np.stack([g[1] for g in G_s]))).sum()
    loss.backward()

    def err(a, b) -> float:
        return float(np.max(np.abs(np.asarray(a) - np.asarray(b)), initial=0.0))

    out = {"y": err(y, ty.detach().numpy()), "h_T": err(h_T, th_n.detach().numpy())}
    if is_lstm:
        out["c_T"] = err(np.stack([s[1] for s in state_T]), tc_n.detach().numpy())
    out["dx"] = err(dx, tx.grad.numpy())
    out["dh0"] = err(np.stack([d[0] if is_lstm else d for d in dstate0]), th0.grad.numpy())
    if is_lstm:
        out["dc0"] = err(np.stack([d[1] for d in dstate0]), tc0.grad.numpy())
    torch_grads = from_torch({k: p.grad for k, p in module.named_parameters()}, kind)
    torch_grads = (torch_grads,) if is_cell else torch_grads
    for k, (mine, theirs) in enumerate(zip(grads, torch_grads)):
        for name, a in mine.arrays().items():
            out[f"d{name}[{k}]"] = err(a, getattr(theirs, name))
    return out


def random_case(kind: str, *, T: int, B: int, D: int, H: int, layers: int = 1, seed: int = 0):
    """Float64 layers, input and initial states for :func:`compare`, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    mod = lstm if kind.startswith("LSTM") else gru
    params = tuple(mod.init(D if k == 0 else H, H, rng=rng) for k in range(layers))
    x = rng.standard_normal((T, B, D))
    state0 = tuple(
        (rng.standard_normal((B, H)), rng.standard_normal((B, H))) if mod is lstm else rng.standard_normal((B, H))
        for _ in range(layers)
    )
    return params, x, state0


def _cases():
    for kind in ("GRU", "LSTM"):
        for layers in (1, 2, 3):
            yield kind, layers
    yield "GRUCell", 1
    yield "LSTMCell", 1


def main(argv=None) -> int:
    """``refrnn verify torch``: reference cells vs the installed PyTorch, and the gradient check."""
    import argparse
    import time

    from . import gru, lstm
    from .gradcheck import gradcheck

    parser = argparse.ArgumentParser(prog="refrnn verify", description=main.__doc__)
    parser.add_argument("target", choices=["torch"], help="the implementation to check")
    parser.add_argument("--steps", type=int, default=100, help="sequence length T (default 100)")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("refrnn verify torch: PyTorch is not installed (pip install 'refrnn[torch]')")
        return 2

    tol_fwd, tol_grad = 1e-10, 1e-6
    start = time.perf_counter()
    rows, ok = [], True
    print(f"refrnn vs torch {torch.__version__} (float64, T={args.steps}, B=3, D=5, H=7); tolerance {tol_fwd:g} absolute")
    for seed, (kind, layers) in enumerate(_cases()):
        params, x, state0 = random_case(kind, T=args.steps, B=3, D=5, H=7, layers=layers, seed=seed)
        errs = compare(kind, params, x, state0, seed=seed)
        fwd = max(v for k, v in errs.items() if not k.startswith("d"))
        grad_name = max((k for k in errs if k.startswith("d")), key=errs.get)
        passed = max(errs.values()) <= tol_fwd
        ok &= passed
        rows.append((f"nn.{kind}", str(layers), f"{fwd:.1e}", f"{errs[grad_name]:.1e} ({grad_name})", "PASS" if passed else "FAIL"))
    _table(("module", "layers", "worst output err", "worst gradient err", ""), rows)

    print(f"\nhand-derived backward vs central differences (float64); tolerance {tol_grad:g} relative")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2, 3))
    models = {
        "GRU reset=after": gru.init(3, 4, reset="after", rng=1),
        "GRU reset=before": gru.init(3, 4, reset="before", rng=2),
        "LSTM": lstm.init(3, 4, rng=3),
        "stack GRU/LSTM/GRU": (gru.init(3, 4, rng=4), lstm.init(4, 4, rng=5), gru.init(4, 3, reset="before", rng=6)),
    }
    rows = []
    for name, params in models.items():
        report = gradcheck(params, x, tol=tol_grad, seed=7)
        ok &= report.passed
        worst, err = report.worst
        rows.append((name, f"{err:.1e} ({worst})", "PASS" if report.passed else "FAIL"))
    _table(("cell", "worst relative error", ""), rows)
    print(f"\n{'all checks passed' if ok else 'SOME CHECKS FAILED'} in {time.perf_counter() - start:.1f} s")
    return 0 if ok else 1


def _table(header, rows) -> None:
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for r in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
