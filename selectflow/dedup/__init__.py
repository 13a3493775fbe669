"""Deduplication core: exact (normalized-text hash) and near (MinHash + LSH) duplicates, as pure functions.

- `exact.exact_duplicates(keys)` / `exact.exact_duplicates_dask(paths, client)`
- `minhash.MinHasher(num_perm, ngram, unit, seed).signatures(texts)` -> uint32 (n, num_perm); `minhash.shingles`
- `near.near_duplicates(doc_ids, sources, lines, signatures, bands, rows, threshold, client=None)`
"""

from selectflow.dedup.exact import exact_duplicates, exact_duplicates_dask
from selectflow.dedup.minhash import EMPTY, MinHasher, jaccard_estimate, shingles
from selectflow.dedup.near import near_duplicates

__all__ = ["EMPTY", "MinHasher", "exact_duplicates", "exact_duplicates_dask", "jaccard_estimate",
           "near_duplicates", "shingles"]
