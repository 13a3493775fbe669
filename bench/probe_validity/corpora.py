"""Corpora and subsets for the probe benchmarks: pool domains, held-out sets, and subsets of equal bytes.

A corpus is a folder of zstd JSON Lines files: one per pool domain, plus `reference.jsonl.zst` (the target set)
and `unseen.jsonl.zst` (a domain not in the pool). `sample` is the embedded sample corpus; `debian` is built by
`debian_corpus.py` from Debian-installed text that neither the sample nor the tests use.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import zstandard

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "selectflow" / "data" / "sample"
HELD_OUT = ("reference", "unseen")


def read(path: Path) -> list[str]:
    """Texts of a .jsonl.zst file (ShareGPT records flattened to question + answer)."""
    with zstandard.open(path, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    return [r.get("text") or "\n\n".join(turn["value"] for turn in r["conversations"]) for r in records]


def corpus_folder(name: str, root: Path) -> Path:
    return SAMPLE if name == "sample" else root / "corpora" / name


def load(name: str, root: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(pool domain -> texts, held-out set -> texts) of a corpus."""
    folder = corpus_folder(name, root)
    if not folder.is_dir():
        raise SystemExit(f"corpus {name!r} not found at {folder}; build it with bench/probe_validity/debian_corpus.py")
    files = {path.name.removesuffix(".jsonl.zst"): path for path in sorted(folder.glob("*.jsonl.zst"))}
    held = {set_name: read(files.pop(set_name)) for set_name in HELD_OUT}
    return {domain: read(path) for domain, path in files.items()}, held


def n_bytes(text: str) -> int:
    return len(text.encode("utf-8")) + 1  # + the probe's end-of-text separator


def take(texts: list[str], budget: int) -> list[str]:
    """The first documents of `texts` whose bytes (each + its separator) reach `budget`."""
    picked, total = [], 0
    for text in texts:
        if total >= budget:
            break
        picked.append(text)
        total += n_bytes(text)
    if total < budget:
        raise ValueError(f"only {total} bytes available, {budget} wanted")
    return picked


def near_duplicate(text: str, rng: random.Random, edit: float = 0.05) -> str:
    """A copy with ~edit of its words dropped or swapped for another word of the same text."""
    words = text.split(" ")
    out = []
    for word in words:
        roll = rng.random()
        if roll < edit / 2:
            continue
        out.append(rng.choice(words) if roll < edit else word)
    return " ".join(out)


def uniform(pool: dict[str, list[str]], budget: int, seed: int) -> list[str]:
    """A uniform sample of the pool's documents reaching `budget` bytes."""
    everything = [text for texts in pool.values() for text in texts]
    return take(random.Random(seed).sample(everything, len(everything)), budget)


def mixture(pool: dict[str, list[str]], weights: dict[str, float], budget: int, seed: int,
            duplicate: float = 0.0) -> list[str]:
    """`weights` of the bytes from each domain (uniform within it); `duplicate` of the bytes near-copies of the
    subset's own documents (redundancy without changing the domain mix)."""
    rng = random.Random(seed)
    unique_budget = int(budget * (1 - duplicate))
    total = sum(weights.values())
    base = []
    for domain, weight in weights.items():
        texts = pool[domain]
        base += take(rng.sample(texts, len(texts)), int(unique_budget * weight / total) + 1)
    copies, size = [], sum(map(n_bytes, base))
    sources = rng.sample(base, len(base))
    while size < budget:
        copy = near_duplicate(sources[len(copies) % len(sources)], rng)
        copies.append(copy)
        size += n_bytes(copy)
    return rng.sample(base + copies, len(base) + len(copies))


def recipes(pool: dict[str, list[str]]) -> dict[str, dict]:
    """Nine subset recipes of different redundancy and domain mix, feasible on the pool at large budgets: name ->
    keyword arguments of `mixture`. Domains each take bytes in proportion to what the pool holds unless named."""
    sizes = {domain: sum(map(n_bytes, texts)) for domain, texts in pool.items()}
    natural = {domain: size / sum(sizes.values()) for domain, size in sizes.items()}
    largest = max(sizes, key=sizes.get)
    others = {domain: weight for domain, weight in natural.items() if domain != largest}
    second = max(others, key=others.get)
    return {
        "natural": {"weights": natural},
        "natural-dup25": {"weights": natural, "duplicate": 0.25},
        "natural-dup50": {"weights": natural, "duplicate": 0.5},
        "natural-dup75": {"weights": natural, "duplicate": 0.75},
        "balanced": {"weights": {domain: 1.0 for domain in pool}},
        f"only-{largest}": {"weights": {largest: 1.0}},
        f"without-{largest}": {"weights": others},
        f"without-{second}": {"weights": {d: w for d, w in natural.items() if d != second}},
        f"{largest}+{second}-dup50": {"weights": {largest: 1.0, second: 1.0}, "duplicate": 0.5},
    }


def largest_feasible(pool: dict[str, list[str]], recipe: dict) -> int:
    """The most bytes `mixture` can build for a recipe from this pool (its scarcest domain decides)."""
    sizes = {domain: sum(map(n_bytes, texts)) for domain, texts in pool.items()}
    total = sum(recipe["weights"].values())
    unique = min(sizes[d] * total / w for d, w in recipe["weights"].items() if w > 0)
    return int(unique / (1 - recipe.get("duplicate", 0.0)))
