"""Layers built from any registered cell: the cells of :mod:`refrnn.cells` composed over depth,
direction and sequence length, with the same pure ``forward``/``backward`` pairs.

* :mod:`~refrnn.layers.stack`: layers on top of each other; PyTorch's input conventions
  (``lengths``, ``batch_first``, unbatched input).
* :mod:`~refrnn.layers.bidirectional`: a forward and a reverse cell as one layer (``BiLayer``).
* :mod:`~refrnn.layers.lengths`: a variable-length batch, as ``pack_padded_sequence`` runs it.
* :mod:`~refrnn.layers.mlp`: dense layers applied to every step's output (a head).
* :mod:`~refrnn.layers.deep`: a stack with an MLP head, one model.
* :mod:`~refrnn.layers.wavefront`: a stack evaluated along anti-diagonals of (layer, step).
"""

from . import bidirectional, deep, lengths, mlp, stack, wavefront

__all__ = ["bidirectional", "deep", "lengths", "mlp", "stack", "wavefront"]
