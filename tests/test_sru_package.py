"""refrnn's SRU equals the ``sru`` package (2.6.0) after layout conversion: outputs, final states, gradients.

Float64 runs go through the package's pure-PyTorch recurrence (``elementwise_recurrence_naive``), the
one it uses on CPU with autograd on; gradients come from torch autograd through it. The package's
C++ CPU kernel (used under ``torch.no_grad()``) accepts float32 only and is compared in float32.
The first ``import sru`` compiles that kernel with g++ and ninja (about a minute; cached afterwards).
"""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
with warnings.catch_warnings():
    # Without CUDA the package warns that it fell back to a dummy CUDA extension: expected here.
    warnings.simplefilter("ignore", UserWarning)
    sru_pkg = pytest.importorskip("sru")

from refrnn.cells import sru  # noqa: E402
from refrnn.layouts.sru import from_sru, sru_options, to_sru  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Running SRU on CPU with grad_enabled=True")

T, B = 6, 3

# (module class, constructor arguments). H = 4 throughout; D chosen to hit each k / skip case.
CONFIGS = {
    "cell-k3-rescale": ("SRUCell", dict(input_size=4, hidden_size=4, highway_bias=-1.0)),
    "cell-k3-norescale": ("SRUCell", dict(input_size=4, hidden_size=4, highway_bias=-1.0, rescale=False)),
    "cell-k4-rescale": ("SRUCell", dict(input_size=5, hidden_size=4, highway_bias=0.5)),
    "cell-noskip": ("SRUCell", dict(input_size=4, hidden_size=4, has_skip_term=False)),
    "cell-noskip-D5": ("SRUCell", dict(input_size=5, hidden_size=4, has_skip_term=False)),
    "cell-tanh": ("SRUCell", dict(input_size=4, hidden_size=4, use_tanh=True)),
    "cell-v1": ("SRUCell", dict(input_size=4, hidden_size=4, v1=True)),
    "cell-bi-k3": ("SRUCell", dict(input_size=8, hidden_size=4, bidirectional=True, highway_bias=-0.5)),
    "cell-bi-k4": ("SRUCell", dict(input_size=5, hidden_size=4, bidirectional=True)),
    "cell-bi-noskip": ("SRUCell", dict(input_size=8, hidden_size=4, bidirectional=True, has_skip_term=False)),
    "sru-2layer": ("SRU", dict(input_size=5, hidden_size=4, num_layers=2)),
    "sru-2layer-rescale": ("SRU", dict(input_size=4, hidden_size=4, num_layers=2, rescale=True, highway_bias=-2.0)),
    "sru-bi-2layer": ("SRU", dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, rescale=True, highway_bias=0.3)),
}


def _module(name, dtype=torch.float64, seed=0):
    cls, kwargs = CONFIGS[name]
    torch.manual_seed(seed)
    m = getattr(sru_pkg, cls)(**kwargs).to(dtype).eval()
    with torch.no_grad():
        # The package initialises b_f = 0 and b_r = highway_bias: perturb every bias (and weight_c,
        # unless v1 freezes it at zero) so a misplaced bias or v entry cannot hide.
        for cell in m.rnn_lst if cls == "SRU" else [m]:
            cell.bias.add_(0.5 * torch.randn_like(cell.bias))
            if not cell.v1:
                cell.weight_c.add_(0.5 * torch.randn_like(cell.weight_c))
    return m


def _inputs(m, seed=1, dtype=np.float64, mask=False):
    rng = np.random.default_rng(seed)
    L = getattr(m, "num_layers", None)
    out = m.output_size
    x = rng.standard_normal((T, B, m.input_size)).astype(dtype)
    c0 = rng.standard_normal((B, out) if L is None else (L, B, out)).astype(dtype)
    pad = None
    if mask:
        # Trailing padding of different lengths, plus one padded step inside a sequence: the package
        # defines padding per (t, b), wherever it is.
        lengths = np.array([T, T - 2, 2])
        pad = np.arange(T)[:, None] >= lengths[None, :]
        pad[1, 0] = True
    return x, c0, pad


def _run_package(m, x, c0, pad, G_y, G_c):
    xt = torch.tensor(x, requires_grad=True)
    ct = torch.tensor(c0, requires_grad=True)
    mask = None if pad is None else torch.tensor(pad)
    h, c = m(xt, ct, mask_pad=mask)
    (torch.sum(torch.tensor(G_y) * h) + torch.sum(torch.tensor(G_c) * c)).backward()
    grads = {k: p.grad.numpy() for k, p in m.named_parameters() if p.grad is not None}
    return h.detach().numpy(), c.detach().numpy(), grads, xt.grad.numpy(), ct.grad.numpy()


def _halves(c, layer):
    """A layer's state as refrnn takes it: c (B, out), or the pair of direction halves."""
    if isinstance(layer, tuple):
        H = layer[0].hidden_size
        return c[:, :H], c[:, H:]
    return c


def _join(c):
    return np.concatenate(c, axis=-1) if isinstance(c, tuple) else c


def _layer_fns(layer):
    if isinstance(layer, tuple):
        return sru.bidirectional_forward, sru.bidirectional_backward
    return sru.forward, sru.backward


def _run_refrnn(layers, x, c0s, pad, G_y, G_cs):
    """Forward and backward through refrnn layers (each SRUParams or a direction pair) with a mask."""
    caches, c_T = [], []
    for layer, c0 in zip(layers, c0s):
        fwd, _ = _layer_fns(layer)
        x, c, cache = fwd(layer, x, _halves(c0, layer), pad)
        caches.append(cache)
        c_T.append(_join(c))
    y = x
    dy, grads, dc0s = G_y, [None] * len(layers), [None] * len(layers)
    for l in reversed(range(len(layers))):
        _, bwd = _layer_fns(layers[l])
        grads[l], dy, dc0 = bwd(layers[l], caches[l], dy, _halves(G_cs[l], layers[l]))
        dc0s[l] = _join(dc0)
    return y, c_T, tuple(grads), dy, dc0s


def _options(m):
    opts = sru_options(m)
    return opts.pop("kind"), opts


@pytest.mark.parametrize("mask", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_equals_package_float64_with_gradients(name, mask):
    m = _module(name)
    kind, opts = _options(m)
    layers = from_sru(m.state_dict(), kind, **opts)
    layers = layers if kind == "SRU" else (layers,)
    x, c0, pad = _inputs(m, mask=mask)
    rng = np.random.default_rng(2)
    G_y = rng.standard_normal((T, B, m.output_size))
    G_c = rng.standard_normal(c0.shape)

    h, c, pgrads, pdx, pdc0 = _run_package(m, x, c0, pad, G_y, G_c)
    c0s = c0 if kind == "SRU" else c0[None]
    G_cs = G_c if kind == "SRU" else G_c[None]
    y, c_T, grads, dx, dc0s = _run_refrnn(layers, x, c0s, pad, G_y, G_cs)

    # Same equations, evaluated in a slightly different order (sru writes c = u + (c_prev - u) * f):
    # a few ulps of values of order 1, growing mildly with T.
    tol = dict(rtol=0, atol=1e-12)
    np.testing.assert_allclose(y, h, **tol)
    np.testing.assert_allclose(np.stack(c_T) if kind == "SRU" else c_T[0], c, **tol)
    if pad is not None:
        assert np.all(y[np.broadcast_to(pad[:, :, None], y.shape)] == 0.0)
    np.testing.assert_allclose(dx, pdx, **tol)
    np.testing.assert_allclose(np.stack(dc0s) if kind == "SRU" else dc0s[0], pdc0, **tol)
    ours = to_sru(grads if kind == "SRU" else grads[0], kind, rescale=opts["rescale"])
    assert set(pgrads) <= set(ours)
    for key, g in pgrads.items():
        np.testing.assert_allclose(ours[key], g, err_msg=key, **tol)
    if not opts["v_terms"]:
        assert all(gr.v is None for layer in grads for gr in (layer if isinstance(layer, tuple) else (layer,)))


@pytest.mark.parametrize("mask", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("name", ["cell-k3-rescale", "cell-k4-rescale", "cell-tanh", "cell-bi-k3", "cell-bi-k4", "sru-bi-2layer"])
def test_equals_package_cpu_kernel_float32(name, mask):
    """The package's C++ kernel (no autograd, float32 only) against refrnn in float32 and in float64."""
    m = _module(name, dtype=torch.float32)
    kind, opts = _options(m)
    layers32 = from_sru(m.state_dict(), kind, **opts)
    layers32 = layers32 if kind == "SRU" else (layers32,)
    x, c0, pad = _inputs(m, dtype=np.float32, mask=mask)
    with torch.no_grad():
        h, c = m(torch.tensor(x), torch.tensor(c0), mask_pad=None if pad is None else torch.tensor(pad))
    h, c = h.numpy(), c.numpy()
    c0s = c0 if kind == "SRU" else c0[None]

    def run(layers, x, c0s):
        cs = []
        for layer, c0 in zip(layers, c0s):
            x, c_T, _ = _layer_fns(layer)[0](layer, x, _halves(c0, layer), pad)
            cs.append(_join(c_T))
        return x, np.stack(cs) if kind == "SRU" else cs[0]

    def to64(layer):
        return tuple(p.astype(np.float64) for p in layer) if isinstance(layer, tuple) else layer.astype(np.float64)

    y32, c32 = run(layers32, x, c0s)
    y64, c64 = run(tuple(to64(l) for l in layers32), x.astype(np.float64), c0s.astype(np.float64))
    assert y32.dtype == np.float32
    # float32 has eps 6e-8; each step adds a few roundings to values of order 1-10 (products of D <= 8
    # terms, a contraction f*c), over T = 6 steps and 2 layers: 2e-5 is ~300 ulps of headroom, and far
    # below any real discrepancy (a wrong block or sign changes outputs by O(0.1)).
    for ours in ((y32, c32), (y64, c64)):
        np.testing.assert_allclose(ours[0], h, rtol=0, atol=2e-5)
        np.testing.assert_allclose(ours[1], c, rtol=0, atol=2e-5)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_state_dict_round_trip_through_refrnn(name):
    m = _module(name)
    kind, opts = _options(m)
    sd = {k: v.numpy() for k, v in m.state_dict().items()}
    back = to_sru(from_sru(sd, kind, **opts), kind, rescale=opts["rescale"])
    assert set(back) == set(sd)
    for key, value in sd.items():
        if key.endswith("scale_x") and not _uses_scale_x(m, key):
            continue  # the package ignores scale_x there, and so does the layout (written as 1.0)
        np.testing.assert_array_equal(back[key], value, err_msg=key)
    # And it loads: the package accepts the converted dict as is.
    m2 = _module(name, seed=5)
    m2.load_state_dict({k: torch.tensor(v) for k, v in back.items()})


def _uses_scale_x(m, key):
    cell = m.rnn_lst[int(key.split(".")[1])] if key.startswith("rnn_lst") else m
    return cell.rescale and cell.has_skip_term and cell.num_matrices == 3


def test_issue_claims_about_the_package():
    """The facts the layout relies on, read off live modules (they are in the module docstring)."""
    cell, stack = sru_pkg.SRUCell(4, 4), sru_pkg.SRU(4, 4)
    assert cell.rescale is True and stack.rnn_lst[0].rescale is False  # the defaults differ
    assert sru_pkg.SRUCell(5, 4).num_matrices == 4 and sru_pkg.SRUCell(4, 4).num_matrices == 3
    assert sru_pkg.SRUCell(5, 4, has_skip_term=False).num_matrices == 3
    assert sru_pkg.SRUCell(8, 4, bidirectional=True).num_matrices == 3  # input == output = ndir * H
    bi = sru_pkg.SRUCell(5, 4, bidirectional=True)
    assert tuple(bi.weight.shape) == (5, 2 * 4 * 4) and tuple(bi.weight_c.shape) == (2 * 2 * 4,)
    assert tuple(bi.bias.shape) == (2 * 2 * 4,)
    # scale_x is the float32-rounded sqrt(1 + 2 exp(highway_bias)), kept when the module is cast to float64.
    scaled = sru_pkg.SRUCell(4, 4, highway_bias=-0.5).double()
    assert scaled.scale_x.item() == float(np.float32(sru.highway_alpha(-0.5)))
    assert scaled.scale_x.item() != sru.highway_alpha(-0.5)


def test_converted_refrnn_init_runs_in_the_package():
    """refrnn's own init, exported, gives the package's outputs (the reverse direction of the layout)."""
    rng = np.random.default_rng(3)
    # A bidirectional layer of input 2H = 8: each direction's identity skip reads its own half of x.
    fwd = sru.init(8, 4, skip="identity", rescale=True, highway_bias=-1.0, rng=rng)
    rev = sru.init(8, 4, skip="identity", rescale=True, highway_bias=-1.0, rng=rng).replace(skip_offset=4)
    fwd = fwd.replace(b=rng.standard_normal(8))
    m = sru_pkg.SRUCell(8, 4, bidirectional=True).double()
    sd = to_sru((fwd, rev), "SRUCell")
    m.load_state_dict({k: torch.tensor(v) for k, v in sd.items()})
    x, _, _ = _inputs(m)
    h, c = m(torch.tensor(x))
    y, (c_f, c_r), _ = sru.bidirectional_forward((fwd, rev), x)
    np.testing.assert_allclose(y, h.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.concatenate([c_f, c_r], -1), c.detach().numpy(), rtol=0, atol=1e-12)


def test_unsupported_modules_are_refused():
    with pytest.raises(ValueError, match="layer_norm"):
        sru_options(sru_pkg.SRUCell(4, 4, layer_norm=True))
    with pytest.raises(ValueError, match="projection_size"):
        sru_options(sru_pkg.SRU(6, 4, projection_size=2))
    with pytest.raises(ValueError, match="weight_proj"):
        from_sru(sru_pkg.SRU(6, 4, projection_size=2).state_dict(), "SRU")
    with pytest.raises(ValueError, match="layer_norm"):
        from_sru(sru_pkg.SRUCell(4, 4, layer_norm=True).state_dict(), "SRUCell")
