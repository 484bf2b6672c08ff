"""The workloads of ``refrnn bench``, one module per area; importing this package registers them all.

The order of the imports is the run order.
"""

from . import gru_lstm, ccgru, sru, deep  # noqa: F401,I001
