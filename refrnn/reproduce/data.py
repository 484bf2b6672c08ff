r"""Corpora as arrays of symbol ids over the 27-symbol alphabet of TEXT8 (the seed paper, Sec. VI-A).

Alphabet: ``SYMBOLS = " abcdefghijklmnopqrstuvwxyz"``, id 0 is the space, ids 1..26 the letters.

Mapping any English text to it (:func:`encode`), as TEXT8 itself was made: lower-case; every
character that is not a-z (digits, punctuation, markup, accented letters, newlines) becomes a
space; runs of spaces collapse into one; leading and trailing spaces go.

Two sources:

* **TEXT8** (:func:`load_text8`), when the user has the file (``http://mattmahoney.net/dc/text8.zip``,
  unzipped: 10^8 bytes, already in the alphabet). Split as the paper: the first 95% train, the last
  5% validation.
* **The default corpus** (:func:`default_corpus`), available offline on every machine: the English
  text of the Python documentation's topic pages that ship with the standard library
  (``pydoc_data.topics.topics``: the language reference and library topics that ``help()`` shows,
  ~465 000 characters in Python 3.11), concatenated in sorted key order, then the Zen of Python
  (``this``). It is fixed for a given Python minor version (patch releases may touch the docs: the
  corpus's SHA-256 is recorded with every result). Split 95/5 like TEXT8.

Shapes: a corpus is a 1-d ``uint8`` array of ids; :func:`streams` cuts it into ``B`` parallel
streams, ``(B, L)``, for truncated BPTT.
"""

from __future__ import annotations

import hashlib
import os
from typing import NamedTuple

import numpy as np

SYMBOLS = " abcdefghijklmnopqrstuvwxyz"
V = len(SYMBOLS)  # 27
VALID_FRACTION = 0.05  # the paper: first 95% train, last 5% validation

# byte -> id, and 255 for "not in the alphabet" (becomes a space in encode, an error in load_text8)
_LUT = np.full(256, 255, np.uint8)
for _i, _c in enumerate(SYMBOLS):
    _LUT[ord(_c)] = _i


class Corpus(NamedTuple):
    """A corpus split for training: ids (uint8) of the train and validation parts."""

    name: str
    train: np.ndarray
    valid: np.ndarray
    sha256: str  # of the whole encoded corpus (train then valid), to tell corpora apart


def encode(text: str) -> np.ndarray:
    """Map text to ids: lower-case, non a-z -> space, runs of spaces collapsed, ends stripped."""
    raw = np.frombuffer(text.lower().encode("ascii", errors="replace"), np.uint8)
    ids = _LUT[raw]
    ids[ids == 255] = 0
    keep = np.ones(ids.shape, bool)
    keep[1:] = (ids[1:] != 0) | (ids[:-1] != 0)  # a space right after a space is dropped
    ids = ids[keep]
    lo, hi = 0, len(ids)
    while lo < hi and ids[lo] == 0:
        lo += 1
    while hi > lo and ids[hi - 1] == 0:
        hi -= 1
    return np.ascontiguousarray(ids[lo:hi])


def decode(ids) -> str:
    return "".join(SYMBOLS[i] for i in np.asarray(ids).ravel())


def split(name: str, ids: np.ndarray, valid_fraction: float = VALID_FRACTION) -> Corpus:
    """First ``1 - valid_fraction`` for training, the rest for validation (no shuffling: the paper's)."""
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction: expected a number in (0, 1), got {valid_fraction!r}")
    n_valid = max(1, int(round(len(ids) * valid_fraction)))
    if len(ids) - n_valid < 2 or n_valid < 2:
        raise ValueError(f"corpus {name!r}: {len(ids)} symbols are too few to split into train and validation")
    digest = hashlib.sha256(ids.tobytes()).hexdigest()
    return Corpus(name, ids[: len(ids) - n_valid], ids[len(ids) - n_valid :], digest)


def load_text8(path: str, valid_fraction: float = VALID_FRACTION) -> Corpus:
    """TEXT8 from a local file: bytes a-z and space only (anything else is an error: not TEXT8)."""
    if not os.path.isfile(path):
        raise ValueError(f"text8: no such file {path!r} (download and unzip http://mattmahoney.net/dc/text8.zip)")
    raw = np.fromfile(path, np.uint8)
    ids = _LUT[raw]
    bad = np.flatnonzero(ids == 255)
    if bad.size:
        k = int(bad[0])
        raise ValueError(
            f"text8: {path!r} has a byte outside a-z and space at offset {k} ({raw[k]!r}); "
            f"expected the 27-symbol TEXT8 file"
        )
    return split("text8", ids, valid_fraction)


def default_text() -> str:
    """The default corpus's raw text: the stdlib's documentation topics (sorted by key), then the Zen."""
    from pydoc_data.topics import topics

    import codecs
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen
        import this
    zen = codecs.decode(this.s, "rot13")
    return "\n".join(topics[k] for k in sorted(topics)) + "\n" + zen


def default_corpus(valid_fraction: float = VALID_FRACTION, limit: int | None = None) -> Corpus:
    """The offline default corpus, encoded and split; ``limit`` keeps only its first symbols (tests)."""
    ids = encode(default_text())
    if limit is not None:
        ids = ids[:limit]
    return split("python-docs", ids, valid_fraction)


def streams(ids: np.ndarray, batch: int) -> np.ndarray:
    """Cut ``ids`` into ``batch`` contiguous streams of equal length (the remainder is dropped): (B, L)."""
    L = len(ids) // batch
    if L < 2:
        raise ValueError(f"batch: {batch} streams need at least {2 * batch} symbols, the corpus part has {len(ids)}")
    return np.ascontiguousarray(ids[: L * batch].reshape(batch, L))
