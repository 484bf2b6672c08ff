"""``python -m refrnn.bench``: the same as ``refrnn bench``."""

import sys

from .cli import main

sys.exit(main())
