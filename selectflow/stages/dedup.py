"""Dedup stages: exact (global), MinHash signatures (per shard), near (global), filter (per shard)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from selectflow.config import ExactDedupConfig, NearDedupConfig
from selectflow.dedup.exact import exact_duplicates, exact_duplicates_dask
from selectflow.dedup.minhash import MinHasher
from selectflow.dedup.near import near_duplicates
from selectflow.fingerprint import code_fingerprint
from selectflow.schema import decisions_table
from selectflow.store import ArtifactRef, ArtifactStore, ArtifactWriter, Shard

_CODE = code_fingerprint(__name__)  # this module and every selectflow module it imports

EXACT, SIGNATURES, NEAR, DEDUPED = "dedup_exact", "minhash", "dedup_near", "deduped"
KEY_COLUMNS = ["doc_id", "content_hash", "source", "line"]


def dropped_ids(decisions: ArtifactRef) -> pa.Array:
    table = decisions.read("decisions", columns=["doc_id", "decision"])
    return table.filter(pc.equal(table["decision"], "dropped"))["doc_id"]


def exact_dedup(store: ArtifactStore, shards: list[Shard], cfg: ExactDedupConfig, client=None) -> ArtifactRef:
    def write(writer: ArtifactWriter) -> None:
        paths = [shard.path for shard in shards]
        keys = pa.concat_tables([pq.read_table(p, columns=KEY_COLUMNS) for p in paths])
        if not cfg.enabled:
            dups = pa.table({"doc_id": pa.array([], pa.string()), "dup_of": pa.array([], pa.string())})
        elif client is not None:
            dups = exact_duplicates_dask(paths, client=client)
        else:
            dups = exact_duplicates(keys)
        copies = dict(zip(*np.unique(keys["content_hash"].to_numpy(zero_copy_only=False), return_counts=True)))
        dup_of = dict(zip(dups["doc_id"].to_pylist(), dups["dup_of"].to_pylist()))
        ids, hashes = keys["doc_id"].to_pylist(), keys["content_hash"].to_pylist()
        decision, reason, ref = [], [], []
        for doc, digest in zip(ids, hashes):
            keeper = dup_of.get(doc)
            n = copies[digest]
            decision.append("dropped" if keeper else "kept")
            ref.append(keeper)
            if keeper:
                reason.append(f"exact duplicate of {keeper} (same normalized text, {n} copies)")
            elif not cfg.enabled:
                reason.append("exact dedup disabled")
            else:
                reason.append(f"first of {n} identical copies" if n > 1 else "unique normalized text")
        writer.write("decisions", decisions_table(ids, EXACT, decision, reason, ref, group=hashes))
        writer.stats(docs_in=len(ids), docs_out=len(ids) - len(dup_of), dropped=len(dup_of),
                     duplicate_rate=len(dup_of) / max(len(ids), 1))

    return store.build(EXACT, cfg.model_dump(), [shard.sha256 for shard in shards], _CODE, write)


def minhash_shard(store: ArtifactStore, shard: Shard, cfg: NearDedupConfig) -> ArtifactRef:
    def write(writer: ArtifactWriter) -> None:
        docs = pq.read_table(shard.path, columns=["doc_id", "source", "line", "text"])
        hasher = MinHasher(num_perm=cfg.num_perm, ngram=cfg.ngram, unit=cfg.unit, seed=cfg.seed)
        signatures = hasher.signatures(docs["text"].to_pylist()).astype(np.uint32, copy=False)
        flat = pa.array(signatures.reshape(-1), pa.uint32())
        writer.write("signatures", pa.table({
            "doc_id": docs["doc_id"], "source": docs["source"], "line": docs["line"],
            "signature": pa.FixedSizeListArray.from_arrays(flat, cfg.num_perm),
        }))
        writer.stats(docs=docs.num_rows)

    # Signatures depend on the shingling and permutations only, so LSH/threshold changes reuse them.
    config = cfg.model_dump(exclude={"enabled", "threshold", "bands", "rows"})
    return store.build(SIGNATURES, config, [shard.sha256], _CODE, write)


def near_dedup(
    store: ArtifactStore, signatures: list[ArtifactRef], exact: ArtifactRef, cfg: NearDedupConfig, client=None
) -> ArtifactRef:
    def write(writer: ArtifactWriter) -> None:
        table = pa.concat_tables([ref.read("signatures") for ref in signatures])
        table = table.filter(pc.invert(pc.is_in(table["doc_id"], value_set=dropped_ids(exact))))
        ids = table["doc_id"].to_pylist()
        if cfg.enabled and table.num_rows:
            sig = table["signature"].combine_chunks().values.to_numpy().reshape(-1, cfg.num_perm)
            found = near_duplicates(
                np.asarray(ids, dtype=object), table["source"].to_numpy(zero_copy_only=False),
                table["line"].to_numpy(), sig, cfg.bands, cfg.rows, cfg.threshold, client=client,
            )
        else:
            found = pa.table({"doc_id": pa.array([], pa.string())})
        near = {row["doc_id"]: row for row in found.to_pylist()}
        members: dict[str, int] = {}
        for row in near.values():
            members[row["component"]] = members.get(row["component"], 1) + 1
        decision, reason, ref, score, group = [], [], [], [], []
        for doc in ids:
            row = near.get(doc)
            if row:
                decision.append("dropped")
                via = "" if row["linked_by"] == row["dup_of"] else (
                    f"; linked via {row['linked_by']} at {row['edge_similarity']:.2f}")
                reason.append(f"near-duplicate of {row['dup_of']} (estimated Jaccard {row['similarity']:.2f}{via}; "
                              f"component of {members[row['component']]})")
                ref.append(row["dup_of"]), score.append(row["similarity"]), group.append(row["component"])
            else:
                decision.append("kept")
                size = members.get(doc)
                reason.append(
                    f"kept as first of a near-duplicate component of {size}" if size
                    else ("near dedup disabled" if not cfg.enabled
                          else f"no near duplicate at estimated Jaccard >= {cfg.threshold}")
                )
                ref.append(None), score.append(None), group.append(doc if size else None)
        writer.write("decisions", decisions_table(ids, NEAR, decision, reason, ref, score, group))
        writer.stats(docs_in=len(ids), docs_out=len(ids) - len(near), dropped=len(near),
                     duplicate_rate=len(near) / max(len(ids), 1), components=len(members))

    return store.build(NEAR, cfg.model_dump(), [exact.key] + [ref.key for ref in signatures], _CODE, write)


def filter_shard(store: ArtifactStore, shard: Shard, decisions: list[ArtifactRef]) -> ArtifactRef:
    """The shard's documents minus everything a dedup stage dropped."""

    def write(writer: ArtifactWriter) -> None:
        docs = pq.read_table(shard.path)
        drop = pa.concat_arrays([dropped_ids(ref).combine_chunks() for ref in decisions])
        kept = docs.filter(pc.invert(pc.is_in(docs["doc_id"], value_set=drop)))
        writer.write("docs", kept)
        writer.stats(docs_in=docs.num_rows, docs_out=kept.num_rows)

    return store.build(DEDUPED, {}, [shard.sha256] + [ref.key for ref in decisions], _CODE, write)
