"""Property tests of the JSONL reader: nothing is dropped silently, valid records round-trip, nothing escapes."""

from __future__ import annotations

import gzip
import json
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selectflow.config import IngestConfig
from selectflow.ingest import plan_inputs, read_input
from selectflow.schema import DOCS, QUARANTINE
from selectflow.text import doc_id

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

valid_text = st.text(min_size=1, max_size=60).filter(lambda t: t.strip() and "\x00" not in t)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10))
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=12,
)


def _dump(obj, ascii_: bool) -> bytes:
    return json.dumps(obj, ensure_ascii=ascii_).encode()


@st.composite
def valid_line(draw):
    record = {"text": draw(valid_text)}
    if draw(st.booleans()):
        record["domain"] = draw(st.one_of(st.text(max_size=8), st.integers()))
    if draw(st.booleans()):
        record["meta"] = draw(json_value)
    if draw(st.booleans()):  # key order must survive
        record = dict(reversed(list(record.items())))
    return ("valid", record), _dump(record, draw(st.booleans()))


@st.composite
def malformed_line(draw, limit: int):
    kind = draw(
        st.sampled_from(["bytes", "bad_utf8", "wrong_type", "missing", "garbage", "huge", "truncated", "blank"])
    )
    if kind == "bytes":
        line = draw(st.binary(max_size=80))
    elif kind == "bad_utf8":
        good = _dump({"text": draw(valid_text)}, False)
        at = draw(st.integers(0, len(good)))
        line = good[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"])) + good[at:]
    elif kind == "wrong_type":
        value = draw(st.one_of(st.integers(), st.floats(), st.booleans(), st.none(), st.lists(st.integers())))
        line = _dump({"text": value}, True)
    elif kind == "missing":
        line = _dump({"body": draw(valid_text)}, False)
    elif kind == "garbage":
        line = _dump(draw(json_value), draw(st.booleans()))
    elif kind == "huge":
        line = _dump({"text": "x" * (limit + draw(st.integers(0, 3 * limit)))}, True)
    elif kind == "truncated":
        good = _dump({"text": draw(valid_text)}, False)
        line = good[: draw(st.integers(1, max(1, len(good) - 1)))]
    else:
        line = draw(st.sampled_from([b"", b" ", b"\t", b"  \r", b"\r"]))
    return (kind, None), line.replace(b"\n", b" ")


@st.composite
def jsonl_file(draw):
    limit = draw(st.sampled_from([120, 400, 2_000_000]))
    entries = draw(st.lists(st.one_of(valid_line(), malformed_line(limit)), min_size=0, max_size=40))
    compression = draw(st.sampled_from(["", ".gz", ".zst"]))
    trailing_newline = draw(st.booleans())
    shard_rows = draw(st.integers(1, 12))
    return entries, limit, compression, trailing_newline, shard_rows


def _compress(data: bytes, compression: str) -> bytes:
    if compression == ".gz":
        return gzip.compress(data)
    if compression == ".zst":
        return zstandard.ZstdCompressor().compress(data)
    return data


def _read_all(path: Path, cfg: IngestConfig):
    (unit,) = plan_inputs(cfg)
    docs, quarantine = [], []
    for doc_batch, q_batch in read_input(unit, cfg):
        assert doc_batch.schema.equals(DOCS) and q_batch.schema.equals(QUARANTINE)
        assert doc_batch.num_rows <= cfg.shard_rows and q_batch.num_rows <= cfg.shard_rows
        assert doc_batch.num_rows or q_batch.num_rows
        docs += doc_batch.to_pylist()
        quarantine += q_batch.to_pylist()
    return unit, docs, quarantine


@SETTINGS
@given(jsonl_file())
def test_every_nonblank_line_lands_exactly_once(spec):
    entries, limit, compression, trailing_newline, shard_rows = spec
    lines = [line for _, line in entries]
    data = b"\n".join(lines) + (b"\n" if trailing_newline and lines else b"")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz.jsonl{compression}"
        path.write_bytes(_compress(data, compression))
        cfg = IngestConfig(inputs=[{"path": str(path), "domain": "dflt"}], shard_rows=shard_rows,
                           max_record_bytes=limit)
        unit, docs, quarantine = _read_all(path, cfg)

        expected = {number for number, line in enumerate(lines, 1) if line.strip()}
        seen = Counter([d["line"] for d in docs] + [q["line"] for q in quarantine])
        assert set(seen) == expected
        assert all(count == 1 for count in seen.values()), "a line landed twice"

        by_line = {d["line"]: d for d in docs}
        for number, ((kind, record), line) in enumerate(entries, 1):
            if kind == "valid" and len(line) <= limit:
                doc = by_line[number]  # valid records are never quarantined
                assert doc["text"] == record["text"]
                assert doc["record"] == json.dumps(record, ensure_ascii=False)
                domain = record.get("domain")
                assert doc["domain"] == (domain if isinstance(domain, str) and domain.strip() else "dflt")
            elif kind in ("bad_utf8", "wrong_type", "missing", "huge") or (kind == "valid" and len(line) > limit):
                assert number not in by_line, f"{kind} line {number} became a document"

        for doc in docs:
            assert doc["source"] == unit.uri and doc["doc_id"] == doc_id(unit.uri, doc["line"])
            assert doc["n_bytes"] == len(doc["text"].encode("utf-8"))
        for row in quarantine:
            assert row["source"] == unit.uri and row["reason"] and len(row["raw"]) <= 500

        # the batches must be writable as Parquet (no lone surrogates, schema respected)
        pq.write_table(pa.Table.from_pylist(docs, schema=DOCS), Path(tmp) / "docs.parquet")
        pq.write_table(pa.Table.from_pylist(quarantine, schema=QUARANTINE), Path(tmp) / "q.parquet")


@SETTINGS
@given(
    st.lists(valid_text, min_size=1, max_size=200),
    st.sampled_from([".gz", ".zst"]),
    st.floats(0.0, 1.0),
)
def test_truncated_stream_keeps_a_prefix_and_reports_the_break(texts, compression, fraction):
    data = b"".join(_dump({"text": t}, False) + b"\n" for t in texts)
    full = _compress(data, compression)
    cut = int(len(full) * fraction)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"cut.jsonl{compression}"
        path.write_bytes(full[:cut])
        cfg = IngestConfig(inputs=[{"path": str(path)}], shard_rows=50)
        _, docs, quarantine = _read_all(path, cfg)
    assert [d["text"] for d in docs] == texts[: len(docs)]
    assert [d["line"] for d in docs] == list(range(1, len(docs) + 1))
    if cut in (0, len(full)):
        assert quarantine == [] and len(docs) == (0 if cut == 0 else len(texts))
    else:
        assert len(quarantine) == 1, "a broken stream is reported exactly once"
        assert quarantine[0]["line"] == len(docs) + 1 and quarantine[0]["reason"].startswith("read error")
