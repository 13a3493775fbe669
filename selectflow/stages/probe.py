"""Probe stage: train a small causal LM on one subset at the shared token budget, for one seed, and record its metrics.

One artifact per (subset, seed). Tables: "curve" (one row per step, row 0 = before training; train loss in nats/token and
bits/byte, held-out losses at eval steps) and "decisions" (each document of the subset: trained on, or beyond the
budget). Stats: the metrics of `selectflow.probe.train` plus the compression ratios R (zlib-9 and zstd) of the text
exactly as trained (the documents of epoch 1, the last one cut where the budget ends).

How subsets are cut to the equal budget: see `selectflow.probe.data` (seeded document shuffle, pack with an
end-of-text token after each document, `tokens` rounded down to whole batches of seq_len blocks).
The "full" comparison subset is `full_pool_stage`: a seeded uniform sample of the deduplicated pool whose tokens
just cover the budget, drawn afresh for each seed. `subset_profile` gives what the flow needs before any probe
trains: a subset's tokens (for the common budget) and its compression ratios R (deterministic, whole subset).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa

from selectflow.compression import set_ratio
from selectflow.config import ProbeConfig
from selectflow.fingerprint import code_fingerprint, files_fingerprint
from selectflow.probe.curriculum import BASELINE_ORDER, reorder_for
from selectflow.probe.data import pack_eval, pack_train, sample_to_tokens, stream_tokens
from selectflow.probe.tokenizer import load_tokenizer
from selectflow.probe.train import train_probe
from selectflow.stages.base import Decisions, read_docs, write_decisions
from selectflow.stages.registry import FULL_POOL_SAMPLE, PROBE
from selectflow.store import ArtifactRef, ArtifactStore, ArtifactWriter

_CODE = code_fingerprint(__name__)  # this module and every selectflow module it imports

# Fields that do not change what one probe computes (its seed and budget are passed on their own).
_TRAINING_FIELDS = {"enabled", "subsets", "unseen", "speed_fraction", "seeds", "seed", "tokens", "confidence"}


def _tokenizer(cfg: ProbeConfig):
    return load_tokenizer(cfg.tokenizer, cfg.tokenizer_path, cfg.init_checkpoint)


def _model_files(cfg: ProbeConfig) -> dict[str, str | None]:
    """The tokenizer and init checkpoint by content: moved files reuse the probes, changed ones retrain them. A
    missing path stays as given, for the loader to report."""
    paths = {field: getattr(cfg, field) for field in ("tokenizer_path", "init_checkpoint")}
    return {field: files_fingerprint(path) if path and Path(path).expanduser().exists() else path
            for field, path in paths.items()}


def _texts_digest(table: pa.Table | None) -> str | None:
    if table is None:
        return None
    digest = hashlib.blake2b(digest_size=16)
    for text in table["text"].to_pylist():
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def probe_stage(
    store: ArtifactStore,
    name: str,
    subset: list[ArtifactRef],
    reference: pa.Table | list[ArtifactRef],
    unseen: pa.Table | list[ArtifactRef] | None,
    cfg: ProbeConfig,
    seed: int,
    tokens: int,
    stage: str = PROBE.name,
    order: str = BASELINE_ORDER,
) -> ArtifactRef:
    """Train the probe of `seed` on `tokens` of the documents of `subset` ("docs" tables); held-out sets: reference
    (and unseen, when given and not empty). `stage`: the artifact stage (the mixture search's and the curricula's
    probes have their own, so that runs do not take them for the probes of selected subsets). `order`: a
    curriculum of `selectflow.probe.curriculum` (the same documents as the shuffled order, reordered)."""
    reference_docs = read_docs(reference)
    unseen_docs = read_docs(unseen) if unseen is not None and len(unseen) else None
    config = {"name": name, "seed": seed, "tokens": tokens,
              "probe": cfg.model_dump(exclude=_TRAINING_FIELDS | {"tokenizer_path", "init_checkpoint"}),
              "files": _model_files(cfg), "reference": _texts_digest(reference_docs),
              "unseen": _texts_digest(unseen_docs)} | ({} if order == BASELINE_ORDER else {"order": order})

    def write(writer: ArtifactWriter) -> None:
        docs = read_docs(subset)
        texts = docs["text"].to_pylist()
        if not texts:
            raise ValueError(f"probe: subset {name!r} is empty (no documents); nothing to train on")
        tokenizer = _tokenizer(cfg)
        seq_len = cfg.model.seq_len
        domains = docs["domain"].to_pylist() if "domain" in docs.column_names else [None] * len(texts)
        train = pack_train(texts, tokenizer, tokens, seq_len, cfg.batch_size, seed, cfg.short_subset, name,
                           reorder_for(order, texts, domains))
        heldout = {"reference": pack_eval(reference_docs["text"].to_pylist(), tokenizer, cfg.eval_tokens, seq_len,
                                          "reference")}
        if unseen_docs is not None:
            heldout["unseen"] = pack_eval(unseen_docs["text"].to_pylist(), tokenizer, cfg.eval_tokens, seq_len,
                                          "unseen")
        run = train_probe(train, heldout, tokenizer, cfg, seed)
        writer.write("curve", pa.Table.from_pylist(run.curve))
        used = set(train.doc_indices)
        decisions = Decisions(f"{stage}:{name}")
        for i, doc in enumerate(docs["doc_id"].to_pylist()):
            if i in used:
                decisions.add(doc, "kept", f"trained on by probe {name!r} seed {seed} (epoch 1 of {train.epochs:.2f})")
            else:
                decisions.add(doc, "dropped", f"beyond probe {name!r} seed {seed}'s budget of {train.tokens} tokens")
        writer.write("decisions", decisions.table())
        writer.stats(name=name, order=order, subset_docs=len(texts), tokenizer=tokenizer.name, **run.metrics,
                     R_zlib=set_ratio(train.texts_used, "zlib"), R_zstd=set_ratio(train.texts_used, "zstd"),
                     text_bytes=sum(len(text.encode("utf-8")) for text in train.texts_used),
                     repeated=train.epochs > 1.0)

    return store.build(stage, config, [ref.key for ref in subset], _CODE, write)


def subset_profile(refs: list[ArtifactRef], cfg: ProbeConfig) -> dict:
    """A subset's packed tokens (documents + separators) and compression ratios R of its whole text."""
    texts = read_docs(refs)["text"].to_pylist()
    return {"docs": len(texts), "tokens": stream_tokens(texts, _tokenizer(cfg)),
            "R_zlib": set_ratio(texts, "zlib") if texts else None, "R_zstd": set_ratio(texts, "zstd") if texts else None}


def full_pool_stage(store: ArtifactStore, pool: list[ArtifactRef], cfg: ProbeConfig, seed: int,
                    budget: int) -> ArtifactRef:
    """The 'full' comparison subset of `seed`: a seeded uniform sample of the pool whose tokens just cover `budget`."""
    config = {"tokens": budget, "seed": seed, "tokenizer": cfg.tokenizer, "files": _model_files(cfg)}

    def write(writer: ArtifactWriter) -> None:
        docs = read_docs(pool)
        if docs.num_rows == 0:
            raise ValueError("probe: the deduplicated pool is empty; nothing to sample the 'full' subset from")
        picked = sample_to_tokens(docs["text"].to_pylist(), _tokenizer(cfg), budget, seed)
        chosen = set(picked)
        decisions = Decisions(FULL_POOL_SAMPLE.name)
        for i, doc in enumerate(docs["doc_id"].to_pylist()):
            if i in chosen:
                decisions.add(doc, "selected", f"in the seeded uniform sample of the pool to {budget} tokens")
            else:
                decisions.add(doc, "rejected", "not needed to reach the probe budget")
        write_decisions(writer, decisions, docs.take(picked), tokens=budget)

    return store.build(FULL_POOL_SAMPLE.name, config, [ref.key for ref in pool], _CODE, write)
