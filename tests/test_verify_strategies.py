"""The strategies' cell table builds what a drawn spec says: every choice reaches the cell's ``init``."""

import itertools

import pytest

from refrnn.verify.strategies import CELLS, _skeleton, _spec, _spec_of


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_each_drawn_choice_reaches_the_built_layer(cell):
    kind = CELLS[cell]
    names = list(kind.choices)
    for values in itertools.product(*(kind.choices[n] for n in names)):
        for D, H in ((2, 3), (3, 3)):
            spec = _spec(cell, H, dict(zip(names, values)), D, 2)
            # _spec_of reads the options back off the built container
            assert _spec_of(_skeleton(spec), D) == spec, (cell, values, D, H)
