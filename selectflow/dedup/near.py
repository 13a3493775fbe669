"""Near-duplicate detection from MinHash signatures: LSH banding, verification, connected components.

Steps (all numpy on int arrays; no Python object per document):

1. Rank: documents are sorted by ``(source, line, doc_id)``; a document's index below is its rank, so "smallest
   index" means "first occurrence".
2. Candidates, per band (``bands`` x ``rows`` = ``num_perm``): the band's ``rows`` uint32 values are hashed to
   64 bits; documents are sorted (stably) by band hash; in every bucket of equal hashes each member is paired with
   the next ``window`` members (all pairs for buckets of up to ``window + 1`` documents) and with the bucket's first
   (smallest rank) member. Large buckets thus stay linear in size and still connected. Pairs are encoded as
   ``i * n + j`` (``i < j``) and made unique per band, then across bands. With a dask ``client``, one task per band
   (group) runs on the cluster; the union is the same set, so results are identical.
3. Verification: a pair is kept if its signature-estimated Jaccard (fraction of equal signature values) is
   ``>= threshold``. Bucket-hash collisions are therefore harmless. Documents whose signature is all ``EMPTY``
   (no shingle) are never paired.
4. Components: vectorized union-find (hook the larger root onto the smaller, then pointer jumping) over the kept
   pairs; each component's root is its smallest rank, i.e. the keeper (smallest ``(source, line)``).
5. One output row per dropped document: ``doc_id``, ``dup_of`` (keeper), ``similarity`` (estimated Jaccard to the
   keeper, which can be below the threshold when the component chains), ``linked_by`` / ``edge_similarity`` (the
   verified pair that links the document: its most similar verified neighbour, ties to the smallest rank),
   ``component`` (the keeper's doc_id). Rows are in rank order.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from selectflow.dedup.minhash import EMPTY

__all__ = ["RESULT_SCHEMA", "candidate_pairs", "components", "near_duplicates", "verify_pairs"]

RESULT_SCHEMA = pa.schema([
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("dup_of", pa.string(), nullable=False),
    pa.field("similarity", pa.float64(), nullable=False),
    pa.field("linked_by", pa.string(), nullable=False),
    pa.field("edge_similarity", pa.float64(), nullable=False),
    pa.field("component", pa.string(), nullable=False),
])

WINDOW = 16  # bucket neighbours each member is paired with (besides the bucket's first member)
_VERIFY_CHUNK = 1 << 18

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def _band_hash(block: np.ndarray) -> np.ndarray:
    """64-bit hash of each row of a (n, rows) uint32 block."""
    h = np.zeros(block.shape[0], dtype=np.uint64)
    for k in range(block.shape[1]):
        h += block[:, k].astype(np.uint64)
        h *= _GOLD
        _mix64(h)
    return h


def _band_pairs(block: np.ndarray, valid: np.ndarray | None, window: int = WINDOW) -> np.ndarray:
    """Unique candidate pair codes (i * n + j, i < j) of one band. `valid`: rows that may be paired."""
    n = block.shape[0]
    h = _band_hash(block)
    idx = np.arange(n, dtype=np.int64) if valid is None else np.flatnonzero(valid).astype(np.int64)
    h = h[idx]
    order = np.argsort(h, kind="stable")  # stable: members of a bucket stay in rank order
    hs, ids = h[order], idx[order]
    if hs.size < 2:
        return np.zeros(0, np.int64)
    same = hs[1:] == hs[:-1]
    multi = np.zeros(hs.size, dtype=bool)
    multi[1:] |= same
    multi[:-1] |= same
    hs, ids = hs[multi], ids[multi]
    if hs.size == 0:
        return np.zeros(0, np.int64)
    codes = []
    for d in range(1, window + 1):  # sorted-neighbourhood pairs inside buckets
        if d >= hs.size:
            break
        m = hs[d:] == hs[:-d]
        if not m.any():
            break
        codes.append(ids[:-d][m] * n + ids[d:][m])
    first = np.ones(hs.size, dtype=bool)
    first[1:] = hs[1:] != hs[:-1]
    head = ids[np.maximum.accumulate(np.where(first, np.arange(hs.size), 0))]
    star = ~first & (head != ids)
    codes.append(head[star] * n + ids[star])  # every member to its bucket's first member
    return np.unique(np.concatenate(codes))


def candidate_pairs(signatures: np.ndarray, bands: int, rows: int, client=None,
                    window: int = WINDOW) -> np.ndarray:
    """Unique candidate pair codes ``i * n + j`` over all bands (sorted int64)."""
    sig = np.asarray(signatures)
    n, num_perm = sig.shape
    if bands * rows > num_perm:
        raise ValueError(f"bands ({bands}) * rows ({rows}) exceeds the signature length ({num_perm})")
    valid = ~(sig == EMPTY).all(axis=1)
    valid_arg = None if valid.all() else valid
    block = lambda b: np.ascontiguousarray(sig[:, b * rows:(b + 1) * rows])  # noqa: E731  (n x rows, one band)
    if client is None:
        parts = [_band_pairs(block(b), valid_arg, window) for b in range(bands)]
    else:
        valid_future = client.scatter(valid_arg) if valid_arg is not None else None
        futures = [client.submit(_band_pairs, client.scatter(block(b)), valid_future, window, pure=False)
                   for b in range(bands)]
        parts = client.gather(futures)
    if not parts:
        return np.zeros(0, np.int64)
    return np.unique(np.concatenate(parts))


def verify_pairs(signatures: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Estimated Jaccard of each pair (i[k], j[k]), computed in chunks."""
    sim = np.empty(i.size, dtype=np.float64)
    for s in range(0, i.size, _VERIFY_CHUNK):
        e = s + _VERIFY_CHUNK
        sim[s:e] = (signatures[i[s:e]] == signatures[j[s:e]]).sum(axis=1) / signatures.shape[1]
    return sim


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Root (= smallest index) of every node's connected component over edges (i, j)."""
    parent = np.arange(n, dtype=np.int64)
    while True:
        ri, rj = parent[i], parent[j]
        diff = ri != rj
        if not diff.any():
            return parent
        lo, hi = np.minimum(ri[diff], rj[diff]), np.maximum(ri[diff], rj[diff])
        np.minimum.at(parent, hi, lo)  # hook roots onto smaller roots (roots stay the smallest index)
        while True:  # pointer jumping to full compression
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt


def _as_array(values, type_=None) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values if type_ is None else values.cast(type_)
    return pa.array(np.asarray(values).tolist() if isinstance(values, np.ndarray) and values.dtype == object
                    else values, type=type_)


def near_duplicates(doc_ids, sources, lines, signatures, bands, rows, threshold, client=None) -> pa.Table:
    """Near-duplicate rows (see module docstring): doc_id, dup_of, similarity, linked_by, edge_similarity,
    component. Identical with and without a dask `client`."""
    ids = _as_array(doc_ids, pa.string())
    src = _as_array(sources, pa.string())
    lin = _as_array(lines, pa.int64())
    sig = np.asarray(signatures)
    n = len(ids)
    if sig.ndim != 2 or sig.shape[0] != n or len(src) != n or len(lin) != n:
        raise ValueError("near_duplicates: doc_ids, sources, lines and signatures must have the same length")
    if n < 2:
        return RESULT_SCHEMA.empty_table()
    order = pc.sort_indices(pa.table({"s": src, "l": lin, "d": ids}),
                            sort_keys=[("s", "ascending"), ("l", "ascending"), ("d", "ascending")])
    order_np = order.to_numpy()
    ranked_sig = sig[order_np]
    ranked_ids = ids.take(order)

    codes = candidate_pairs(ranked_sig, bands, rows, client=client)
    i, j = np.divmod(codes, n)
    sim = verify_pairs(ranked_sig, i, j)
    keep = sim >= threshold
    i, j, sim = i[keep], j[keep], sim[keep]
    root = components(n, i, j)
    dropped = np.flatnonzero(root != np.arange(n))
    if dropped.size == 0:
        return RESULT_SCHEMA.empty_table()

    # Best verified neighbour of every node: highest similarity, then smallest rank.
    node = np.concatenate([i, j])
    other = np.concatenate([j, i])
    edge_sim = np.concatenate([sim, sim])
    pick = np.lexsort((other, -edge_sim, node))
    node, other, edge_sim = node[pick], other[pick], edge_sim[pick]
    firsts = np.ones(node.size, dtype=bool)
    firsts[1:] = node[1:] != node[:-1]
    best_other = np.full(n, -1, dtype=np.int64)
    best_sim = np.zeros(n, dtype=np.float64)
    best_other[node[firsts]] = other[firsts]
    best_sim[node[firsts]] = edge_sim[firsts]

    keeper = root[dropped]
    take = lambda idx: ranked_ids.take(pa.array(idx))  # noqa: E731
    table = pa.table({
        "doc_id": take(dropped),
        "dup_of": take(keeper),
        "similarity": verify_pairs(ranked_sig, dropped, keeper),
        "linked_by": take(best_other[dropped]),
        "edge_similarity": best_sim[dropped],
        "component": take(keeper),
    })
    return table.cast(RESULT_SCHEMA)
