"""The built-in stages, in DAG order: the one place a stage is declared (see `selectflow.stages.base`)."""

from selectflow.stages.base import Kind, Stage, register

INGEST = register(Stage("ingest", Kind.SOURCE, "ingest"))
EXACT_DEDUP = register(Stage("dedup_exact", Kind.FILTER, "exact dedup"))
MINHASH = register(Stage("minhash", Kind.AUXILIARY, "minhash signatures", row=False))
NEAR_DEDUP = register(Stage("dedup_near", Kind.FILTER, "near dedup", work_of=(MINHASH.name,)))
DEDUPED = register(Stage("deduped", Kind.AUXILIARY, "deduplicated shards", row=False))
EMBEDDING_BASIS = register(Stage("embedding_basis", Kind.AUXILIARY, "embedding basis", row=False))
EMBED = register(Stage("embed", Kind.AUXILIARY, "embeddings", row=False))
CLUSTER = register(Stage("cluster", Kind.FILTER, "clusters", work_of=(EMBED.name,)))
INFLUENCE = register(Stage("influence_reference", Kind.AUXILIARY, "influence reference"))
ZIP = register(Stage("select_zip", Kind.SELECTOR, "ZIP", subset="zip"))
QUAD = register(Stage("select_quad", Kind.SELECTOR, "QUAD", subset="quad"))
RANDOM = register(Stage("select_random", Kind.BASELINE, "random baseline", subset="random"))
TOPK = register(Stage("select_topk", Kind.BASELINE, "top-k baseline", subset="topk"))
FULL_POOL_SAMPLE = register(Stage("probe_full_pool", Kind.AUXILIARY, "uniform pool sample", row=False))
PROBE = register(Stage("probe", Kind.AUXILIARY, "probes", per_subset=True))
