"""Every registered cell module has the interface refrnn.cells.interface writes down."""

import types

import pytest

from refrnn import cells
from refrnn.layers import bidirectional
from refrnn.cells import interface
from refrnn.cells import _MODULES


@pytest.mark.parametrize("module", sorted(set(_MODULES.values()), key=lambda m: m.__name__), ids=lambda m: m.__name__)
def test_every_registered_cell_module_conforms(module):
    assert interface.check(module) == []
    assert isinstance(module, interface.CellModule)


def test_a_module_without_backward_is_named():
    fake = types.SimpleNamespace(init=len, zero_state=len, forward=len)
    assert interface.check(fake) == ["backward"]
    assert not isinstance(fake, interface.CellModule)


def test_optional_members_and_their_defaults():
    assert interface.optional(bidirectional, "ACCEPTS_LENGTHS") is True
    assert interface.optional(cells.gru, "ACCEPTS_LENGTHS") is False
    assert interface.optional(cells.gru, "couples_samples") is None
    assert callable(interface.optional(cells.ccgru, "couples_samples"))
    with pytest.raises(ValueError, match="name: expected one of couples_samples, ACCEPTS_LENGTHS"):
        interface.optional(cells.gru, "lengths")
