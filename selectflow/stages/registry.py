"""The built-in stages, in DAG order: the one place a stage is declared (see `selectflow.stages.base`)."""

from selectflow.config import DsirSelector, MixtureSelector, QuadSelector, RandomSelector, TopkSelector, ZipSelector
from selectflow.stages.base import Kind, Stage, register

INGEST = register(Stage("ingest", Kind.SOURCE))
EXACT_DEDUP = register(Stage("dedup_exact", Kind.FILTER))
MINHASH = register(Stage("minhash", Kind.AUXILIARY, row=False))
NEAR_DEDUP = register(Stage("dedup_near", Kind.FILTER, work_of=(MINHASH.name,)))
DEDUPED = register(Stage("deduped", Kind.AUXILIARY, row=False))
EMBEDDING_BASIS = register(Stage("embedding_basis", Kind.AUXILIARY, row=False))
EMBED = register(Stage("embed", Kind.AUXILIARY, row=False))
CLUSTER = register(Stage("cluster", Kind.FILTER, work_of=(EMBED.name,)))
REFERENCE_CLUSTERS = register(Stage("reference_clusters", Kind.AUXILIARY, row=False))
INFLUENCE = register(Stage("influence_reference", Kind.AUXILIARY))
ZIP = register(Stage("select_zip", Kind.SELECTOR, subset="zip", options=ZipSelector,
                     run="selectflow.stages.select_zip:zip_stage"))
QUAD = register(Stage("select_quad", Kind.SELECTOR, subset="quad", options=QuadSelector,
                      run="selectflow.stages.select_quad:select_quad_stage"))
NGRAMS = register(Stage("ngram_features", Kind.AUXILIARY, row=False))
DSIR = register(Stage("select_dsir", Kind.SELECTOR, subset="dsir", options=DsirSelector,
                      run="selectflow.stages.select_dsir:select_dsir_stage", work_of=(NGRAMS.name,)))
MIXTURE_PLAN = register(Stage("mixture_plan", Kind.AUXILIARY, row=False))
MIXTURE_SAMPLE = register(Stage("mixture_sample", Kind.AUXILIARY, row=False))
MIXTURE_PROBE = register(Stage("mixture_probe", Kind.AUXILIARY, row=False))
MIXTURE_FIT = register(Stage("mixture_fit", Kind.AUXILIARY, row=False))
MIXTURE_VALIDATION = register(Stage("mixture_validation", Kind.AUXILIARY, row=False))
MIXTURE = register(Stage("select_mixture", Kind.SELECTOR, subset="mixture", options=MixtureSelector,
                         run="selectflow.stages.mixture:select_mixture_stage",
                         work_of=(MIXTURE_SAMPLE.name, MIXTURE_PROBE.name, MIXTURE_FIT.name,
                                  MIXTURE_VALIDATION.name)))
RANDOM = register(Stage("select_random", Kind.BASELINE, subset="random", options=RandomSelector,
                        run="selectflow.stages.select_quad:select_random_stage"))
TOPK = register(Stage("select_topk", Kind.BASELINE, subset="topk", options=TopkSelector,
                      run="selectflow.stages.select_quad:select_topk_stage"))
FULL_POOL_SAMPLE = register(Stage("probe_full_pool", Kind.AUXILIARY, row=False))
PROBE = register(Stage("probe", Kind.AUXILIARY, per_subset=True))
CURRICULUM_PROBE = register(Stage("curriculum_probe", Kind.AUXILIARY, row=False))
CURRICULUM = register(Stage("curriculum", Kind.AUXILIARY, work_of=(CURRICULUM_PROBE.name,)))
