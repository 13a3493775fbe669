"""Compression measures: definitions, the prefix-copy trick (bit-identical to zlib.compress), zstd's long window."""

import json
import zlib

import pytest
import zstandard
from conftest import sample_records

from selectflow.compression import (
    ReprListPrefix,
    ZlibPrefix,
    ZstdContext,
    compressed_size,
    compression_ratio,
    join_texts,
    list_repr,
    records_ratio,
    set_ratio,
)


def test_ratio_definitions_on_known_inputs():
    data = b"abc" * 1000
    assert compression_ratio(data) == len(data) / len(zlib.compress(data, 9))
    assert compression_ratio(data, "zlib", level=1) == len(data) / len(zlib.compress(data, 1))
    assert compression_ratio("é" * 10) == 20 / len(zlib.compress("é".encode() * 10, 9))  # str -> UTF-8
    assert compression_ratio(b"") == 0.0
    assert compression_ratio(data, "zstd") > 100  # highly redundant
    assert compressed_size(data, "zstd", level=3, window_log=20) < 100
    assert set_ratio(["ab", "cd"]) == compression_ratio(b"ab\n\ncd")
    assert join_texts(["x", "y"], separator="|") == b"x|y"
    records = [{"text": "hello 'world'\n"}, {"id": 1, "conversations": [{"from": "human", "value": "hi"}]}]
    s = str(records).encode()
    assert list_repr([repr(r).encode() for r in records]) == s
    assert records_ratio(records) == len(s) / len(zlib.compress(s, 9))
    with pytest.raises(ValueError):
        compression_ratio(data, "lz4")
    with pytest.raises(ValueError):
        compressed_size(data, "zlib", window_log=20)


def test_prefix_copy_is_bit_identical_to_zlib_compress():
    records = sample_records("qa.jsonl.zst", 150) + sample_records("code.jsonl.zst", 150)
    reprs = [repr(json.loads(json.dumps(r))).encode() for r in records]
    stream = ReprListPrefix()
    for n in (0, 1, 7, 120):  # grow the prefix in steps, compare candidate lists at each size
        while stream.n_items < n:
            stream.append(reprs[stream.n_items])
        for cand in range(200, 300, 9):
            whole = str(records[:n] + [records[cand]]).encode("utf-8")
            expected = zlib.compress(whole, 9)
            assert stream.output_with(stream.suffix(reprs[cand])) == expected[stream.emitted_bytes:]
            assert stream.size_with_item(reprs[cand]) == (len(whole), len(expected))
        assert stream.size_closed() == (len(str(records[:n]).encode()), len(zlib.compress(str(records[:n]).encode(), 9)))
    plain = ZlibPrefix(level=6)
    plain.feed(reprs[0])
    assert plain.output_with(reprs[1]) == zlib.compress(reprs[0] + reprs[1], 6)[plain.emitted_bytes:]


def test_zstd_long_window_sees_repetition_beyond_32k():
    text = join_texts(r["text"] for r in sample_records("prose.jsonl.zst", 200))[:100_000]
    assert len(text) == 100_000
    doubled = text + text
    zlib_gain = compression_ratio(doubled) / compression_ratio(text)
    zstd_gain = compression_ratio(doubled, "zstd") / compression_ratio(text, "zstd")
    assert zlib_gain < 1.05  # deflate's 32 KB window cannot reach the first copy
    assert zstd_gain > 1.9  # zstd encodes the second copy almost for free
    assert compression_ratio(doubled, "zstd") > 1.8 * compression_ratio(doubled)


def test_zstd_context_marginal_reaches_whole_context():
    texts = [r["text"].encode() for r in sample_records("prose.jsonl.zst", 1500)]
    context = b"\n\n".join(texts[1:])
    assert len(context) > 2_000_000  # the target lies > 2 MB back from the end
    target = texts[1]
    with_ctx = ZstdContext(context, level=9, window_log=27)
    alone = ZstdContext(b"", level=9).marginal(target)
    assert with_ctx.marginal(target) < 0.1 * alone
    assert alone == len(zstandard.ZstdCompressor(
        compression_params=zstandard.ZstdCompressionParameters.from_level(
            9, window_log=27, write_content_size=False, write_checksum=False, write_dict_id=False)).compress(target))
    with pytest.raises(ValueError):
        ZstdContext(context, window_log=20)
