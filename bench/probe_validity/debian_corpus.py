"""Build the 'debian' corpus for the probe benchmarks from Debian-installed text the sample corpus and the tests
do not use:

- kernel: Linux kernel documentation (linux-doc-6.1, reST), one document per section-sized chunk;
- man: manual pages (manpages, manpages-dev) rendered to plain text with groff;
- dictionary: FOLDOC and GCIDE entries (dict-foldoc, dict-gcide);
- license: /usr/share/doc/*/copyright (full of exact and near duplicates, as real corpora are).
Held out: `reference` = kernel docs and man pages of files not in the pool (the target set), `unseen` = the
Debian Reference (debian-reference-en, HTML to text), a domain absent from the pool.

    apt-get install linux-doc-6.1 dict-foldoc dict-gcide debian-reference-en groff   # manpages: usually present
    .venv/bin/python bench/probe_validity/debian_corpus.py [--root /tmp/selectflow-probe-validity]
"""

from __future__ import annotations

import argparse
import gzip
import html
import json
import random
import re
import subprocess
from pathlib import Path

import zstandard

# The sample config's selectors on this corpus, for the noise part (`selectflow run -c <root>/corpora/debian/
# selectflow.yaml -w WS`, then run.py --parts noise --workspace WS). Selections of 4.4 MB: the default-budget probes
# draw 1 MiB per seed from them, and the 4x probes train on 4 MiB of them, each one epoch.
PIPELINE_CONFIG = """\
ingest:
  inputs:
    - path: kernel.jsonl.zst
    - path: man.jsonl.zst
    - path: dictionary.jsonl.zst
    - path: license.jsonl.zst
  shard_rows: 20000
reference:
  - path: reference.jsonl.zst
dedup:
  near: {unit: word, ngram: 5, num_perm: 128, bands: 16, rows: 8, threshold: 0.7}
cluster:
  k: 64
  embedding: {method: tfidf, dim: 128}
influence: {max_tokens: 128, max_chunks: 1, curvature_samples: 32, reference_samples: 64}
selection:
  budget: 4400000
  budget_unit: tokens
  token_counter: bytes
  selectors:
    - {method: zip, mode: exact, k1: 10000, k2: 200, k3: 100}
    - {method: quad, bandit: ucb, pulls_per_round: 8, samples_per_pull: 2, block_size: 50}
    - {method: random}
probe:
  enabled: false   # run.py --parts noise trains the probes (cached, at 1x and 4x)
"""

CHUNK = 6000  # characters per document at most (split at paragraph boundaries)
_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def chunks(text: str) -> list[str]:
    out, current = [], ""
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        if current and len(current) + len(paragraph) > CHUNK:
            out.append(current)
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph[:4 * CHUNK]
    return out + ([current] if current.strip() else [])


def kernel_docs() -> dict[str, list[str]]:
    root = Path("/usr/share/doc/linux-doc-6.1/Documentation")
    return {str(path): chunks(gzip.open(path, "rt", errors="replace").read())
            for path in sorted(root.rglob("*.rst.gz"))}


def man_pages() -> dict[str, list[str]]:
    """The pages of the manpages and manpages-dev packages only (not whatever else is installed)."""
    listed = subprocess.run(["dpkg", "-L", "manpages", "manpages-dev"], capture_output=True, text=True).stdout
    pages = {}
    for path in sorted(Path(line) for line in listed.splitlines() if line.endswith(".gz") and "/man/man" in line):
        rendered = subprocess.run(f"zcat {path} | groff -man -Tutf8 -P -cbou 2>/dev/null", shell=True,
                                  capture_output=True, text=True, errors="replace").stdout
        if len(rendered) > 200:
            pages[str(path)] = chunks(rendered)
    return pages


def _b64(value: str) -> int:
    number = 0
    for char in value:
        number = number * 64 + _B64[char]
    return number


def dictionary(name: str) -> list[str]:
    data = gzip.open(f"/usr/share/dictd/{name}.dict.dz").read()
    entries, seen = [], set()
    for line in open(f"/usr/share/dictd/{name}.index", encoding="utf-8", errors="replace"):
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 3 or parts[0].startswith("00-database"):
            continue
        span = (_b64(parts[1]), _b64(parts[2]))
        if span not in seen:
            seen.add(span)
            entries.append(data[span[0]:span[0] + span[1]].decode("utf-8", errors="replace").strip())
    return [entry for entry in entries if len(entry) > 40]


def copyrights() -> list[str]:
    """Chunked like every other domain: a few copyright files run to 2 MB, and a probe's 1 MiB draw that caught one
    whole trained on little else."""
    return [chunk for path in sorted(Path("/usr/share/doc").glob("*/copyright")) if path.is_file()
            for chunk in chunks(path.read_text(errors="replace"))]


def debian_reference() -> list[str]:
    texts = []
    for path in sorted(Path("/usr/share/debian-reference").glob("*.en.html")):
        raw = re.sub(r"(?s)<(script|style).*?</\1>", " ", path.read_text(errors="replace"))
        text = html.unescape(re.sub(r"<[^>]+>", "", re.sub(r"</(p|div|h\d|li|pre|tr)>", "\n\n", raw)))
        texts += chunks(re.sub(r"[ \t]+", " ", text))
    return texts


def write(path: Path, texts: list[str], domain: str) -> None:
    with zstandard.open(path, "wt", encoding="utf-8", cctx=zstandard.ZstdCompressor(level=10)) as handle:
        for index, text in enumerate(texts):
            handle.write(json.dumps({"id": f"{domain}#{index}", "text": text, "domain": domain}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/selectflow-probe-validity"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = args.root / "corpora" / "debian"
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    reference: list[str] = []
    for domain, by_file in (("kernel", kernel_docs()), ("man", man_pages())):
        files = sorted(by_file)
        rng.shuffle(files)
        held = files[: max(len(files) // 50, 1)]  # 2% of the files, whole, go to the target set
        reference += rng.sample([t for f in held for t in by_file[f]], min(80, sum(len(by_file[f]) for f in held)))
        write(out / f"{domain}.jsonl.zst", [t for f in files[len(held):] for t in by_file[f]], domain)
    write(out / "dictionary.jsonl.zst", dictionary("foldoc") + dictionary("gcide"), "dictionary")
    write(out / "license.jsonl.zst", copyrights(), "license")
    write(out / "reference.jsonl.zst", reference, "reference")
    unseen = debian_reference()
    write(out / "unseen.jsonl.zst", rng.sample(unseen, min(150, len(unseen))), "unseen")
    (out / "selectflow.yaml").write_text(PIPELINE_CONFIG)
    for path in sorted(out.glob("*.jsonl.zst")):
        with zstandard.open(path, "rt", encoding="utf-8") as handle:
            texts = [json.loads(line)["text"] for line in handle]
        print(f"{path.name}: {len(texts)} documents, {sum(len(t.encode()) for t in texts):,} bytes")


if __name__ == "__main__":
    main()
