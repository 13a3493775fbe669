"""Format readers: stream one InputFile into (docs, quarantine) Arrow batches.

Per format:

* jsonl (optionally .gz/.zst/.bz2/.xz, decompressed as a stream): one record per ``\\n``-terminated line,
  ``line`` = 1-based line number. Whitespace-only lines (ASCII whitespace, e.g. the newline at the end of a file)
  are not records and are skipped; every other line becomes a document or a quarantine row. A UTF-8 BOM at the
  start of the file is ignored. Lines longer than max_record_bytes are never held whole in memory.
* parquet: row groups streamed in batches, ``line`` = 1-based row number; ``max_record_bytes`` applies to the
  row as JSON.
* text: the whole (decompressed) file is one document, ``line`` = 1, ``record`` null; not UTF-8, too large,
  empty or containing NUL -> quarantined as a whole at line 1. ``textdir``: the same for each member.

A stream that breaks (truncated/corrupt compression, unreadable Parquet) keeps the records read so far and adds
one quarantine row at the line where reading broke, reason ``read error: ...``. I/O errors that may be transient
(network, permissions) raise IngestError instead, so that the task is retried rather than caching a partial result.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import zlib
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from selectflow.config import IngestConfig
from selectflow.ingest.records import (
    RecordConverter,
    RecordError,
    check_text,
    dump_record,
    raw_excerpt,
    too_large_reason,
    type_name,
    utf8_error_reason,
)
from selectflow.ingest.sources import IngestError, InputFile, compression_of, url_to_fs
from selectflow.schema import DOCS, QUARANTINE
from selectflow.text import content_hash, doc_id

CHUNK = 1 << 20  # decompressed bytes per read
ZSTD_INPUT_CHUNK = 1 << 16  # compressed bytes fed to zstd per step (bounds the output of one step)
PARQUET_BATCH = 8_192


class CorruptInput(Exception):
    """The byte stream of an input is broken (e.g. a truncated zstd frame)."""


# Errors that mean "the data is broken" (quarantine and stop), as opposed to I/O errors (raise, retry).
DATA_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError, lzma.LZMAError, CorruptInput)


# ---------------------------------------------------------------------------------------------- batches


class _Batches:
    """Column lists of the current docs and quarantine batches."""

    def __init__(self, shard_rows: int):
        self.shard_rows = shard_rows
        self._reset_docs()
        self._reset_quarantine()

    def _reset_docs(self):
        self.d_id, self.d_source, self.d_line, self.d_domain = [], [], [], []
        self.d_text, self.d_hash, self.d_bytes, self.d_record = [], [], [], []

    def _reset_quarantine(self):
        self.q_source, self.q_line, self.q_reason, self.q_raw = [], [], [], []

    def doc(self, source: str, line: int, domain, text: str, n_bytes: int, record) -> None:
        self.d_id.append(doc_id(source, line))
        self.d_source.append(source)
        self.d_line.append(line)
        self.d_domain.append(domain)
        self.d_text.append(text)
        self.d_hash.append(content_hash(text))
        self.d_bytes.append(n_bytes)
        self.d_record.append(record)

    def quarantine(self, source: str, line: int, reason: str, raw) -> None:
        self.q_source.append(source)
        self.q_line.append(line)
        self.q_reason.append(reason)
        self.q_raw.append(None if raw is None else raw_excerpt(raw))

    @property
    def full(self) -> bool:
        return len(self.d_id) >= self.shard_rows or len(self.q_line) >= self.shard_rows

    @property
    def empty(self) -> bool:
        return not self.d_id and not self.q_line

    def flush(self) -> tuple[pa.Table, pa.Table]:
        docs = pa.Table.from_arrays(
            [
                pa.array(self.d_id, pa.string()),
                pa.array(self.d_source, pa.string()),
                pa.array(self.d_line, pa.int64()),
                pa.array(self.d_domain, pa.string()),
                pa.array(self.d_text, pa.string()),
                pa.array(self.d_hash, pa.string()),
                pa.array(self.d_bytes, pa.int64()),
                pa.array(self.d_record, pa.string()),
            ],
            schema=DOCS,
        )
        quarantine = pa.Table.from_arrays(
            [
                pa.array(self.q_source, pa.string()),
                pa.array(self.q_line, pa.int64()),
                pa.array(self.q_reason, pa.string()),
                pa.array(self.q_raw, pa.string()),
            ],
            schema=QUARANTINE,
        )
        self._reset_docs()
        self._reset_quarantine()
        return docs, quarantine


# ---------------------------------------------------------------------------------------------- byte streams


def _open(fs, path: str, uri: str):
    try:
        return fs.open(path, "rb")
    except Exception as exc:
        raise IngestError(f"{uri}: cannot open: {exc}; was it moved or deleted after planning?") from exc


def _plain_chunks(handle) -> Iterator[bytes]:
    # read1: a decompressor's read(n) loops until n bytes and loses what it had when the stream breaks
    read = getattr(handle, "read1", handle.read)
    while chunk := read(CHUNK):
        yield chunk


def _zstd_chunks(handle) -> Iterator[bytes]:
    """Decompress a (multi-frame) zstd stream; a stream that ends inside a frame raises CorruptInput.

    (zstandard's stream_reader silently stops at a truncated frame, so frames are decoded one by one.)
    """
    dctx = zstandard.ZstdDecompressor()
    obj = dctx.decompressobj()
    in_frame = False
    while data := handle.read(ZSTD_INPUT_CHUNK):
        while data:
            out = obj.decompress(data)
            in_frame = True
            if out:
                yield out
            if obj.eof:
                data = obj.unused_data
                obj = dctx.decompressobj()
                in_frame = False
            else:
                data = b""
    if in_frame:
        raise CorruptInput("zstd stream ends inside a frame (file truncated?)")


def _decompressed_chunks(handle, compression: str | None) -> Iterator[bytes]:
    if compression is None:
        return _plain_chunks(handle)
    if compression == "zstd":
        return _zstd_chunks(handle)
    if compression == "gzip":
        return _plain_chunks(gzip.GzipFile(fileobj=handle))
    if compression == "bz2":
        return _bz2_chunks(handle)
    return _plain_chunks(lzma.LZMAFile(handle))


def _bz2_chunks(handle) -> Iterator[bytes]:
    try:
        yield from _plain_chunks(bz2.BZ2File(handle))
    except OSError as exc:
        if "Invalid data stream" in str(exc):
            raise CorruptInput(f"bz2: {exc}") from exc
        raise


def _lines(chunks: Iterable[bytes], limit: int, keep: int) -> Iterator[tuple[bytes, int, BaseException | None]]:
    """Split a byte stream on b"\\n": yield (line, size, None).

    A line longer than `limit` is yielded as (its first `keep` bytes, its full size, None) without being held
    whole. When the stream breaks, the last item is (the partial line, its size, the error).
    """
    pending = b""
    skipping = False  # inside an oversized line: `pending` holds its head, `size` its length so far
    size = 0
    try:
        for chunk in chunks:
            if skipping:
                cut = chunk.find(b"\n")
                if cut < 0:
                    size += len(chunk)
                    continue
                size += cut
                yield pending, size, None
                skipping, pending = False, b""
                chunk = chunk[cut + 1 :]
            data = pending + chunk if pending else chunk
            lines = data.split(b"\n")
            pending = lines.pop()
            for line in lines:
                yield line, len(line), None
            if len(pending) > limit:
                skipping, size, pending = True, len(pending), pending[:keep]
    except DATA_ERRORS as exc:
        yield pending, (size if skipping else len(pending)), exc
        return
    if skipping:
        yield pending, size, None
    elif pending:
        yield pending, len(pending), None


def _read_error(exc: BaseException) -> str:
    message = str(exc) or type(exc).__name__
    return f"read error: {message}"


# ---------------------------------------------------------------------------------------------- readers


def read_input(file: InputFile, cfg: IngestConfig) -> Iterator[tuple[pa.Table, pa.Table]]:
    """Stream one unit and yield (docs, quarantine) batches in the DOCS / QUARANTINE schemas.

    Each batch holds at most cfg.shard_rows docs (and at most shard_rows quarantine rows); either table may be
    empty, and a unit with no records yields nothing. Every non-blank record ends up in exactly one of the two.
    The output depends only on the unit's bytes, its InputSpec and the config, never on timing.
    """
    spec = cfg.inputs[file.spec_index]
    batches = _Batches(cfg.shard_rows)
    if file.format == "jsonl":
        rows = _read_jsonl(file.uri, RecordConverter(spec, cfg), cfg, batches)
    elif file.format == "parquet":
        rows = _read_parquet(file.uri, RecordConverter(spec, cfg), cfg, batches)
    elif file.format == "text":
        rows = _read_texts((file.uri,), spec.domain, cfg, batches)
    elif file.format == "textdir":
        rows = _read_texts(file.members, spec.domain, cfg, batches)
    else:
        raise IngestError(f"{file.uri}: unknown format {file.format!r}")
    for _ in rows:
        if batches.full:
            yield batches.flush()
    if not batches.empty:
        yield batches.flush()


def _read_jsonl(uri: str, converter: RecordConverter, cfg: IngestConfig, out: _Batches) -> Iterator[None]:
    fs, path = url_to_fs(uri)
    limit = cfg.max_record_bytes
    loads = json.loads
    convert = converter.convert
    with _open(fs, path, uri) as handle:
        try:
            lines = _lines(_decompressed_chunks(handle, compression_of(path)), limit, 4 * 500)
            number = 0
            for raw, size, error in lines:
                number += 1
                if error is not None:
                    out.quarantine(uri, number, _read_error(error), raw)
                    yield
                    return
                if size > limit:
                    out.quarantine(uri, number, too_large_reason(size, limit), raw)
                    yield
                    continue
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    out.quarantine(uri, number, utf8_error_reason(exc), raw)
                    yield
                    continue
                if number == 1 and text.startswith("\ufeff"):
                    text = text[1:]
                try:
                    obj = loads(text)
                except json.JSONDecodeError as exc:
                    where = "col" if exc.msg.endswith(" at") else "at col"
                    out.quarantine(uri, number, f"malformed JSON: {exc.msg} {where} {exc.colno}", raw)
                    yield
                    continue
                except RecursionError:
                    out.quarantine(uri, number, "malformed JSON: nested too deeply", raw)
                    yield
                    continue
                except ValueError as exc:  # e.g. an integer with too many digits
                    out.quarantine(uri, number, f"malformed JSON: {exc}", raw)
                    yield
                    continue
                if type(obj) is not dict:
                    out.quarantine(uri, number, f"record is a JSON {type_name(obj)}, expected an object", raw)
                    yield
                    continue
                try:
                    doc_text, domain, n_bytes = convert(obj)
                    record = dump_record(obj)
                    if "\\u" in text:  # \ud800-style escapes may leave lone surrogates in other fields
                        _check_encodable(record)
                except RecordError as exc:
                    out.quarantine(uri, number, str(exc), raw)
                    yield
                    continue
                except RecursionError:
                    out.quarantine(uri, number, "record nested too deeply", raw)
                    yield
                    continue
                out.doc(uri, number, domain, doc_text, n_bytes, record)
                yield
        except OSError as exc:
            raise IngestError(f"{uri}: I/O error while reading: {exc}") from exc


def _check_encodable(record: str) -> None:
    try:
        record.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RecordError(
            f"record contains a lone surrogate U+{ord(record[exc.start]):04X} (not encodable as UTF-8)"
        ) from None


def _read_parquet(uri: str, converter: RecordConverter, cfg: IngestConfig, out: _Batches) -> Iterator[None]:
    fs, path = url_to_fs(uri)
    limit = cfg.max_record_bytes
    convert = converter.convert
    with _open(fs, path, uri) as handle:
        number = 0
        try:
            batches = pq.ParquetFile(handle).iter_batches(batch_size=PARQUET_BATCH)
            for batch in batches:
                for obj in batch.to_pylist():
                    number += 1
                    try:
                        record = dump_record(obj)
                    except (ValueError, TypeError, RecursionError) as exc:
                        out.quarantine(uri, number, f"row cannot be written as JSON: {exc}", None)
                        yield
                        continue
                    size = len(record.encode("utf-8", "surrogatepass"))
                    if size > limit:
                        out.quarantine(uri, number, too_large_reason(size, limit), record)
                        yield
                        continue
                    try:
                        text, domain, n_bytes = convert(obj)
                    except RecordError as exc:
                        out.quarantine(uri, number, str(exc), record)
                        yield
                        continue
                    out.doc(uri, number, domain, text, n_bytes, record)
                    yield
        except pa.ArrowException as exc:  # not Parquet, truncated, corrupt pages
            out.quarantine(uri, number + 1, f"read error: not readable as Parquet: {exc}", None)
            yield
        except OSError as exc:
            raise IngestError(f"{uri}: I/O error while reading: {exc}") from exc


def _read_texts(uris: Iterable[str], domain, cfg: IngestConfig, out: _Batches) -> Iterator[None]:
    limit = cfg.max_record_bytes
    for uri in uris:
        fs, path = url_to_fs(uri)
        with _open(fs, path, uri) as handle:
            head = bytearray()
            size = 0
            error = None
            try:
                for chunk in _decompressed_chunks(handle, compression_of(path)):
                    size += len(chunk)
                    if size <= limit:
                        head += chunk
                    elif len(head) > 2000:
                        del head[2000:]
            except DATA_ERRORS as exc:
                error = exc
            except OSError as exc:
                raise IngestError(f"{uri}: I/O error while reading: {exc}") from exc
        data = bytes(head)
        if error is not None:
            out.quarantine(uri, 1, _read_error(error), data)
        elif size > limit:
            out.quarantine(uri, 1, too_large_reason(size, limit), data)
        else:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                out.quarantine(uri, 1, f"{utf8_error_reason(exc)} (the file is not UTF-8 text)", data)
                yield
                continue
            if text.startswith("\ufeff"):
                text = text[1:]
            try:
                n_bytes = check_text(text, len(text.strip()), cfg.min_text_chars)
            except RecordError as exc:
                out.quarantine(uri, 1, str(exc), data)
                yield
                continue
            out.doc(uri, 1, domain, text, n_bytes, None)
        yield
