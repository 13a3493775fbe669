#!/usr/bin/env python3
"""Build the sample corpus's second held-out set: an "unseen" domain that is not in the pool.

Text: Perl's core language documentation (perl-doc's non-FAQ pods: perlintro, perlsyn, perlop, perlre, ...),
rendered to plain text with `pod2text` (Pod::Text, shipped with perl) and cut at paragraph breaks into
~1-2 KB chunks. The pool holds only the perlfaq pods of perl-doc, so this is a new domain for a probe model
trained on the pool: Perl language reference prose with inline code.

Licence: the Perl documentation is distributed under the same terms as Perl itself,
Artistic-1.0-Perl OR GPL-1.0-or-later (see /usr/share/doc/perl-doc/copyright).

Deterministic: pods are read in a fixed order, `pod2text` output is deterministic, and the kept chunks are the
`--records` ones with the lowest blake2b hash of their id (written in source order).

    apt-get install -y perl-doc        # if /usr/share/perl/5.*/pod is missing
    python3 scripts/build_unseen_domain.py --out selectflow/data/sample/unseen.jsonl.zst
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import io
import json
import re
import subprocess
from pathlib import Path

import zstandard

PODS = ["perlintro", "perlsyn", "perldata", "perlop", "perlsub", "perlref", "perlreftut", "perlre",
        "perlretut", "perlobj", "perlootut", "perlmod", "perlstyle", "perlrun", "perlipc", "perlfunc"]
LICENSE = "Artistic-1.0-Perl OR GPL-1.0-or-later"
MIN_CHARS, MAX_CHARS = 1000, 2000


def pod_dir() -> Path:
    found = sorted(glob.glob("/usr/share/perl/5.*/pod"))
    if not found:
        raise SystemExit("no /usr/share/perl/5.*/pod: install perl-doc (apt-get install -y perl-doc)")
    return Path(found[-1])


def render(pod: Path) -> str:
    out = subprocess.run(["pod2text", "--width=100", str(pod)], check=True, capture_output=True).stdout
    text = out.decode("utf-8", errors="replace")
    return "\n".join(line.rstrip() for line in text.splitlines())


def chunks(text: str) -> list[str]:
    """Paragraphs merged forward to >= MIN_CHARS; a chunk is closed before it would pass MAX_CHARS."""
    pieces: list[str] = []
    current = ""
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip("\n")
        if not paragraph.strip():
            continue
        if current and len(current) + 2 + len(paragraph) > MAX_CHARS and len(current) >= MIN_CHARS // 2:
            pieces.append(current)
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
        if len(current) >= MIN_CHARS:
            pieces.append(current)
            current = ""
    if current.strip():
        pieces.append(current)
    return [piece for piece in pieces if len(piece.strip()) >= 200]


def build(records: int) -> list[dict]:
    folder = pod_dir()
    rows = []
    for name in PODS:
        path = folder / f"{name}.pod"
        for index, text in enumerate(chunks(render(path))):
            rows.append({"id": f"perl-doc:{name}#{index}", "text": text, "domain": "perl-doc",
                         "source": f"perl-doc:{path}", "license": LICENSE})
    ranked = sorted(range(len(rows)), key=lambda i: hashlib.blake2b(rows[i]["id"].encode(), digest_size=8).digest())
    keep = sorted(ranked[:records])
    return [rows[i] for i in keep]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="selectflow/data/sample/unseen.jsonl.zst")
    parser.add_argument("--records", type=int, default=128)
    args = parser.parse_args()
    rows = build(args.records)
    buffer = io.BytesIO()
    for row in rows:
        buffer.write((json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
    payload = zstandard.ZstdCompressor(level=19).compress(buffer.getvalue())
    Path(args.out).write_bytes(payload)
    chars = sum(len(row["text"]) for row in rows)
    print(f"{args.out}: {len(rows)} records, {chars} text chars, {len(payload)} compressed bytes")


if __name__ == "__main__":
    main()
