"""Which BLAS every run of the suite ran on: NumPy's OpenBLAS and SciPy's (the one ``np.dot`` inside
numba calls), their versions, thread counts and core types, and whether ``OPENBLAS_CORETYPE`` forced it.

Every ratio of the suite depends on the BLAS kernel that ran: these machines export
``OPENBLAS_CORETYPE=Haswell``, which runs OpenBLAS's AVX2 kernels on an AVX-512 CPU at about 60% of
the native rate, and torch's oneDNN ignores the variable. A history that does not say which kernel ran
mixes two machines' worth of numbers; these rows say it, from :func:`refrnn.jit._blas.describe`.

asv results hold numbers keyed by benchmark and parameters, so the record comes in two forms:

* :class:`BLASRecord`, parameterised by the library ("numpy", "scipy"): one number per field (threads,
  forced or not, core type as a code, version). The parameters never change, so asv's graphs show
  every commit's value and a step marks the commit where the BLAS changed; a rise is what asv flags.
* :class:`BLASDescription`, parameterised by the full description of each loaded OpenBLAS (owner,
  version and build configuration, core type, forced or detected, threads), computed when asv
  discovers the suite. The strings are stored with each result and show in the published pages; asv
  publishes the results of the parameters of the latest discovery, so an older run on another BLAS
  drops out of this row's graph (its strings stay in its results file), while :class:`BLASRecord`
  keeps its history.

The values come from the benchmark's own process: asv runs each in a process of its own with the
environment of ``asv run`` (it passes ``OPENBLAS_CORETYPE`` through), so they describe the processes
that timed the other rows.
"""

from __future__ import annotations

import importlib
import re

from .common import module_exists, require, skip_combination

LIBRARIES = ("numpy", "scipy")  # append only: asv keys results by these names

# Codes of :meth:`BLASRecord.track_core`: OpenBLAS's core names (``openblas_get_corename``), compared
# without case. APPEND ONLY: a code is the history's name for a kernel set. 0: a name not listed here
# (the description row names it).
CORE_CODES = {
    "prescott": 1,
    "core2": 2,
    "nehalem": 3,
    "sandybridge": 4,
    "haswell": 5,
    "skylakex": 6,
    "cooperlake": 7,
    "sapphirerapids": 8,
    "zen": 9,
    "excavator": 10,
    "armv8": 11,
    "neoversen1": 12,
    "neoversev1": 13,
    "neoversen2": 14,
    "power9": 15,
    "power10": 16,
}


def blas_module():
    return require("refrnn.jit._blas", "describe", "forced_core")


def records() -> list[dict]:
    """Each loaded OpenBLAS as :func:`refrnn.jit._blas.describe` reports it, plus ``forced``: the
    core type ``OPENBLAS_CORETYPE`` forces (it applies to every OpenBLAS of the process), or None."""
    blas = blas_module()
    forced = blas.forced_core()
    return [{**lib, "forced": forced} for lib in blas.describe()]


def description(record: dict) -> str:
    """One line naming a library's BLAS: whose it is, its configuration (version and build options),
    the core type it runs and whether the environment forced it, and its thread count."""
    core = record.get("core", "?")
    config = " ".join(record.get("config", "?").split())  # OpenBLAS pads some fields with two spaces
    how = f"forced by OPENBLAS_CORETYPE={record['forced']}" if record["forced"] else "detected"
    return f"{record['owner']}: {config}; core {core} ({how}); {record['threads']} threads"


def version_code(config: str | None) -> int | None:
    """``major * 10000 + minor * 100 + patch`` of the OpenBLAS version in a ``get_config`` string
    ("OpenBLAS 0.3.30 DYNAMIC_ARCH ..." -> 330), or None when it names none."""
    match = re.search(r"OpenBLAS (\d+)\.(\d+)\.(\d+)", config or "")
    if match is None:
        return None
    major, minor, patch = map(int, match.groups())
    return major * 10000 + minor * 100 + patch


def core_code(core: str | None) -> int:
    return CORE_CODES.get((core or "").lower(), 0)


def _descriptions_at_discovery() -> list[str]:
    # asv reads ``params`` when it imports the suite (discovery, and its forkserver): computed here,
    # once. A Python without refrnn, or a commit without the BLAS report, gets one placeholder that
    # every setup skips, so that importing the suite never fails over this row.
    if not module_exists("refrnn.jit._blas"):
        return ["(no BLAS report in this commit: refrnn.jit._blas)"]
    if not all(hasattr(importlib.import_module("refrnn.jit._blas"), f) for f in ("describe", "forced_core")):
        return ["(no BLAS report in this commit: refrnn.jit._blas.describe)"]
    return [description(r) for r in records()] or ["(no OpenBLAS loaded)"]


class _Record:
    repeat = 1
    number = 1
    processes = 1

    def _record(self, owner: str) -> dict:
        found = [r for r in records() if r["owner"] == owner]
        if not found:
            skip_combination(f"no OpenBLAS of {owner} is loaded in this process")
        return found[0]


class BLASRecord(_Record):
    """The BLAS of NumPy and of SciPy (the one numba's ``np.dot`` calls), as numbers: one row a field.

    ``track_threads``: OpenBLAS threads. ``track_core_forced``: 1 when ``OPENBLAS_CORETYPE`` forces
    the core type (the other rows then do not show this CPU's native kernels), 0 when OpenBLAS detected
    it. ``track_core``: the core type as a code of ``CORE_CODES`` (1 Prescott, 2 Core2, 3 Nehalem,
    4 Sandybridge, 5 Haswell, 6 SkylakeX, 7 Cooperlake, 8 SapphireRapids, 9 Zen, 10 Excavator, 11 ARMV8,
    12 NeoverseN1, 13 NeoverseV1, 14 NeoverseN2, 15 POWER9, 16 POWER10; 0 another name: see
    ``BLASDescription``). ``track_version``: major * 10000 + minor * 100 + patch (330: 0.3.30).
    """

    params = [list(LIBRARIES)]
    param_names = ["library"]

    def setup(self, library):
        self.record = self._record(library)

    def track_threads(self, library):
        return self.record["threads"]

    track_threads.unit = "threads"

    def track_core_forced(self, library):
        return int(bool(self.record["forced"]))

    track_core_forced.unit = "1: forced by OPENBLAS_CORETYPE, 0: detected"
    track_core_forced.can_be_zero = True

    def track_core(self, library):
        if "core" not in self.record:
            skip_combination(f"{library}'s OpenBLAS does not report its core type")
        return core_code(self.record["core"])

    track_core.unit = "core code (see the docstring)"
    track_core.can_be_zero = True  # a core name CORE_CODES does not list

    def track_version(self, library):
        code = version_code(self.record.get("config"))
        if code is None:
            skip_combination(f"{library}'s OpenBLAS configuration names no version: {self.record.get('config')!r}")
        return code

    track_version.unit = "major*10000 + minor*100 + patch"


class BLASDescription(_Record):
    """Each loaded OpenBLAS described in full (its parameter); the value is its thread count.

    asv imports the suite again in the process that runs a benchmark and hands it the index of a
    parameter, so the description a result is stored under is the one asv discovered and the value is
    the running process's: the two agree when discovery and run share an environment, as in this
    suite's one-environment matrix. (With several environments asv discovers in the first one only;
    ``BLASRecord``'s numbers are each process's own whatever the matrix.) ``setup`` refuses, as a
    skipped combination, a description that is not its own process's BLAS.
    """

    params = [_descriptions_at_discovery()]
    param_names = ["blas"]
    unit = "threads"

    def setup(self, blas):
        here = {description(r): r for r in records()}
        if blas not in here:
            skip_combination(f"this process's BLAS is {sorted(here)}, not {blas!r} (seen at discovery)")
        self.record = here[blas]

    def track_threads(self, blas):
        return self.record["threads"]
