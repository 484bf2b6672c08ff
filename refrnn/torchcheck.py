"""Cross-check the reference cells against PyTorch's ``nn.GRU``/``nn.LSTM``/``nn.GRUCell``/``nn.LSTMCell``.

Both sides get the same float64 weights (through :mod:`refrnn.layouts.torch`), inputs, initial states
and random upstream gradients; every output, final state and gradient is compared. torch is imported
only when a function here is called.
"""

from __future__ import annotations

import numpy as np

from . import lengths as _lengths
from . import stack
from .cells import gru, lstm, module_for
from .layouts.torch import from_torch, state_to_torch, to_torch


def _module(torch, kind: str, layers: tuple, batch_first: bool = False):
    from .layouts.torch import _directions

    first = _directions(layers[0])[0]
    D, H = layers[0].input_size, first.hidden_size
    opts = dict(dtype=torch.float64)
    if kind.endswith("Cell"):
        return getattr(torch.nn, kind)(D, H, **opts)
    opts.update(num_layers=len(layers), bidirectional=len(_directions(layers[0])) == 2, batch_first=batch_first)
    if kind == "LSTM":
        opts["proj_size"] = first.proj_size
    return getattr(torch.nn, kind)(D, H, **opts)


def compare(
    kind: str,
    layers,
    x: np.ndarray,
    state0=None,
    *,
    seed: int = 0,
    lengths=None,
    enforce_sorted: bool = True,
    batch_first: bool = False,
) -> dict[str, float]:
    """Max absolute difference refrnn vs torch for outputs, final states and every gradient.

    ``layers`` is a sequence of :class:`GRUParams`/:class:`LSTMParams` (one layer for the ``*Cell``
    kinds), or of :class:`~refrnn.bidirectional.BiLayer` for a bidirectional module; LSTM layers may
    have a projection (``proj_size``). ``state0`` is refrnn's per-layer tuple of states, or None for zeros.

    ``lengths`` runs torch on ``pack_padded_sequence(x, lengths, enforce_sorted=...)`` and unpacks
    with ``total_length=T``; ``batch_first`` gives both sides x as (B, T, D); a 2-d ``x`` (T, D) is
    PyTorch's unbatched input (states then have no batch axis).
    """
    import torch

    layers = tuple(layers)
    is_cell = kind.endswith("Cell")
    is_lstm = kind.startswith("LSTM")
    if is_cell and len(layers) != 1:
        raise ValueError(f"layers: torch.nn.{kind} is a single layer, got {len(layers)} layers")
    if is_cell and (lengths is not None or batch_first):
        raise ValueError(f"lengths, batch_first: torch.nn.{kind} takes one step at a time and has neither")
    module = _module(torch, kind, layers, batch_first)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch(layers[0] if is_cell else layers, kind).items()})
    bidirectional = not is_cell and module.bidirectional

    unbatched = x.ndim == 2
    T = x.shape[1] if batch_first and not unbatched else x.shape[0]
    B = 1 if unbatched else x.shape[0 if batch_first else 1]
    if state0 is None:
        state0 = tuple(module_for(p).zero_state(p, B) for p in layers)
        if unbatched:
            state0 = _lengths.tree_map(lambda a: a[0], state0)
    y, state_T, cache = stack.forward(layers, x, state0, lengths=lengths, batch_first=batch_first)

    rng = np.random.default_rng(seed)
    G_y = rng.standard_normal(y.shape)
    G_s = _lengths.tree_map(lambda a: rng.standard_normal(a.shape), state_T)
    grads, dx, dstate0 = stack.backward(layers, cache, G_y, G_s)

    def leaf(a):
        return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=True)

    def torch_state(states):  # refrnn's per-layer states as torch's (h_n[, c_n])
        if is_cell:
            return (states[0][0], states[0][1]) if is_lstm else states[0]
        return state_to_torch(layers, states)

    tx = leaf(x)
    s0 = torch_state(state0)
    th0, tc0 = (leaf(s0[0]), leaf(s0[1])) if is_lstm else (leaf(s0), None)
    if is_cell:
        hs, ht, ct = [], th0, tc0
        for t in range(T):
            if is_lstm:
                ht, ct = module(tx[t], (ht, ct))
            else:
                ht = module(tx[t], ht)
            hs.append(ht)
        ty = torch.stack(hs) if hs else tx.new_zeros((0, B, layers[0].hidden_size))
        th_n, tc_n = ht, ct
    else:
        inp = tx
        if lengths is not None:
            inp = torch.nn.utils.rnn.pack_padded_sequence(
                tx, torch.as_tensor(np.asarray(lengths)), batch_first=batch_first, enforce_sorted=enforce_sorted
            )
        out, hn = module(inp, (th0, tc0) if is_lstm else th0)
        th_n, tc_n = hn if is_lstm else (hn, None)
        if lengths is not None:
            out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first, total_length=T)
        ty = out

    mine_s, G_st = torch_state(state_T), torch_state(G_s)
    h_T, G_h = (mine_s[0], G_st[0]) if is_lstm else (mine_s, G_st)
    loss = (ty * torch.from_numpy(G_y)).sum() + (th_n * torch.from_numpy(np.asarray(G_h))).sum()
    if is_lstm:
        loss = loss + (tc_n * torch.from_numpy(np.asarray(G_st[1]))).sum()
    loss.backward()

    def err(a, b) -> float:
        return float(np.max(np.abs(np.asarray(a) - np.asarray(b)), initial=0.0))

    out = {"y": err(y, ty.detach().numpy()), "h_T": err(h_T, th_n.detach().numpy())}
    if is_lstm:
        out["c_T"] = err(mine_s[1], tc_n.detach().numpy())
    out["dx"] = err(dx, tx.grad.numpy())
    ds0 = torch_state(dstate0)
    out["dh0"] = err(ds0[0] if is_lstm else ds0, th0.grad.numpy())
    if is_lstm:
        out["dc0"] = err(ds0[1], tc0.grad.numpy())
    torch_grads = from_torch({k: p.grad for k, p in module.named_parameters()}, kind, bidirectional=bidirectional)
    torch_grads = (torch_grads,) if is_cell else torch_grads
    for k, (mine, theirs) in enumerate(zip(grads, torch_grads)):
        theirs = theirs.arrays()
        for name, a in mine.arrays().items():
            out[f"d{name}[{k}]"] = err(a, theirs[name])
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
