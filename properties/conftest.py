"""Hypothesis profiles for the property suite, chosen by the environment variable HYPOTHESIS_PROFILE.

* ``ci`` (default): 20 examples per property, derandomised (the same examples on every run, so CI is
  reproducible and never flaky) and no example database; the whole of properties/ runs in well under
  two minutes on 2 cores.
* ``thorough``: 2,000 examples per property, randomised, with the local example database so a
  failure found once is replayed first next time. ``HYPOTHESIS_PROFILE=thorough python -m pytest properties``.

Both have no deadline: a first call that compiles (Numba) or imports torch takes seconds, and a
deadline would report that as a flaky failure.
"""

import os

from hypothesis import HealthCheck, settings

# Generation is cheap but some properties (finite differences, torch) take ~50 ms an example.
_SLOW_OK = [HealthCheck.too_slow]

settings.register_profile(
    "ci", max_examples=20, derandomize=True, database=None, deadline=None, print_blob=True, suppress_health_check=_SLOW_OK
)
settings.register_profile("thorough", max_examples=2000, deadline=None, print_blob=True, suppress_health_check=_SLOW_OK)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
