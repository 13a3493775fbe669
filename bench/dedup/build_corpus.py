"""Build dedup benchmark corpora of N documents from REAL text on this machine (Debian docs, Python sources).

Pool: every source file is cut into paragraph "segments" (blank-line separated; long paragraphs cut at line
boundaries into <= ~600 chars), kept in file order. Sources: linux-doc-6.1 (reST), python3.11-doc (reST),
perl-doc pods, debian-reference (HTML stripped), fortunes, man pages (groff requests dropped),
/usr/share/doc/*/copyright (full of real repeated licence text), the Python standard library.

Documents (seeded, deterministic), sized like web pages (a few hundred to a few thousand chars):
  - fresh (~70%): a run of consecutive segments starting at a random point of the pool; with probability 0.5 the
    document continues with a second run from elsewhere (so documents stay distinct at 1M even though the pool
    is ~10^5 pages). Chance overlaps between runs are natural near-duplicates (overlapping windows).
  - near copy (~22%): an earlier document whose window is shifted (segments dropped/added at either end), one
    segment replaced, or ~3-10% of its words swapped for words taken elsewhere in the pool: Jaccard from ~0.3 to ~1.
  - exact copy (~8%): an earlier document with different case/whitespace (same normalized text).
Output: bench/data/corpus_{N}.parquet with doc_id, source, line, text, content_hash (DOCS-like columns).

    python bench/dedup/build_corpus.py 10000 100000 1000000
"""

from __future__ import annotations

import glob
import gzip
import html
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from selectflow.text import content_hash, doc_id  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"
POOL = DATA / "pool.parquet"


def _read(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            return f.read()
    except (OSError, EOFError):
        return ""


_TAG = re.compile(r"<[^>]+>")
_GROFF = re.compile(r"\\f[BIRP]|\\\(..|\\[-&e]|\\\*\(..|\\\*.")


def _sources():
    for p in sorted(glob.glob("/usr/share/doc/linux-doc-6.1/Documentation/**/*.rst.gz", recursive=True)):
        yield p, _read(p)
    for p in sorted(glob.glob("/usr/share/doc/python3.11-doc/html/_sources/**/*.txt", recursive=True)):
        yield p, _read(p)
    for p in sorted(glob.glob("/usr/share/perl/*/pod/*.pod")):
        yield p, _read(p)
    for p in sorted(glob.glob("/usr/share/debian-reference/*.en.html")):
        text = html.unescape(_TAG.sub("", _read(p)))
        yield p, text
    for p in sorted(glob.glob("/usr/share/games/fortunes/*")):
        if not p.endswith((".dat", ".u8")) and os.path.isfile(p):
            yield p, _read(p).replace("\n%\n", "\n\n")
    for p in sorted(glob.glob("/usr/share/man/man[1-8]/*.gz")):
        lines = [_GROFF.sub("", l) for l in _read(p).splitlines() if not l.startswith((".", "'"))]
        yield p, "\n".join(lines)
    for p in sorted(glob.glob("/usr/share/doc/*/copyright")):
        yield p, _read(p)
    for p in sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "**/*.py"), recursive=True)):
        if "site-packages" not in p and "/test" not in p:
            yield p, _read(p)


def build_pool() -> list[str]:
    if POOL.exists():
        return pq.read_table(POOL)["text"].to_pylist()
    segs: list[str] = []
    for _path, text in _sources():
        for para in re.split(r"\n\s*\n", text):
            para = para.strip("\n")
            if len(para.strip()) < 20:
                continue
            buf, size = [], 0
            for line in para.split("\n"):
                buf.append(line)
                size += len(line) + 1
                if size >= 600:
                    segs.append("\n".join(buf))
                    buf, size = [], 0
            if buf and sum(map(len, buf)) >= 20:
                segs.append("\n".join(buf))
    DATA.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": segs}), POOL)
    return segs


def _run(rng, n_pool, seg_len, target):
    start = int(rng.integers(n_pool))
    out, size = [], 0
    i = start
    while size < target and i < n_pool:
        out.append(i)
        size += seg_len[i]
        i += 1
    return out


def build(n_docs: int, seed: int = 0) -> Path:
    path = DATA / f"corpus_{n_docs}.parquet"
    if path.exists():
        return path
    t0 = time.time()
    pool = build_pool()
    seg_len = np.fromiter(map(len, pool), dtype=np.int64, count=len(pool))
    rng = np.random.default_rng(seed)
    docs: list[list[int] | tuple] = []  # segment lists, or ("edit", base, ...) descriptions
    texts: list[str] = []
    kinds: list[str] = []
    words_pool = None
    for i in range(n_docs):
        r = rng.random() if i > 10 else 0.0
        target = int(np.clip(rng.lognormal(np.log(1100), 0.7), 200, 6000))
        if r < 0.70:
            segs = _run(rng, len(pool), seg_len, target if rng.random() < 0.5 else target // 2)
            if rng.random() < 0.5 or sum(seg_len[segs]) < target // 2:
                segs += _run(rng, len(pool), seg_len, max(target - int(sum(seg_len[segs])), 100))
            text = "\n".join(pool[s] for s in segs)
            kind = "fresh"
        elif r < 0.92:
            base = int(rng.integers(i))
            segs = list(docs[base]) if docs[base] else None
            mode = rng.integers(3) if segs else 2
            if mode == 0:  # shift the window
                drop = int(rng.integers(0, max(1, len(segs) // 3) + 1))
                add = int(rng.integers(0, 3))
                segs = segs[drop:] + [min(segs[-1] + k + 1, len(pool) - 1) for k in range(add)]
                if rng.random() < 0.5:
                    segs = segs[::-1][::-1]
                text = "\n".join(pool[s] for s in segs) if segs else texts[base]
                kind = "near-shift"
            elif mode == 1:  # replace one segment
                segs = list(segs)
                segs[int(rng.integers(len(segs)))] = int(rng.integers(len(pool)))
                text = "\n".join(pool[s] for s in segs)
                kind = "near-replace"
            else:  # swap some words for words found elsewhere in the pool
                if words_pool is None:
                    words_pool = " ".join(pool[j] for j in rng.integers(len(pool), size=2000)).split()
                words = texts[base].split(" ")
                frac = rng.uniform(0.03, 0.10)
                for k in rng.choice(len(words), size=max(1, int(frac * len(words))), replace=False):
                    words[k] = words_pool[int(rng.integers(len(words_pool)))]
                text = " ".join(words)
                segs = None
                kind = "near-words"
        else:
            base = int(rng.integers(i))
            segs = docs[base]
            text = texts[base].upper() if rng.random() < 0.5 else "  " + texts[base].replace("\n", " \n ") + "\n"
            kind = "exact-copy"
        docs.append(segs)
        texts.append(text)
        kinds.append(kind)
    source = [f"bench://corpus_{n_docs}/shard{i // 10_000:05d}.jsonl" for i in range(n_docs)]
    line = [i % 10_000 + 1 for i in range(n_docs)]
    table = pa.table({
        "doc_id": [doc_id(s, l) for s, l in zip(source, line)],
        "source": source,
        "line": pa.array(line, pa.int64()),
        "text": texts,
        "content_hash": [content_hash(t) for t in texts],
        "kind": kinds,
    })
    pq.write_table(table, path, row_group_size=10_000)
    print(f"corpus_{n_docs}: {n_docs} docs, {sum(map(len, texts)) / 1e6:.1f} M chars, pool {len(pool)} segments, "
          f"{time.time() - t0:.0f} s -> {path}", flush=True)
    return path


if __name__ == "__main__":
    for n in sys.argv[1:] or ["10000", "100000"]:
        build(int(n))
