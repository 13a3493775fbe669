"""Vectorized shingling and MinHash signatures.

Everything after text normalization runs as numpy array operations over a whole batch of documents:
no Python loop per token, per shingle or per permutation.

Pipeline for a batch of texts
-----------------------------
1. Normalize like :func:`selectflow.text.normalize`: NFKC, then ``casefold`` (one C call each per document).
2. Concatenate the batch and view it as a ``uint32`` array of Unicode **code points** (UTF-32).
3. Units
   - ``unit="word"``: tokens are runs of word characters, exactly the matches of ``re.findall(r"\\w+", ...)``
     (Unicode-aware, via a lookup table over all code points built once from Python's own regex engine).
     Whitespace collapsing does not change the ``\\w+`` runs, so it is not materialized.
   - ``unit="char"``: every code point of the fully normalized string (whitespace runs collapsed to one
     space, stripped) is a unit; n-grams are over **code points**, not UTF-8 bytes.
4. Unit hash (64-bit): ``mix64(sum_i mix64(cp_i + (i + 1) * G))`` over the unit's code points (wrapping
   uint64 arithmetic, ``mix64`` = the SplitMix64 finalizer). Computed with ``np.add.reduceat``.
5. Shingle hash (32-bit): ``mix64(sum_k mix64(unit_{j+k} + (k + 1) * G2)) >> 32`` over ``ngram`` consecutive units
   of the same document. A document with fewer units than ``ngram`` (but at least one) has exactly ONE shingle made
   of all its units; a document with no unit at all (empty, or punctuation only for ``word``) has the EMPTY shingle
   set and the all-``EMPTY`` signature (``0xFFFFFFFF`` everywhere), which near dedup never pairs.
6. MinHash: permutation ``p`` maps a 32-bit shingle ``x`` to ``((a_p * x + b_p) mod 2**64) >> 32`` with random 64-bit
   ``a_p, b_p`` drawn from ``numpy.random.default_rng(seed)`` (Dietzfelbinger's multiply-add-shift family, strongly
   universal for 32-bit keys). Signature value = the minimum over the document's shingles, taken with
   ``np.minimum.reduceat`` over cache-sized groups of documents (the shift commutes with the minimum, so it is
   applied once to the result).

Signatures are ``uint32`` of shape ``(n, num_perm)``. They depend only on each document's own text and on
``(num_perm, ngram, unit, seed)``: never on the batch size, the batch composition or the shard split.

:func:`shingles` is the plain-Python reference of steps 1-5 (slow; for tests and ground truth).
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Sequence

import numpy as np

from selectflow.text import normalize

__all__ = ["EMPTY", "MinHasher", "shingles", "jaccard_estimate"]

EMPTY = np.uint32(0xFFFFFFFF)  # every signature value of a document without shingles

_M64 = (1 << 64) - 1
_C1, _C2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_G = 0x9E3779B97F4A7C15  # position constant inside a unit
_G2 = 0xC2B2AE3D27D4EB4F  # position constant inside a shingle
_U1, _U2 = np.uint64(_C1), np.uint64(_C2)
_UG, _UG2 = np.uint64(_G), np.uint64(_G2)
_S30, _S27, _S31, _S32 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)

# Shingles per MinHash group: (num_perm x group) uint64 = 8 MB for 128 permutations.
_GROUP_SHINGLES = 8192
# Code points per tokenization batch (bounds the memory of one signatures() step).
_BATCH_CHARS = 4_000_000


# --------------------------------------------------------------------------- reference (plain Python)
def _mix64_py(x: int) -> int:
    x &= _M64
    x ^= x >> 30
    x = (x * _C1) & _M64
    x ^= x >> 27
    x = (x * _C2) & _M64
    return x ^ (x >> 31)


def _unit_hash_py(unit: str) -> int:
    total = 0
    for i, ch in enumerate(unit):
        total += _mix64_py(ord(ch) + (i + 1) * _G)
    return _mix64_py(total)


_WORD = re.compile(r"\w+")


def _units_py(text: str, unit: str) -> list[str]:
    if unit == "word":
        return _WORD.findall(normalize(text))
    if unit == "char":
        return list(normalize(text))
    raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")


def shingles(text: str, ngram: int, unit: str) -> set[int]:
    """Reference shingle set (32-bit ints) of `text`: same tokenization and hashing as :class:`MinHasher`."""
    hashes = [_unit_hash_py(u) for u in _units_py(text, unit)]
    if not hashes:
        return set()
    width = min(ngram, len(hashes))
    out = set()
    for j in range(len(hashes) - width + 1):
        total = 0
        for k in range(width):
            total += _mix64_py(hashes[j + k] + (k + 1) * _G2)
        out.add(_mix64_py(total) >> 32)
    return out


# --------------------------------------------------------------------------- vectorized
def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer, in place on a uint64 array (wrapping arithmetic); returns it."""
    x ^= x >> _S30
    x *= _U1
    x ^= x >> _S27
    x *= _U2
    x ^= x >> _S31
    return x


_TABLES: dict[str, np.ndarray] = {}


def _class_table(pattern: str) -> np.ndarray:
    """Bool table over all code points: does `pattern` (one char class) match chr(cp)? Built once via `re`."""
    table = _TABLES.get(pattern)
    if table is None:
        table = np.zeros(sys.maxunicode + 1, dtype=bool)
        everything = "".join(map(chr, range(sys.maxunicode + 1)))
        for match in re.finditer(pattern + "+", everything):
            table[match.start() : match.end()] = True
        _TABLES[pattern] = table
    return table


def _codepoints(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated code points (uint32) and per-string offsets (int64, len n+1)."""
    lengths = np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))
    offsets = np.zeros(len(strings) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    cps = np.frombuffer("".join(strings).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return cps, offsets


def _segment_ids(offsets: np.ndarray, n_items: int) -> np.ndarray:
    """For offsets of segments over n_items items: segment index of every item."""
    counts = np.diff(offsets)
    return np.repeat(np.arange(len(counts), dtype=np.int64), counts)


def _unit_hashes_word(cps: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hash of every \\w+ token and per-document token offsets."""
    n_docs = len(offsets) - 1
    if cps.size == 0:
        return np.zeros(0, np.uint64), np.zeros(n_docs + 1, np.int64)
    isw = _class_table(r"\w")[cps]
    prev = np.empty_like(isw)
    prev[0] = False
    prev[1:] = isw[:-1]
    starts_at = offsets[:-1][np.diff(offsets) > 0]
    prev[starts_at] = False  # a token never continues across documents
    start = isw & ~prev
    word_pos = np.flatnonzero(isw)  # positions of word characters
    tok_first = np.flatnonzero(start[word_pos])  # index in word_pos of each token's first char
    tok_start = word_pos[tok_first]  # char position of each token's first char
    tok_of_char = np.cumsum(start[word_pos]) - 1
    pos_in_tok = (word_pos - tok_start[tok_of_char]).astype(np.uint64)
    pos_in_tok += np.uint64(1)
    pos_in_tok *= _UG
    contrib = cps[word_pos].astype(np.uint64)
    contrib += pos_in_tok
    _mix64(contrib)
    if tok_first.size:
        tok_hash = _mix64(np.add.reduceat(contrib, tok_first))
    else:
        tok_hash = np.zeros(0, np.uint64)
    tok_offsets = np.searchsorted(tok_start, offsets, side="left").astype(np.int64)
    return tok_hash, tok_offsets


def _normalized_chars(cps: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whitespace runs -> one space, stripped per document (normalize's last two steps), vectorized."""
    if cps.size == 0:
        return cps, offsets
    sp = _class_table(r"\s")[cps]
    doc = _segment_ids(offsets, cps.size)
    prev = np.empty_like(sp)
    prev[0] = True
    prev[1:] = sp[:-1]
    prev[offsets[:-1][np.diff(offsets) > 0]] = True  # a space at a document start is leading: dropped
    nonsp_cum = np.cumsum(~sp)
    doc_nonsp_end = nonsp_cum[offsets[1:][np.diff(offsets) > 0] - 1]  # non-space count up to each doc's end
    end_per_doc = np.zeros(len(offsets) - 1, dtype=nonsp_cum.dtype)
    end_per_doc[np.diff(offsets) > 0] = doc_nonsp_end
    trailing = nonsp_cum >= end_per_doc[doc]  # no non-space char after this position in its document
    keep = ~sp | (~prev & ~trailing)
    out = np.where(sp, np.uint32(32), cps)[keep]
    counts = np.bincount(doc[keep], minlength=len(offsets) - 1)
    new_offsets = np.zeros(len(offsets), dtype=np.int64)
    np.cumsum(counts, out=new_offsets[1:])
    return out, new_offsets


def _unit_hashes_char(cps: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    chars, new_offsets = _normalized_chars(cps, offsets)
    contrib = chars.astype(np.uint64)
    contrib += _UG  # position 0 inside a one-character unit
    return _mix64(_mix64(contrib)), new_offsets


def _shingle_hashes(units: np.ndarray, unit_offsets: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit shingle hashes (uint32, sorted by document) and per-document shingle offsets."""
    counts = np.diff(unit_offsets)
    width = np.minimum(counts, ngram)
    n_sh = np.where(counts >= ngram, counts - ngram + 1, (counts > 0).astype(np.int64))
    sh_offsets = np.zeros(len(unit_offsets), dtype=np.int64)
    np.cumsum(n_sh, out=sh_offsets[1:])
    total = int(sh_offsets[-1])
    if total == 0:
        return np.zeros(0, np.uint32), sh_offsets
    first = np.repeat(unit_offsets[:-1] - sh_offsets[:-1], n_sh) + np.arange(total, dtype=np.int64)
    w = np.repeat(width, n_sh)
    acc = np.zeros(total, dtype=np.uint64)
    last = units.size - 1
    for k in range(ngram):  # ngram vector ops over the whole batch
        term = units[np.minimum(first + k, last)]
        term += np.uint64((k + 1) * _G2 & _M64)
        _mix64(term)
        if k:
            term[w <= k] = 0
        acc += term
    _mix64(acc)
    return (acc >> _S32).astype(np.uint32), sh_offsets


def jaccard_estimate(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise fraction of equal signature values (the MinHash Jaccard estimate)."""
    return (np.asarray(a) == np.asarray(b)).mean(axis=-1)


class MinHasher:
    """MinHash signatures of texts; see the module docstring for the exact scheme.

    ``signatures(texts)`` returns a ``uint32`` array of shape ``(len(texts), num_perm)``.
    """

    def __init__(self, num_perm: int = 128, ngram: int = 5, unit: str = "word", seed: int = 1):
        if unit not in ("word", "char"):
            raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
        if ngram < 1 or num_perm < 1:
            raise ValueError("ngram and num_perm must be >= 1")
        self.num_perm, self.ngram, self.unit, self.seed = num_perm, ngram, unit, seed
        rng = np.random.default_rng(seed)
        self.a = rng.integers(0, 1 << 64, size=num_perm, dtype=np.uint64, endpoint=False)
        self.b = rng.integers(0, 1 << 64, size=num_perm, dtype=np.uint64, endpoint=False)

    def __repr__(self) -> str:
        return f"MinHasher(num_perm={self.num_perm}, ngram={self.ngram}, unit={self.unit!r}, seed={self.seed})"

    def shingle_hashes(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vectorized shingle hashes of a batch: (uint32 hashes, int64 per-text offsets). Same values as `shingles`."""
        normed = [unicodedata.normalize("NFKC", t).casefold() for t in texts]
        cps, offsets = _codepoints(normed)
        if self.unit == "word":
            units, unit_offsets = _unit_hashes_word(cps, offsets)
        else:
            units, unit_offsets = _unit_hashes_char(cps, offsets)
        return _shingle_hashes(units, unit_offsets, self.ngram)

    def _minhash(self, sh: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        n_docs = len(offsets) - 1
        out = np.full((n_docs, self.num_perm), EMPTY, dtype=np.uint32)
        nonempty = np.flatnonzero(np.diff(offsets) > 0)
        if nonempty.size == 0:
            return out
        starts = offsets[nonempty]
        ends = offsets[nonempty + 1]
        # Cut the documents into groups of about _GROUP_SHINGLES shingles (a big document is a group of its own).
        cuts = [0]
        bounds = np.searchsorted(ends, np.arange(_GROUP_SHINGLES, int(ends[-1]) + _GROUP_SHINGLES, _GROUP_SHINGLES),
                                 side="right")
        for c in np.unique(bounds):
            if c > cuts[-1]:
                cuts.append(int(c))
        if cuts[-1] != nonempty.size:
            cuts.append(nonempty.size)
        # Permutation-major layout: the reduction runs along contiguous memory (about 3x faster than shingle-major).
        mins = np.empty((self.num_perm, nonempty.size), dtype=np.uint64)
        a, b = self.a[:, None], self.b[:, None]
        cut = np.asarray(cuts)
        widest = int(np.max(ends[cut[1:] - 1] - starts[cut[:-1]]))
        buf = np.empty(self.num_perm * widest, dtype=np.uint64)
        for g0, g1 in zip(cuts[:-1], cuts[1:]):
            lo, hi = int(starts[g0]), int(ends[g1 - 1])
            v = buf[: self.num_perm * (hi - lo)].reshape(self.num_perm, hi - lo)
            np.multiply(a, sh[None, lo:hi], out=v, dtype=np.uint64)
            np.add(v, b, out=v)
            mins[:, g0:g1] = np.minimum.reduceat(v, starts[g0:g1] - lo, axis=1)
        mins = mins.T
        out[nonempty] = (mins >> _S32).astype(np.uint32)
        return out

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """uint32 signatures, shape (len(texts), num_perm); batch-size independent."""
        texts = list(texts)
        out = np.empty((len(texts), self.num_perm), dtype=np.uint32)
        ends = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)))
        i = 0
        while i < len(texts):  # batches of about _BATCH_CHARS characters (at least one text)
            base = int(ends[i - 1]) if i else 0
            j = max(i + 1, int(np.searchsorted(ends, base + _BATCH_CHARS, side="right")))
            sh, offsets = self.shingle_hashes(texts[i:j])
            out[i:j] = self._minhash(sh, offsets)
            i = j
        return out
