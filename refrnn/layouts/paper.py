"""The seed paper's GRU orientation (Davis & Arel, Eq. 4): ``h_t = (1 - z) * h_{t-1} + z * h^_t``.

refrnn (like PyTorch, cuDNN, Keras and ONNX) writes ``h_t = (1 - z) * n + z * h_{t-1}``. With
``z = sigmoid(a)`` the two are the same model with ``a`` negated, because ``1 - sigmoid(a) =
sigmoid(-a)``: negate the z rows of ``W_x``, ``W_h``, ``b_x`` and ``b_h``. The map is its own
inverse, so one function converts both ways.
"""

from __future__ import annotations

from ..cells.gru import GATES, GRUParams
from ..cells._common import gate_rows


def flip_update_orientation(params: GRUParams) -> GRUParams:
    """Weights of the other orientation of the update rule (paper Eq. 4 <-> refrnn/PyTorch)."""
    if not isinstance(params, GRUParams):
        raise TypeError(f"params: expected GRUParams, got {type(params).__name__}")
    rows = gate_rows(GATES, "z", params.hidden_size)

    def negate_z(a):
        out = a.copy()
        out[rows] = -out[rows]
        return out

    return params.map(negate_z)


def __getattr__(name: str):
    # The former names of flip_update_orientation (one function, both directions), for one release.
    if name in ("gru_from_paper", "gru_to_paper"):
        import warnings

        warnings.warn(
            f"refrnn.layouts.paper.{name} is deprecated: use flip_update_orientation (its own inverse)",
            DeprecationWarning,
            stacklevel=2,
        )
        return flip_update_orientation
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
