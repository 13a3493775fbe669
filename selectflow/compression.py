"""Compression measures of redundancy, shared by the ZIP selector and the Entropy-Law risk check.

Compression ratio = raw bytes / compressed bytes: higher means more redundant (less information per byte).
The ratio of empty input is 0.0 (zero raw bytes over a non-empty container).

Compressors
-----------
- ``"zlib"``: ``zlib.compress(data, level)``, level 9 by default (what the Entropy Law paper and the reference
  ZIP code use). Deflate only sees the last 32 KB, so repetition further apart than that is invisible to it.
- ``"zstd"``: one zstd frame at ``level`` (default 19) with window ``2**window_log`` (default 27 = 128 MB) and
  long-distance matching enabled, so redundancy across a whole set of documents counts, not only the last
  32 KB. Frames carry no checksum, content size or dictionary id (pure payload, a few bytes of header).

A *set* of texts is serialized as the UTF-8 texts joined with ``SEPARATOR`` (``"\\n\\n"``, a blank line).

Prefix compressors
------------------
``ZlibPrefix`` compresses a shared prefix once and then answers "how big is ``zlib.compress(prefix + s, 9)``"
for many suffixes ``s`` at a cost proportional to ``len(s)`` (``compressobj.copy()`` + feed ``s`` + flush). The
result is bit-identical to compressing the whole input in one call: deflate's output does not depend on how the
input is cut into ``compress()`` calls when no flush happens in between. ``ReprListPrefix`` adds the framing of a
Python list repr, ``str([r1, r2, ...])`` = ``"[" + ", ".join(reprs) + "]"``, which is what ZIP's reference code
compresses.

``ZstdContext`` measures the marginal cost of a text given a context (the whole selected set), by compressing it
with the context as a raw-content zstd dictionary: every byte of the context can be referenced, however far back.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterable, Sequence
from typing import Literal

import zstandard

Compressor = Literal["zlib", "zstd"]

SEPARATOR = "\n\n"
ZLIB_LEVEL = 9
ZSTD_LEVEL = 19
ZSTD_WINDOW_LOG = 27


def _as_bytes(data: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    return bytes(data)


def zstd_params(
    level: int = ZSTD_LEVEL, window_log: int = ZSTD_WINDOW_LOG, *, ldm: bool = True
) -> zstandard.ZstdCompressionParameters:
    """zstd parameters at `level` with an explicit window of 2**window_log bytes (and long-distance matching)."""
    return zstandard.ZstdCompressionParameters.from_level(
        level,
        window_log=window_log,
        enable_ldm=ldm,
        write_content_size=False,
        write_checksum=False,
        write_dict_id=False,
    )


def compressed_size(
    data: bytes | str,
    compressor: Compressor = "zlib",
    level: int | None = None,
    window_log: int | None = None,
) -> int:
    """Bytes of `data` once compressed (see the module docstring for each compressor's settings)."""
    raw = _as_bytes(data)
    if compressor == "zlib":
        if window_log is not None:
            raise ValueError("window_log applies to zstd only (zlib's window is fixed at 32 KB)")
        return len(zlib.compress(raw, ZLIB_LEVEL if level is None else level))
    if compressor == "zstd":
        params = zstd_params(ZSTD_LEVEL if level is None else level, ZSTD_WINDOW_LOG if window_log is None else window_log)
        return len(zstandard.ZstdCompressor(compression_params=params).compress(raw))
    raise ValueError(f"unknown compressor {compressor!r}: use 'zlib' or 'zstd'")


def compression_ratio(
    data: bytes | str,
    compressor: Compressor = "zlib",
    level: int | None = None,
    window_log: int | None = None,
) -> float:
    """raw bytes / compressed bytes of one document (str is encoded as UTF-8); 0.0 for empty input."""
    raw = _as_bytes(data)
    return len(raw) / compressed_size(raw, compressor, level, window_log)


def join_texts(texts: Iterable[str | bytes], separator: str = SEPARATOR) -> bytes:
    """The serialization of a set of texts: UTF-8 texts joined with `separator` (a blank line by default)."""
    return _as_bytes(separator).join(_as_bytes(t) for t in texts)


def set_ratio(
    texts: Iterable[str | bytes],
    compressor: Compressor = "zlib",
    level: int | None = None,
    window_log: int | None = None,
    separator: str = SEPARATOR,
) -> float:
    """Compression ratio of a set of texts, serialized with `join_texts` (texts joined by a blank line)."""
    return compression_ratio(join_texts(texts, separator), compressor, level, window_log)


def list_repr(item_reprs: Sequence[bytes]) -> bytes:
    """``str(list_of_records).encode()`` given each record's ``repr(record).encode()``."""
    return b"[" + b", ".join(item_reprs) + b"]"


def records_ratio(records: Sequence[object], level: int = ZLIB_LEVEL) -> float:
    """ZIP's reference measure: ``len(s) / len(zlib.compress(s, 9))`` with ``s = str(records).encode()``."""
    return compression_ratio(str(list(records)).encode("utf-8"), "zlib", level)


class ZlibPrefix:
    """A zlib stream fed with a shared prefix; sizes of ``prefix + suffix`` for many suffixes, each in O(suffix).

    ``size_with(s)`` == ``len(zlib.compress(prefix + s, level))`` exactly (same zlib, same settings).
    """

    def __init__(self, level: int = ZLIB_LEVEL) -> None:
        self.level = level
        self._stream = zlib.compressobj(level)
        self.raw_bytes = 0  # bytes fed so far
        self.emitted_bytes = 0  # compressed bytes the stream has already produced

    def feed(self, data: bytes) -> None:
        out = self._stream.compress(data)
        self.raw_bytes += len(data)
        self.emitted_bytes += len(out)  # only the size is kept: a prefix of 10^5 documents stays small in memory

    def output_with(self, suffix: bytes) -> bytes:
        """What the stream would emit after its prefix's output for prefix + suffix (the prefix's own output is
        not kept: only its size, ``emitted_bytes``)."""
        branch = self._stream.copy()
        return branch.compress(suffix) + branch.flush()

    def size_with(self, suffix: bytes) -> tuple[int, int]:
        """(raw bytes, compressed bytes) of prefix + suffix, leaving this stream untouched."""
        branch = self._stream.copy()
        return (
            self.raw_bytes + len(suffix),
            self.emitted_bytes + len(branch.compress(suffix)) + len(branch.flush()),
        )


class ReprListPrefix(ZlibPrefix):
    """Prefix stream of the list repr ``[r1, r2, ..., rn`` (no closing bracket), grown one item at a time."""

    def __init__(self, level: int = ZLIB_LEVEL) -> None:
        super().__init__(level)
        self.n_items = 0
        self.feed(b"[")

    def append(self, item_repr: bytes) -> None:
        self.feed(b", " + item_repr if self.n_items else item_repr)
        self.n_items += 1

    def suffix(self, item_repr: bytes) -> bytes:
        """What closes the list after adding one more item: ``, r]`` (or ``r]`` for an empty list)."""
        return (b", " + item_repr if self.n_items else item_repr) + b"]"

    def size_with_item(self, item_repr: bytes) -> tuple[int, int]:
        """(raw, compressed) bytes of ``str(items + [item])``."""
        return self.size_with(self.suffix(item_repr))

    def ratio_with_item(self, item_repr: bytes) -> float:
        raw, comp = self.size_with_item(item_repr)
        return raw / comp

    def size_closed(self) -> tuple[int, int]:
        """(raw, compressed) bytes of ``str(items)`` itself."""
        return self.size_with(b"]")


class ZstdContext:
    """Marginal zstd cost of texts given a context (e.g. the selected set) used as a raw-content dictionary.

    ``marginal(x)`` = bytes of the zstd frame of ``x`` compressed with the whole context referenceable (window
    2**window_log must cover the context). With an empty context it is the plain compressed size of ``x``.
    Each thread gets its own compressor (which digests the dictionary on first use): ``marginal`` is thread-safe.
    """

    def __init__(self, context: bytes, level: int = 9, window_log: int = ZSTD_WINDOW_LOG) -> None:
        if len(context) >= (1 << window_log):
            raise ValueError(
                f"context of {len(context)} bytes does not fit the zstd window 2**{window_log}; raise window_log"
            )
        self._params = zstd_params(level, window_log, ldm=False)  # ldm does not apply to dictionary content
        self._dict = None
        if context:
            # No precompute_compress(): a referenced CDict was measured 2.5x slower per call than letting each
            # compressor load the dictionary once (zstd 1.5.7, level 9, 2 MB context).
            self._dict = zstandard.ZstdCompressionDict(context, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        self._local = threading.local()
        self.context_bytes = len(context)

    def _cctx(self) -> zstandard.ZstdCompressor:
        cctx = getattr(self._local, "cctx", None)
        if cctx is None:
            if self._dict is None:
                cctx = zstandard.ZstdCompressor(compression_params=self._params)
            else:
                cctx = zstandard.ZstdCompressor(dict_data=self._dict, compression_params=self._params)
            self._local.cctx = cctx
        return cctx

    def marginal(self, data: bytes) -> int:
        return len(self._cctx().compress(data))
