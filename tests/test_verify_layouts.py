"""The layouts' conventions table (refrnn.verify.adapters.LAYOUT_CONVENTIONS) and the one check that reads it.

Cheap: no framework is imported (the Keras, Flax and ONNX adapters import only refrnn's converters until a
candidate runs) and no example is drawn.
"""

import pytest

from refrnn.verify import adapters, adapters_flax, adapters_keras, adapters_onnx  # noqa: F401 - they register their layouts
from refrnn.verify.adapters import LAYOUT_CONVENTIONS, LAYOUTS, NotExpressible, conventions_of
from refrnn.verify.strategies import CONVENTIONS, CellConfig, LayerSpec

# A problem every built-in layout can hold before conventions: one plain GRU layer (one SRU for sru-cell).
_GRU = LayerSpec("gru", 3, (("reset", "after"),), 2)
_SRU = LayerSpec("sru", 3, (), 2)


def _config(layout: str, convention: str | None) -> CellConfig:
    spec = _SRU if layout == "sru-cell" else _GRU
    flags = {
        "bidirectional": {},
        "lengths": {"packed": True},
        "batch_first": {"batch_first": True},
        "unbatched": {"unbatched": True},
        "no_initial_state": {"initial_state": False},
    }
    spec = spec._replace(bidirectional=(convention == "bidirectional"))
    return CellConfig(2, 1, 3, (spec,), **flags.get(convention, {}))


def test_the_table_names_only_known_conventions_and_registered_layouts():
    assert tuple(LAYOUT_CONVENTIONS) == CONVENTIONS  # one row per convention, in the strategies' order
    for convention, row in LAYOUT_CONVENTIONS.items():
        for layout, entry in row.items():
            assert layout in LAYOUTS, f"{convention}: {layout!r} is no registered layout"
            assert isinstance(entry, (str, NotExpressible)) and (entry.why if isinstance(entry, NotExpressible) else entry)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_each_layout_reads_its_column(layout):
    lay = LAYOUTS[layout]
    how, why_not = conventions_of(layout)
    assert lay.CONVENTIONS == how and lay.NOT_EXPRESSIBLE == why_not
    assert all(isinstance(v, str) for v in (*how.values(), *why_not.values()))
    assert not set(how) & set(why_not)
    assert list(how) == [c for c in CONVENTIONS if c in how]  # candidates declare them in this order
    for convention in CONVENTIONS:
        if convention in why_not:
            assert lay.not_expressible(convention) == why_not[convention]
        elif convention not in how:
            assert lay.not_expressible(convention) == f"layout {layout!r} has no way to express it"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_unsupported_refuses_exactly_the_conventions_a_layout_cannot_express(layout):
    lay = LAYOUTS[layout]
    assert lay.unsupported(_config(layout, None)) is None
    for convention in CONVENTIONS:
        reason = lay.unsupported(_config(layout, convention))
        if convention in lay.CONVENTIONS:
            assert reason is None, (convention, reason)
        else:
            assert reason == f"{convention}: {lay.not_expressible(convention)}"


def test_the_built_in_layouts_columns():
    # what each framework's adapter draws: a change here changes what `refrnn verify` checks
    drawn = {name: tuple(LAYOUTS[name].CONVENTIONS) for name in ("torch", "torch-cell", "refrnn", "sru-cell", "keras", "onnx", "flax")}
    every = CONVENTIONS
    assert drawn == {
        "torch": every,
        "torch-cell": ("unbatched", "no_initial_state"),
        "refrnn": every,
        "sru-cell": (),
        "keras": ("bidirectional", "lengths", "no_initial_state"),
        "onnx": ("bidirectional", "lengths", "batch_first", "no_initial_state"),
        "flax": every,
    }


@pytest.mark.parametrize(
    "layout, one_layer, holds",
    [
        ("keras", "a Keras recurrent layer is one layer", "a GRU, LSTM or SimpleRNN layer"),
        ("onnx", "an ONNX GRU/LSTM/RNN node is one layer", "a GRU, LSTM or RNN layer"),
        ("flax", "an nn.RNN is one layer", "a GRUCell, LSTMCell or SimpleCell"),
    ],
)
def test_one_layer_layouts_refuse_stacks_and_other_cells(layout, one_layer, holds):
    lay = LAYOUTS[layout]
    assert lay.unsupported(CellConfig(2, 1, 3, (_GRU, _GRU._replace(D=2)))).startswith(one_layer)
    assert lay.unsupported(CellConfig(2, 1, 3, (_SRU,))) == f"layout {layout!r} holds {holds}, got 'sru'"
