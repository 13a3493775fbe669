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
from selectflow.stages.base import Decisions, write_decisions
from selectflow.stages.registry import DEDUPED, EXACT_DEDUP, MINHASH, NEAR_DEDUP
from selectflow.store import ArtifactRef, ArtifactStore, ArtifactWriter, Shard

_CODE = code_fingerprint(__name__)  # this module and every selectflow module it imports

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
        decisions = Decisions(EXACT_DEDUP.name)
        for doc, digest in zip(keys["doc_id"].to_pylist(), keys["content_hash"].to_pylist()):
            keeper, n = dup_of.get(doc), copies[digest]
            if keeper:
                decisions.add(doc, "dropped", f"exact duplicate of {keeper} (same normalized text, {n} copies)",
                              ref=keeper, group=digest)
            else:
                reason = ("exact dedup disabled" if not cfg.enabled
                          else f"first of {n} identical copies" if n > 1 else "unique normalized text")
                decisions.add(doc, "kept", reason, group=digest)
        write_decisions(writer, decisions, duplicate_rate=len(dup_of) / max(len(decisions), 1))

    return store.build(EXACT_DEDUP.name, cfg.model_dump(), [shard.sha256 for shard in shards], _CODE, write)


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
    return store.build(MINHASH.name, config, [shard.sha256], _CODE, write)


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
        decisions = Decisions(NEAR_DEDUP.name)
        for doc in ids:
            if row := near.get(doc):
                via = "" if row["linked_by"] == row["dup_of"] else (
                    f"; linked via {row['linked_by']} at {row['edge_similarity']:.2f}")
                decisions.add(doc, "dropped", f"near-duplicate of {row['dup_of']} (estimated Jaccard "
                              f"{row['similarity']:.2f}{via}; component of {members[row['component']]})",
                              ref=row["dup_of"], score=row["similarity"], group=row["component"])
            elif size := members.get(doc):
                decisions.add(doc, "kept", f"kept as first of a near-duplicate component of {size}", group=doc)
            else:
                decisions.add(doc, "kept", "near dedup disabled" if not cfg.enabled
                              else f"no near duplicate at estimated Jaccard >= {cfg.threshold}")
        write_decisions(writer, decisions, duplicate_rate=len(near) / max(len(ids), 1), components=len(members))

    return store.build(NEAR_DEDUP.name, cfg.model_dump(), [exact.key] + [ref.key for ref in signatures], _CODE, write)


def filter_shard(store: ArtifactStore, shard: Shard, decisions: list[ArtifactRef]) -> ArtifactRef:
    """The shard's documents minus everything a dedup stage dropped."""

    def write(writer: ArtifactWriter) -> None:
        docs = pq.read_table(shard.path)
        drop = pa.concat_arrays([dropped_ids(ref).combine_chunks() for ref in decisions])
        kept = docs.filter(pc.invert(pc.is_in(docs["doc_id"], value_set=drop)))
        writer.write("docs", kept)
        writer.stats(docs_in=docs.num_rows, docs_out=kept.num_rows, dropped=docs.num_rows - kept.num_rows)

    return store.build(DEDUPED.name, {}, [shard.sha256] + [ref.key for ref in decisions], _CODE, write)
