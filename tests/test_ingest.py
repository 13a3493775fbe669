"""Ingest library: formats, compression, path expansion, field mapping, quarantine, batching, determinism."""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import json
import logging
import os
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

import selectflow.ingest.sources as sources
from selectflow.config import IngestConfig
from selectflow.ingest import (
    IngestError,
    InputFile,
    canonical_uri,
    format_of,
    plan_inputs,
    read_input,
    reason_kind,
)
from selectflow.schema import DOCS, QUARANTINE
from selectflow.stages.ingest import ingest_file
from selectflow.store import ArtifactStore
from selectflow.summary import quarantine_reasons
from selectflow.text import content_hash, doc_id

# ---------------------------------------------------------------------------------------------- helpers


def config(*inputs, **kwargs) -> IngestConfig:
    return IngestConfig(inputs=[i if isinstance(i, dict) else {"path": str(i)} for i in inputs], **kwargs)


def run(cfg: IngestConfig):
    """Plan and read everything: (units, docs rows, quarantine rows, batches)."""
    units = plan_inputs(cfg)
    docs, quarantine, batches = [], [], []
    for unit in units:
        for doc_batch, q_batch in read_input(unit, cfg):
            assert doc_batch.schema.equals(DOCS)
            assert q_batch.schema.equals(QUARANTINE)
            batches.append((doc_batch.num_rows, q_batch.num_rows))
            docs += doc_batch.to_pylist()
            quarantine += q_batch.to_pylist()
    return units, docs, quarantine, batches


def jsonl_bytes(records) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def uri(path) -> str:
    return "file://" + os.path.abspath(path)


RECORDS = [{"text": f"document number {i} — ünïcode", "domain": "web" if i % 2 else None} for i in range(25)]


# ---------------------------------------------------------------------------------------------- formats


def test_plain_jsonl_documents(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl_bytes(RECORDS))
    units, docs, quarantine, _ = run(config(path))
    assert units == [
        InputFile(uri(path), "jsonl", 0, path.stat().st_size, units[0].fingerprint)
    ] and len(units[0].fingerprint) == 32
    assert quarantine == []
    assert [d["line"] for d in docs] == list(range(1, 26))
    for record, doc in zip(RECORDS, docs):
        assert doc["text"] == record["text"]
        assert doc["source"] == uri(path)
        assert doc["doc_id"] == doc_id(uri(path), doc["line"])
        assert doc["content_hash"] == content_hash(record["text"])
        assert doc["n_bytes"] == len(record["text"].encode())
        assert doc["domain"] == record["domain"]
        assert doc["record"] == json.dumps(record, ensure_ascii=False)


@pytest.mark.parametrize(
    "name, compress",
    [
        ("a.jsonl.gz", gzip.compress),
        ("a.jsonl.zst", lambda b: zstandard.ZstdCompressor().compress(b)),
        ("a.jsonl.bz2", bz2.compress),
        ("a.json", lambda b: b),
        ("a.ndjson.gz", gzip.compress),
    ],
)
def test_compressed_and_json_extensions(tmp_path, name, compress):
    data = jsonl_bytes(RECORDS)
    (tmp_path / name).write_bytes(compress(data))
    units, docs, quarantine, _ = run(config(tmp_path / name))
    assert units[0].format == "jsonl"
    assert quarantine == []
    assert [d["text"] for d in docs] == [r["text"] for r in RECORDS]
    assert docs[0]["doc_id"] == doc_id(uri(tmp_path / name), 1)


def test_zstd_multiple_frames_and_large_stream(tmp_path):
    records = [{"text": f"row {i} " + "x" * (i % 300)} for i in range(20_000)]
    data = jsonl_bytes(records)
    cctx = zstandard.ZstdCompressor()
    half = data.index(b"\n", len(data) // 2) + 1
    (tmp_path / "m.jsonl.zst").write_bytes(cctx.compress(data[:half]) + cctx.compress(data[half:]))
    _, docs, quarantine, _ = run(config(tmp_path / "m.jsonl.zst", shard_rows=5000))
    assert quarantine == []
    assert [d["text"] for d in docs] == [r["text"] for r in records]


def test_parquet_rows_and_row_numbers(tmp_path):
    table = pa.table(
        {
            "text": ["alpha", None, "gamma", "", "epsilon"],
            "domain": ["news", "news", None, "x", "code"],
            "meta": [{"k": 1}, {"k": 2}, {"k": 3}, {"k": 4}, {"k": 5}],
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=2)
    units, docs, quarantine, _ = run(config({"path": str(path), "domain": "fallback"}))
    assert units[0].format == "parquet"
    assert [(d["line"], d["text"], d["domain"]) for d in docs] == [
        (1, "alpha", "news"),
        (3, "gamma", "fallback"),
        (5, "epsilon", "code"),
    ]
    assert json.loads(docs[0]["record"]) == {"text": "alpha", "domain": "news", "meta": {"k": 1}}
    assert list(json.loads(docs[0]["record"])) == ["text", "domain", "meta"]
    assert [(q["line"], q["reason"]) for q in quarantine] == [
        (2, "field 'text' is null, expected string"),
        (4, "empty text"),
    ]
    assert quarantine[0]["source"] == uri(path)


def test_parquet_corrupt_file_is_quarantined_not_raised(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"this is not parquet at all")
    _, docs, quarantine, _ = run(config(path))
    assert docs == []
    assert len(quarantine) == 1 and quarantine[0]["line"] == 1
    assert quarantine[0]["reason"].startswith("read error: not readable as Parquet")


def test_single_text_file_is_one_document(tmp_path):
    path = tmp_path / "note.md"
    path.write_text("\ufeffHello\nworld\n", encoding="utf-8")
    units, docs, quarantine, _ = run(config({"path": str(path), "domain": "notes"}))
    assert [u.format for u in units] == ["text"]
    assert quarantine == []
    assert docs == [
        {
            "doc_id": doc_id(uri(path), 1),
            "source": uri(path),
            "line": 1,
            "domain": "notes",
            "text": "Hello\nworld\n",
            "content_hash": content_hash("Hello\nworld\n"),
            "n_bytes": 12,
            "record": None,
        }
    ]


def test_text_directory_grouped_into_textdir(tmp_path):
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "b.txt").write_text("bee")
    (root / "a.txt").write_text("ay")
    (root / "sub" / "c.txt").write_text("sea")
    (root / "empty.txt").write_text("  \n")
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (root / "skip.md").write_text("not matched by text_glob")
    units, docs, quarantine, _ = run(config({"path": str(root), "domain": "books"}))
    assert len(units) == 1
    unit = units[0]
    assert unit.format == "textdir" and unit.uri == uri(root)
    assert unit.members == tuple(
        uri(root / n) for n in ["a.txt", "b.txt", "empty.txt", "latin1.txt", "sub/c.txt"]
    )
    assert unit.size == 2 + 3 + 3 + 4 + 3
    assert [(d["source"], d["line"], d["text"], d["domain"], d["record"]) for d in docs] == [
        (uri(root / "a.txt"), 1, "ay", "books", None),
        (uri(root / "b.txt"), 1, "bee", "books", None),
        (uri(root / "sub/c.txt"), 1, "sea", "books", None),
    ]
    assert [(q["source"], q["line"], q["reason"]) for q in quarantine] == [
        (uri(root / "empty.txt"), 1, "empty text"),
        (uri(root / "latin1.txt"), 1, "not valid UTF-8 at byte 3 (the file is not UTF-8 text)"),
    ]
    assert quarantine[1]["raw"] == "caf\ufffd"


def test_textdir_fingerprint_tracks_members(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    (root / "a.txt").write_text("one")
    cfg = config(root)
    first = plan_inputs(cfg)[0].fingerprint
    assert plan_inputs(cfg)[0].fingerprint == first
    (root / "b.txt").write_text("two")
    second = plan_inputs(cfg)[0].fingerprint
    (root / "b.txt").rename(root / "c.txt")
    third = plan_inputs(cfg)[0].fingerprint
    (root / "c.txt").write_text("changed")
    fourth = plan_inputs(cfg)[0].fingerprint
    assert len({first, second, third, fourth}) == 4


def test_textdir_split_into_parts(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "TEXT_GROUP_MAX_FILES", 2)
    root = tmp_path / "d"
    root.mkdir()
    for i in range(5):
        (root / f"{i}.txt").write_text(f"text {i}")
    units, docs, quarantine, _ = run(config(root))
    assert [u.uri for u in units] == [f"{uri(root)}#part-{k:05d}" for k in range(3)]
    assert [len(u.members) for u in units] == [2, 2, 1]
    assert [d["text"] for d in docs] == [f"text {i}" for i in range(5)]
    assert len({u.fingerprint for u in units}) == 3


def test_directory_auto_prefers_jsonl_and_parquet(tmp_path):
    root = tmp_path / "mixed"
    (root / "nested").mkdir(parents=True)
    (root / "a.jsonl").write_bytes(jsonl_bytes([{"text": "from jsonl"}]))
    (root / "nested" / "b.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes([{"text": "from gz"}])))
    pq.write_table(pa.table({"text": ["from parquet"]}), root / "c.parquet")
    (root / "README.txt").write_text("ignored: jsonl/parquet files present")
    units, docs, quarantine, _ = run(config(root))
    assert [(u.uri, u.format) for u in units] == [
        (uri(root / "a.jsonl"), "jsonl"),
        (uri(root / "c.parquet"), "parquet"),
        (uri(root / "nested/b.jsonl.gz"), "jsonl"),
    ]
    assert [d["text"] for d in docs] == ["from jsonl", "from parquet", "from gz"]


def test_directory_with_explicit_format(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    (root / "a.jsonl").write_bytes(jsonl_bytes([{"text": "j"}]))
    pq.write_table(pa.table({"text": ["p"]}), root / "b.parquet")
    (root / "c.txt").write_text("t")
    assert [u.format for u in plan_inputs(config({"path": str(root), "format": "parquet"}))] == ["parquet"]
    assert [u.format for u in plan_inputs(config({"path": str(root), "format": "jsonl"}))] == ["jsonl"]
    text_units = plan_inputs(config({"path": str(root), "format": "text", "text_glob": "*"}))
    assert [(u.format, len(u.members)) for u in text_units] == [("textdir", 3)]


def test_local_glob_sorted_and_formats(tmp_path):
    for name in ["b.jsonl", "a.jsonl", "c.jsonl.gz"]:
        data = jsonl_bytes([{"text": name}])
        (tmp_path / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    (tmp_path / "other.txt").write_text("not matched")
    units, docs, _, _ = run(config(tmp_path / "*.jsonl*"))
    assert [u.uri for u in units] == [uri(tmp_path / n) for n in ["a.jsonl", "b.jsonl", "c.jsonl.gz"]]
    assert [d["text"] for d in docs] == ["a.jsonl", "b.jsonl", "c.jsonl.gz"]


def test_glob_of_text_files_is_grouped(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.txt").write_text(f"t{i}")
    units, docs, _, _ = run(config(tmp_path / "*.txt"))
    assert [(u.format, u.uri, len(u.members)) for u in units] == [("textdir", uri(tmp_path / "*.txt"), 3)]
    assert [d["source"] for d in docs] == [uri(tmp_path / f"{i}.txt") for i in range(3)]


def test_glob_characters_in_existing_names_are_literal(tmp_path):
    root = tmp_path / "data[1]"
    root.mkdir()
    (root / "a.txt").write_text("in a bracketed dir")
    (tmp_path / "x[2].jsonl").write_bytes(jsonl_bytes([{"text": "bracketed file"}]))
    units, docs, _, _ = run(config(root, tmp_path / "x[2].jsonl"))
    assert [(u.format, u.uri) for u in units] == [("textdir", uri(root)), ("jsonl", uri(tmp_path / "x[2].jsonl"))]
    assert [d["text"] for d in docs] == ["in a bracketed dir", "bracketed file"]


def test_relative_and_dotted_paths_are_canonical(tmp_path, monkeypatch):
    (tmp_path / "a.jsonl").write_bytes(jsonl_bytes([{"text": "x"}]))
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    for spelling in ["../a.jsonl", str(tmp_path / "sub" / ".." / "a.jsonl"), f"file://{tmp_path}/a.jsonl"]:
        assert plan_inputs(config(spelling))[0].uri == uri(tmp_path / "a.jsonl")


def test_uri_of_path_with_space_and_non_ascii(tmp_path):
    path = tmp_path / "my dir" / "données 1.jsonl"
    path.parent.mkdir()
    path.write_bytes(jsonl_bytes([{"text": "x"}]))
    _, docs, _, _ = run(config(path))
    assert docs[0]["source"] == "file://" + str(path) == canonical_uri(str(path))  # not percent-encoded
    assert canonical_uri(f"{tmp_path}/my dir/../my dir/données 1.jsonl") == docs[0]["source"]
    assert canonical_uri("memory://bucket/x.jsonl") == "memory:///bucket/x.jsonl"


# ---------------------------------------------------------------------------------------------- memory:// fsspec


@pytest.fixture()
def memfs():
    fs = fsspec.filesystem("memory")
    root = f"/test-{uuid.uuid4().hex}"
    yield fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_memory_filesystem_file_glob_and_directory(memfs):
    fs, root = memfs
    fs.pipe(f"{root}/data/a.jsonl", jsonl_bytes([{"text": "mem a"}]))
    fs.pipe(f"{root}/data/b.jsonl.zst", zstandard.ZstdCompressor().compress(jsonl_bytes([{"text": "mem b"}])))
    fs.pipe(f"{root}/texts/x.txt", b"mem text x")
    fs.pipe(f"{root}/texts/deep/y.txt", b"mem text y")

    units, docs, _, _ = run(config(f"memory://{root}/data/a.jsonl"))
    assert units[0].uri == f"memory://{root}/data/a.jsonl"
    assert docs[0]["doc_id"] == doc_id(f"memory://{root}/data/a.jsonl", 1)

    units, docs, _, _ = run(config(f"memory://{root}/data/*.jsonl*"))
    assert [u.uri for u in units] == [f"memory://{root}/data/a.jsonl", f"memory://{root}/data/b.jsonl.zst"]
    assert [d["text"] for d in docs] == ["mem a", "mem b"]

    units, docs, _, _ = run(config(f"memory://{root}/texts"))
    assert [u.format for u in units] == ["textdir"]
    assert [(d["source"], d["text"]) for d in docs] == [
        (f"memory://{root}/texts/deep/y.txt", "mem text y"),
        (f"memory://{root}/texts/x.txt", "mem text x"),
    ]


def test_memory_missing_path_raises(memfs):
    _, root = memfs
    with pytest.raises(IngestError, match=rf"memory://{root}/nope.jsonl.*no such file"):
        plan_inputs(config(f"memory://{root}/nope.jsonl"))


# ---------------------------------------------------------------------------------------------- field mapping


def test_sharegpt_chat_rendering_keeps_record(tmp_path):
    record = {
        "id": "z1",
        "conversations": [
            {"from": "human", "value": "Wie geht's?"},
            {"from": "gpt", "value": "Gut, danke! ✓"},
        ],
        "domain": "chat",
    }
    path = tmp_path / "chat.jsonl"
    path.write_bytes(jsonl_bytes([record]))
    _, docs, quarantine, _ = run(config({"path": str(path), "chat": {"style": "sharegpt"}}))
    assert quarantine == []
    (doc,) = docs
    assert doc["text"] == "human: Wie geht's?\n\ngpt: Gut, danke! ✓"
    assert doc["domain"] == "chat"
    assert doc["record"] == json.dumps(record, ensure_ascii=False)
    assert "✓" in doc["record"] and list(json.loads(doc["record"])) == ["id", "conversations", "domain"]


def test_prompt_response_chat_rendering(tmp_path):
    records = [
        {"q": "2+2?", "a": "4", "extra": [1, 2]},
        {"q": "only a prompt"},
        {"q": "  ", "a": " "},
    ]
    path = tmp_path / "pr.jsonl"
    path.write_bytes(jsonl_bytes(records))
    chat = {"style": "prompt_response", "prompt_field": "q", "response_field": "a"}
    _, docs, quarantine, _ = run(config({"path": str(path), "chat": chat, "domain": "qa"}))
    assert [(d["text"], d["domain"]) for d in docs] == [("q: 2+2?\n\na: 4", "qa")]
    assert json.loads(docs[0]["record"]) == records[0]
    assert [(q["line"], q["reason"]) for q in quarantine] == [(2, "field 'a' missing"), (3, "empty text")]


def test_sharegpt_malformed_turns(tmp_path):
    bad = [
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt"}]},
        {"conversations": [{"value": "hi"}]},
        {"conversations": "not a list"},
        {"conversations": []},
        {"conversations": ["just a string"]},
        {"conversations": [{"from": "human", "value": 7}]},
        {"conversations": [{"from": None, "value": "x"}]},
        {"text": "no conversations"},
        {"conversations": [{"from": "human", "value": "  "}, {"from": "gpt", "value": ""}]},
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(jsonl_bytes(bad))
    _, docs, quarantine, _ = run(config({"path": str(path), "chat": {}}))
    assert docs == []
    assert [q["reason"] for q in quarantine] == [
        "conversations[1] has no 'value'",
        "conversations[0] has no 'from'",
        "field 'conversations' is string, expected array",
        "field 'conversations' is an empty array",
        "conversations[0] is string, expected object",
        "conversations[0].value is int, expected string",
        "conversations[0].from is null, expected string",
        "field 'conversations' missing",
        "empty text",
    ]
    assert [q["line"] for q in quarantine] == list(range(1, 10))


def test_domain_mapping(tmp_path):
    records = [
        {"text": "a", "src": "wiki"},
        {"text": "b", "src": 5},
        {"text": "c"},
        {"text": "d", "src": ""},
    ]
    path = tmp_path / "d.jsonl"
    path.write_bytes(jsonl_bytes(records))
    _, docs, _, _ = run(config({"path": str(path), "domain_field": "src", "domain": "default"}))
    assert [d["domain"] for d in docs] == ["wiki", "default", "default", "default"]
    _, docs, _, _ = run(config({"path": str(path), "domain_field": "src"}))
    assert [d["domain"] for d in docs] == ["wiki", None, None, None]
    _, docs, _, _ = run(config({"path": str(path), "domain_field": None, "domain": "fixed"}))
    assert [d["domain"] for d in docs] == ["fixed"] * 4


def test_dotted_text_field(tmp_path):
    records = [
        {"data": {"body": "nested body"}},
        {"data.body": "literal key wins"},
        {"data": ["not", "an", "object"]},
        {"data": {}},
    ]
    path = tmp_path / "n.jsonl"
    path.write_bytes(jsonl_bytes(records))
    _, docs, quarantine, _ = run(config({"path": str(path), "text_field": "data.body"}))
    assert [d["text"] for d in docs] == ["nested body", "literal key wins"]
    assert [q["reason"] for q in quarantine] == [
        "field 'data.body' missing ('data' is array, expected object)",
        "field 'data.body' missing",
    ]


# ---------------------------------------------------------------------------------------------- quarantine


def test_malformed_lines_quarantined_with_line_and_reason(tmp_path):
    lines = [
        b'{"text": "good one"}',  # 1
        b'{"text": "a" "b"}',  # 2
        b'{"body": "x"}',  # 3
        b'{"text": 42}',  # 4
        b'{"text": "   "}',  # 5
        b'{"text": "caf\xe9"}',  # 6
        b'["text", "list"]',  # 7
        b"",  # 8 blank: ignored
        b"   \t",  # 9 blank: ignored
        b'{"text": "nul\\u0000byte"}',  # 10
        b'{"text": "lone \\ud800 surrogate"}',  # 11
        b'{"text": "ok", "other": "\\udfff"}',  # 12
        b'{"text": "emoji \\ud83d\\ude00 pair"}',  # 13
        b"[" * 100_000 + b"]" * 100_000,  # 14
        b'{"text": "good two"}',  # 15
        b'"just a string"',  # 16
        b'{"text": "trailing',  # 17 truncated line at EOF
    ]
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"\n".join(lines))
    _, docs, quarantine, _ = run(config(path))
    assert [(d["line"], d["text"]) for d in docs] == [(1, "good one"), (13, "emoji 😀 pair"), (15, "good two")]
    reasons = {q["line"]: q["reason"] for q in quarantine}
    assert reasons == {
        2: "malformed JSON: Expecting ',' delimiter at col 14",
        3: "field 'text' missing",
        4: "field 'text' is int, expected string",
        5: "empty text",
        6: "not valid UTF-8 at byte 13",
        7: "record is a JSON array, expected an object",
        10: "text contains NUL at char 3",
        11: "text contains a lone surrogate U+D800 at char 5 (not encodable as UTF-8)",
        12: "record contains a lone surrogate U+DFFF (not encodable as UTF-8)",
        14: "malformed JSON: nested too deeply",
        16: "record is a JSON string, expected an object",
        17: "malformed JSON: Unterminated string starting at col 10",
    }
    assert all(q["source"] == uri(path) for q in quarantine)
    assert {q["line"]: q["raw"] for q in quarantine}[6] == '{"text": "caf\ufffd"}'
    assert len(quarantine[-1]["raw"]) <= 500
    pq.write_table(pa.Table.from_pylist(quarantine, schema=QUARANTINE), tmp_path / "q.parquet")  # writable


def test_min_text_chars(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(jsonl_bytes([{"text": " abc "}, {"text": "abcdef"}]))
    _, docs, quarantine, _ = run(config(path, min_text_chars=5))
    assert [d["line"] for d in docs] == [2]
    assert quarantine[0]["reason"] == "text too short: 3 chars < min_text_chars 5"


def test_utf8_bom_on_first_line_is_ignored(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + jsonl_bytes([{"text": "first"}, {"text": "second"}]))
    _, docs, quarantine, _ = run(config(path))
    assert quarantine == [] and [d["text"] for d in docs] == ["first", "second"]


def test_oversized_record_is_quarantined_and_streaming_continues(tmp_path):
    huge = json.dumps({"text": "x" * 3_100_000})
    lines = [json.dumps({"text": "before"}), huge, json.dumps({"text": "after"}), huge[:-2]]
    path = tmp_path / "big.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(("\n".join(lines) + "\n").encode()))
    _, docs, quarantine, _ = run(config(path, max_record_bytes=2_000_000))
    assert [(d["line"], d["text"]) for d in docs] == [(1, "before"), (3, "after")]
    assert [(q["line"], q["reason"]) for q in quarantine] == [
        (2, f"record is 3.1 MB ({len(huge)} bytes) > max_record_bytes 2 MB (2000000 bytes)"),
        (4, f"record is 3.1 MB ({len(huge) - 2} bytes) > max_record_bytes 2 MB (2000000 bytes)"),
    ]
    assert quarantine[0]["raw"] == huge[:500]


def test_default_max_record_bytes_keeps_long_real_documents(tmp_path):
    # Debian's copyright file of the Boost packages is 2.05 MB (4 packages ship it); an API reference in one HTML
    # file 8.4 MB; a license bundle 15.3 MB. The old 2 MB default quarantined the first.
    assert IngestConfig.model_fields["max_record_bytes"].default == 32 * 2**20
    copyright_text = "Copyright (c) Boost contributors. Distributed under the Boost Software License.\n" * 26_000
    (tmp_path / "texts").mkdir()
    for package in ("filesystem", "iostreams", "program-options", "regex"):
        (tmp_path / "texts" / f"{package}.txt").write_text(copyright_text)
    reference = {"text": "<p>API reference</p>\n" * 400_000}
    (tmp_path / "reference.jsonl").write_bytes(jsonl_bytes([reference]))
    assert len(copyright_text) > 2_000_000 and (tmp_path / "reference.jsonl").stat().st_size > 8_000_000
    _, docs, quarantine, _ = run(config(tmp_path / "texts", tmp_path / "reference.jsonl"))
    assert quarantine == []
    assert [len(d["text"]) for d in docs] == [len(copyright_text)] * 4 + [len(reference["text"])]


def test_small_max_record_bytes_boundary(tmp_path):
    line_ok = json.dumps({"text": "abcd"})  # 16 bytes
    path = tmp_path / "b.jsonl"
    path.write_bytes((line_ok + "\n" + json.dumps({"text": "abcde"}) + "\n").encode())
    _, docs, quarantine, _ = run(config(path, max_record_bytes=len(line_ok)))
    assert [d["line"] for d in docs] == [1]
    assert quarantine[0]["line"] == 2 and quarantine[0]["reason"].startswith("record is 17 B (17 bytes) >")


def test_text_file_too_large_and_nul(tmp_path):
    (tmp_path / "big.txt").write_text("y" * 5000)
    (tmp_path / "nul.txt").write_text("a\x00b")
    _, docs, quarantine, _ = run(config(tmp_path, max_record_bytes=4000))
    assert docs == []
    assert [(q["source"].rsplit("/", 1)[1], q["line"], q["reason"]) for q in quarantine] == [
        ("big.txt", 1, "record is 5 kB (5000 bytes) > max_record_bytes 4 kB (4000 bytes)"),
        ("nul.txt", 1, "text contains NUL at char 1"),
    ]


@pytest.mark.parametrize(
    "suffix, compress",
    [(".gz", gzip.compress), (".zst", lambda b: zstandard.ZstdCompressor().compress(b))],
)
def test_truncated_compressed_file_keeps_records_read_so_far(tmp_path, suffix, compress):
    records = [{"text": f"record {i} " + "z" * 50} for i in range(5_000)]
    full = compress(jsonl_bytes(records))
    path = tmp_path / f"cut.jsonl{suffix}"
    path.write_bytes(full[: len(full) * 2 // 3])
    _, docs, quarantine, _ = run(config(path))
    assert len(docs) > 100, "records before the break are kept"
    assert [d["line"] for d in docs] == list(range(1, len(docs) + 1))
    assert [d["text"] for d in docs] == [r["text"] for r in records[: len(docs)]]
    assert len(quarantine) == 1
    (row,) = quarantine
    assert row["line"] == len(docs) + 1 and row["source"] == uri(path)
    assert row["reason"].startswith("read error: ")


def test_corrupt_gzip_header_is_quarantined(tmp_path):
    path = tmp_path / "fake.jsonl.gz"
    path.write_bytes(b'{"text": "not actually gzip"}\n')
    _, docs, quarantine, _ = run(config(path))
    assert docs == [] and [q["line"] for q in quarantine] == [1]
    assert "read error" in quarantine[0]["reason"] and "gzip" in quarantine[0]["reason"].lower()


def test_truncated_compressed_text_file(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    (root / "a.txt.gz").write_bytes(gzip.compress(os.urandom(3000).hex().encode())[:2000])
    (root / "b.txt").write_text("fine")
    _, docs, quarantine, _ = run(config({"path": str(root), "text_glob": "*"}))
    assert [d["text"] for d in docs] == ["fine"]
    assert quarantine[0]["source"].endswith("a.txt.gz") and quarantine[0]["reason"].startswith("read error")


def write_bad_inputs(root) -> IngestConfig:
    """Inputs that produce every kind of quarantine reason the readers write (see `test_reason_kinds`)."""
    root.mkdir()
    lines = [
        b'{"text": "a" "b"}',
        b'{"text": ',
        b"[" * 1_900 + b"]" * 1_900,  # deeper than the recursion limit, smaller than max_record_bytes
        b'{"body": "no text field"}',
        b'{"text": 42}',
        b'{"text": "   "}',
        b'{"text": "caf\xe9 au lait"}',
        b'["text", "list"]',
        b'{"text": "nul\\u0000byte"}',
        b'{"text": "lone \\ud800 surrogate"}',
        b'{"text": "fine", "other": "\\udfff"}',
        b'{"text": "ab"}',
        json.dumps({"text": "x" * 5000}).encode(),
        json.dumps({"text": "y" * 7000}).encode(),
    ]
    (root / "bad.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    turns = [
        [{"from": "human", "value": "hello there"}, {"from": "gpt"}],
        [{"from": "human"}],
        [{"value": "who is speaking"}],
        [{"from": "human", "value": 7}],
        ["just a string"],
    ]
    (root / "chat.jsonl").write_bytes(jsonl_bytes([{"conversations": t} for t in turns]))
    (root / "dotted.jsonl").write_bytes(jsonl_bytes([{"data": ["an", "array"]}, {"data": {}}]))
    (root / "texts").mkdir()
    (root / "texts" / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (root / "texts" / "nul.txt").write_text("a\x00b")
    (root / "texts" / "big.txt").write_text("z" * 5000)
    (root / "texts" / "cut.txt.gz").write_bytes(gzip.compress(os.urandom(3000).hex().encode())[:2000])
    (root / "bad.parquet").write_bytes(b"this is not parquet at all")
    return config(
        root / "bad.jsonl",
        {"path": str(root / "chat.jsonl"), "chat": {}},
        {"path": str(root / "dotted.jsonl"), "text_field": "data.body"},
        {"path": str(root / "texts"), "text_glob": "*"},
        root / "bad.parquet",
        max_record_bytes=4000,
        min_text_chars=3,
    )


BAD_INPUT_KINDS = {
    "malformed JSON": 3,
    "field 'text' missing": 1,
    "field 'text' is int, expected string": 1,
    "empty text": 1,
    "not valid UTF-8": 2,
    "record is a JSON array, expected an object": 1,
    "text contains NUL": 2,
    "text contains a lone surrogate": 1,
    "record contains a lone surrogate": 1,
    "text too short": 1,
    "record too large": 3,
    "conversations[i] has no 'value'": 2,
    "conversations[i] has no 'from'": 1,
    "conversations[i].value is int, expected string": 1,
    "conversations[i] is string, expected object": 1,
    "field 'data.body' missing": 2,
    "read error": 2,
}


def test_reason_kinds_of_every_reason_the_readers_write(tmp_path):
    _, docs, quarantine, _ = run(write_bad_inputs(tmp_path / "in"))
    assert docs == []
    reasons = [q["reason"] for q in quarantine]
    kinds = {kind: sum(reason_kind(r) == kind for r in reasons) for kind in map(reason_kind, reasons)}
    assert kinds == BAD_INPUT_KINDS
    assert reason_kind("not valid UTF-8 at byte 13") == reason_kind("not valid UTF-8 at byte 3 (the file is ...)")


@pytest.mark.parametrize(
    "reason, kind",
    [
        ("row cannot be written as JSON: Circular reference detected", "row cannot be written as JSON"),
        ("record nested too deeply", "record nested too deeply"),
        ("read error: not readable as Parquet: Parquet magic bytes not found\nin footer", "read error"),
        ("field 'conversations' is an empty array", "field 'conversations' is an empty array"),
        ("field 'turns2' is string, expected array", "field 'turns2' is string, expected array"),
        ("turns2[10].from is null, expected string", "turns2[i].from is null, expected string"),
        ("record is 2.1 MB (2050085 bytes) > max_record_bytes 2 MB (2000000 bytes)", "record too large"),
    ],
)
def test_reason_kind_of_reasons_hard_to_provoke(reason, kind):
    assert reason_kind(reason) == kind


def test_summary_counts_quarantine_by_kind(tmp_path):
    cfg = write_bad_inputs(tmp_path / "in")
    store = ArtifactStore(tmp_path / "store")
    refs = [ingest_file(store, unit, cfg) for unit in plan_inputs(cfg)]
    counts = quarantine_reasons(refs)
    assert counts == BAD_INPUT_KINDS
    assert list(counts.values()) == sorted(counts.values(), reverse=True)


# ---------------------------------------------------------------------------------------------- symlinks


def link_farm(tmp_path):
    """A text directory with regular files, and links: to a file outside, to a directory outside, dangling, and
    back to the directory itself (a loop)."""
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "secret.txt").write_text("outside secret")
    (outside / "deep" / "x.txt").write_text("outside deep")
    root = tmp_path / "texts"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("regular a")
    (root / "sub" / "b.txt").write_text("regular b")
    (root / "passwd.txt").symlink_to(outside / "secret.txt")
    (root / "notes.md").symlink_to(outside / "secret.txt")  # not matched by text_glob: not reported
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "dangling.txt").symlink_to(tmp_path / "nowhere.txt")
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    return root


def uris(root, *names) -> tuple[str, ...]:
    return tuple(uri(root / name) for name in names)


def test_symlinks_in_a_directory_are_skipped_and_reported(tmp_path, caplog):
    root = link_farm(tmp_path)
    with caplog.at_level(logging.WARNING, logger="selectflow.ingest.sources"):
        units, docs, quarantine, _ = run(config(root))
    (unit,) = units
    assert unit.members == uris(root, "a.txt", "sub/b.txt")
    assert [d["text"] for d in docs] == ["regular a", "regular b"] and quarantine == []
    assert unit.skipped_links == uris(root, "dangling.txt", "linked", "passwd.txt", "sub/loop")
    assert "skipped 4 symlink(s)" in caplog.text and "set follow_symlinks: true" in caplog.text


def test_follow_symlinks_reads_through_links_without_looping(tmp_path, caplog):
    root = link_farm(tmp_path)
    with caplog.at_level(logging.WARNING, logger="selectflow.ingest.sources"):
        units, docs, _, _ = run(config({"path": str(root), "follow_symlinks": True}))
    (unit,) = units
    names = ["a.txt", "linked/deep/x.txt", "linked/secret.txt", "passwd.txt", "sub/b.txt"]
    assert unit.members == uris(root, *names)
    assert [d["text"] for d in docs] == ["regular a", "outside deep", "outside secret", "outside secret", "regular b"]
    assert unit.skipped_links == uris(root, "dangling.txt", "sub/loop")
    assert "skipped 2 symlink(s) that dangle or loop" in caplog.text


def test_symlinks_do_not_change_the_units_of_regular_files(tmp_path):
    texts, data = tmp_path / "texts", tmp_path / "data"
    texts.mkdir()
    data.mkdir()
    (texts / "a.txt").write_text("a")
    for name in ("b.jsonl", "c.jsonl"):
        (data / name).write_bytes(jsonl_bytes([{"text": name}]))
    before = plan_inputs(config(texts, data))
    (texts / "z.txt").symlink_to(texts / "a.txt")
    (data / "a.jsonl").symlink_to(data / "b.jsonl")
    after = plan_inputs(config(texts, data))
    assert [dataclasses.replace(unit, skipped_links=()) for unit in after] == before
    assert [unit.skipped_links for unit in after] == [uris(texts, "z.txt"), uris(data, "a.jsonl"), ()]


def test_a_symlink_named_by_the_input_is_read(tmp_path):
    root = link_farm(tmp_path)
    units, docs, _, _ = run(config(root / "passwd.txt", root / "linked"))
    assert [(u.format, u.uri, u.skipped_links) for u in units] == [
        ("text", uri(root / "passwd.txt"), ()),
        ("textdir", uri(root / "linked"), ()),
    ]
    assert [d["text"] for d in docs] == ["outside secret", "outside deep", "outside secret"]


def test_globs_skip_symlinks_unless_followed(tmp_path):
    root = link_farm(tmp_path)
    (unit,) = plan_inputs(config(root / "*.txt"))
    assert unit.members == uris(root, "a.txt")
    assert unit.skipped_links == uris(root, "dangling.txt", "passwd.txt")
    (unit,) = plan_inputs(config(root / "**" / "*.txt"))
    assert unit.members == uris(root, "a.txt", "sub/b.txt")
    assert unit.skipped_links == uris(root, "dangling.txt", "linked", "passwd.txt", "sub/loop")
    (unit,) = plan_inputs(config({"path": str(root / "**" / "*.txt"), "follow_symlinks": True}))
    assert unit.members == uris(root, "a.txt", "linked/deep/x.txt", "linked/secret.txt", "passwd.txt", "sub/b.txt")


def test_only_symlinks_found_says_how_to_read_them(tmp_path):
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshot"  # the layout of a Hugging Face cache
    blobs.mkdir()
    snapshot.mkdir()
    (blobs / "8f3a").write_bytes(jsonl_bytes([{"text": "behind a link"}]))
    (snapshot / "train.jsonl").symlink_to(blobs / "8f3a")
    follow = r"skipped 1 symlink\(s\) \(.*train\.jsonl\); set follow_symlinks: true"
    with pytest.raises(IngestError, match=rf"snapshot.*no files matching text_glob.*{follow}"):
        plan_inputs(config(snapshot))
    with pytest.raises(IngestError, match=rf"glob matched no files.*{follow}"):
        plan_inputs(config(snapshot / "*.jsonl"))
    units, docs, _, _ = run(config({"path": str(snapshot), "follow_symlinks": True}))
    assert [(u.uri, u.format) for u in units] == [(uri(snapshot / "train.jsonl"), "jsonl")]
    assert [d["text"] for d in docs] == ["behind a link"]


def test_ingest_stats_count_skipped_links(tmp_path):
    root = link_farm(tmp_path)
    store = ArtifactStore(tmp_path / "store")
    cfg = config(root)
    (unit,) = plan_inputs(cfg)
    stats = ingest_file(store, unit, cfg).manifest()["stats"]
    assert (stats["docs"], stats["skipped_links"]) == (2, 4)
    (root / "another.txt").symlink_to(root / "a.txt")  # same members: the artifact must still not be reused
    (unit,) = plan_inputs(cfg)
    assert ingest_file(store, unit, cfg).manifest()["stats"]["skipped_links"] == 5


# ---------------------------------------------------------------------------------------------- batching, ids


def test_shard_batching_respects_shard_rows(tmp_path):
    records = [{"text": f"t{i}"} if i % 5 else {"text": i} for i in range(54)]
    path = tmp_path / "x.jsonl"
    path.write_bytes(jsonl_bytes(records))
    _, docs, quarantine, batches = run(config(path, shard_rows=7))
    assert len(docs) == 43 and len(quarantine) == 11
    assert all(q <= 7 for _, q in batches)
    assert [d for d, _ in batches if d] == [7, 7, 7, 7, 7, 7, 1]  # full shards except the last
    assert [d["line"] for d in docs] == [i + 1 for i in range(54) if i % 5]


def test_all_bad_input_flushes_quarantine_in_bounded_batches(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"nope\n" * 25)
    _, docs, quarantine, batches = run(config(path, shard_rows=10))
    assert docs == [] and len(quarantine) == 25
    assert batches == [(0, 10), (0, 10), (0, 5)]


def test_doc_ids_stable_across_runs_and_shard_rows(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(jsonl_bytes(RECORDS))
    pq.write_table(pa.Table.from_pylist(RECORDS), tmp_path / "b.parquet")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "x.txt").write_text("text doc")
    inputs = [tmp_path / "a.jsonl", tmp_path / "b.parquet", tmp_path / "t"]
    outputs = [run(config(*inputs, shard_rows=n))[1] for n in (1, 4, 10_000, 4)]
    assert outputs[0] == outputs[1] == outputs[2] == outputs[3]
    ids = [d["doc_id"] for d in outputs[0]]
    assert len(ids) == len(set(ids)) == 2 * len(RECORDS) + 1
    assert run(config(*inputs))[0] == run(config(*inputs))[0]  # same plan, same fingerprints


def test_fingerprint_is_content_hash(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl_bytes([{"text": "v1"}]))
    first = plan_inputs(config(path))[0].fingerprint
    path.write_bytes(jsonl_bytes([{"text": "v2"}]))
    assert plan_inputs(config(path))[0].fingerprint != first
    path.write_bytes(jsonl_bytes([{"text": "v1"}]))
    assert plan_inputs(config(path))[0].fingerprint == first


def test_format_of():
    assert format_of("x.JSONL.GZ") == "jsonl"
    assert format_of("x.json.zst") == "jsonl"
    assert format_of("x.parquet") == "parquet"
    assert format_of("x.txt.gz") == "text"
    assert format_of("x.csv") == "text"


# ---------------------------------------------------------------------------------------------- errors


def test_missing_path_raises_naming_the_path(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(IngestError, match=r"ingest\.inputs\[0\]\.path .*nope\.jsonl.*no such file or directory"):
        plan_inputs(config(missing))


def test_second_input_missing_names_its_index(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(jsonl_bytes([{"text": "x"}]))
    with pytest.raises(IngestError, match=r"ingest\.inputs\[1\].*other\.jsonl"):
        plan_inputs(config(tmp_path / "a.jsonl", tmp_path / "other.jsonl"))


def test_glob_without_match_raises(tmp_path):
    with pytest.raises(IngestError, match=r"\*\.parquet.*glob matched no files"):
        plan_inputs(config(tmp_path / "*.parquet"))


def test_directory_without_usable_files_raises(tmp_path):
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(IngestError, match=r"no files matching text_glob '\*\*/\*\.txt'"):
        plan_inputs(config(tmp_path))
    with pytest.raises(IngestError, match=r"has no parquet files"):
        plan_inputs(config({"path": str(tmp_path), "format": "parquet"}))


def test_file_selected_twice_raises(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(jsonl_bytes([{"text": "x"}]))
    with pytest.raises(IngestError, match=r"a\.jsonl is selected by ingest\.inputs\[0\].*ingest\.inputs\[1\]"):
        plan_inputs(config(tmp_path / "a.jsonl", tmp_path / "*.jsonl"))


def test_unknown_protocol_raises():
    with pytest.raises(IngestError, match="nosuchproto://x"):
        plan_inputs(config("nosuchproto://x/y.jsonl"))


def test_unreadable_file_raises(tmp_path, monkeypatch):
    from fsspec.implementations.local import LocalFileSystem

    path = tmp_path / "secret.jsonl"
    path.write_bytes(b"{}\n")
    real_open = LocalFileSystem._open

    def deny(self, name, *args, **kwargs):  # chmod 0 does not stop root, so deny in the filesystem layer
        if name.endswith("secret.jsonl"):
            raise PermissionError(13, "Permission denied", name)
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "_open", deny)
    with pytest.raises(IngestError, match=r"ingest\.inputs\[0\].*secret\.jsonl.*cannot read.*Permission denied"):
        plan_inputs(config(path))


def test_file_deleted_after_planning_raises(tmp_path):
    path = tmp_path / "gone.jsonl"
    path.write_bytes(jsonl_bytes([{"text": "x"}]))
    cfg = config(path)
    (unit,) = plan_inputs(cfg)
    path.unlink()
    with pytest.raises(IngestError, match="gone.jsonl: cannot open"):
        list(read_input(unit, cfg))
