"""Embeddings (MiniLM, shared TF-IDF basis), k-means clusters and neighbours, semantic dedup, stage caching."""

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from conftest import sample_records

import selectflow.stages.cluster as cluster_stages
from selectflow.cluster import ClusterError, EmbeddingError, minilm_embed, semantic_dedup
from selectflow.config import ClusterConfig, EmbeddingConfig, SemDedupConfig
from selectflow.schema import DECISIONS, DOCS
from selectflow.stages.cluster import (
    CENTROID_DISTANCES_FILE,
    cluster_stage,
    embed_stage,
    embedding_basis_stage,
    kept_doc_ids,
)
from selectflow.store import ArtifactStore

TFIDF = EmbeddingConfig(method="tfidf", dim=32, max_features=2000, svd_sample=400, seed=0)


def _rows(name: str, limit: int, offset: int = 0) -> list[dict]:
    rows = []
    for k, record in enumerate(sample_records(f"{name}.jsonl.zst", offset + limit)[offset:]):
        rows.append({"doc_id": f"{name}-{offset + k:04d}", "source": f"sample/{name}", "line": offset + k + 1,
                     "domain": record["domain"], "text": record["text"], "content_hash": record["id"],
                     "n_bytes": len(record["text"].encode()), "record": json.dumps(record)})
    return rows


def _pool(store: ArtifactStore, rows: list[dict], name: str):
    """A pool artifact like the dedup output: a "docs" table with the DOCS schema."""
    table = pa.Table.from_pylist(rows, schema=DOCS)
    return store.build("pool", {"name": name}, [r["doc_id"] for r in rows], "test",
                       lambda writer: writer.write("docs", table))


def _embeddings(ref) -> dict[str, np.ndarray]:
    table = ref.read("embeddings")
    return dict(zip(table["doc_id"].to_pylist(), np.asarray(table["embedding"].to_pylist(), dtype=np.float32)))


def _purity(labels, domains) -> float:
    by_cluster: dict[int, Counter] = {}
    for label, domain in zip(labels, domains):
        by_cluster.setdefault(label, Counter())[domain] += 1
    return sum(counts.most_common(1)[0][1] for counts in by_cluster.values()) / len(domains)


@pytest.fixture(scope="module")
def two_domains() -> list[dict]:
    return _rows("code", 120) + _rows("fortunes", 120)


def test_minilm_embeddings_are_unit_norm_and_similar_texts_are_closer():
    prose = [r["text"] for r in _rows("prose", 3)]
    edited = prose[0].replace("the", "a", 3) + " This paragraph was lightly edited."
    fortune = _rows("fortunes", 1)[0]["text"]
    texts = [prose[0], edited, fortune, prose[1]]
    cfg = EmbeddingConfig(max_tokens=128, batch_size=2, device="cpu")
    vectors = minilm_embed(texts, cfg, threads=1)
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cos = vectors @ vectors.T
    assert cos[0, 1] > 0.9
    assert cos[0, 1] > cos[0, 3] > cos[0, 2]  # near-copy > same-domain prose > unrelated fortune
    # batching sorts by length: the order of the inputs does not change a document's vector
    reordered = minilm_embed(texts[::-1], cfg, threads=1)[::-1]
    np.testing.assert_allclose(reordered, vectors, atol=1e-5)


def test_bad_model_path_says_what_to_change(tmp_path):
    (tmp_path / "not-a-model").mkdir()
    cfg = EmbeddingConfig(model_path=str(tmp_path / "not-a-model"))
    with pytest.raises(EmbeddingError, match="model_path .* does not load"):
        minilm_embed(["some text"], cfg)


def test_minilm_stage_writes_fixed_size_embeddings(tmp_path):
    store = ArtifactStore(tmp_path)
    pool = _pool(store, _rows("fortunes", 12), "fortunes")
    cfg = EmbeddingConfig(max_tokens=64)
    assert embedding_basis_stage(store, [pool], cfg) is None
    ref = embed_stage(store, pool, cfg, None)
    table = ref.read("embeddings")
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    assert table["doc_id"].to_pylist() == pool.read("docs")["doc_id"].to_pylist()
    stats = ref.manifest()["stats"]
    assert stats["docs"] == 12 and stats["dim"] == 384 and stats["device"] == "cpu" and stats["docs_per_s"] > 0
    # The same documents in another artifact (e.g. a re-deduplicated shard of a grown corpus) reuse the embeddings.
    same_docs = _pool(store, _rows("fortunes", 12), "fortunes again")
    assert same_docs.key != pool.key and embed_stage(store, same_docs, cfg, None).key == ref.key


def test_tfidf_basis_is_shared_and_shard_split_does_not_change_embeddings(tmp_path, two_domains):
    store = ArtifactStore(tmp_path)
    whole = _pool(store, two_domains, "whole")
    halves = [_pool(store, two_domains[0::2], "even"), _pool(store, two_domains[1::2], "odd")]
    basis = embedding_basis_stage(store, [whole], TFIDF)
    assert basis.manifest()["stats"]["sample_docs"] == 240
    basis_arrays = cluster_stages.load_basis(basis)
    assert len(basis_arrays.columns) == 2000 and basis_arrays.components.shape == (32, 2000)  # max_features binds
    one = _embeddings(embed_stage(store, whole, TFIDF, basis))
    two = {**_embeddings(embed_stage(store, halves[0], TFIDF, basis)),
           **_embeddings(embed_stage(store, halves[1], TFIDF, basis))}
    assert one.keys() == two.keys() and len(one) == 240
    for doc_id, vector in one.items():
        np.testing.assert_array_equal(vector, two[doc_id])
    norms = np.linalg.norm(np.stack(list(one.values())), axis=1)
    assert np.allclose(norms[norms > 0], 1.0, atol=1e-5) and (norms > 0).mean() > 0.95
    # fitting again on the same pool (another store) gives the same basis
    again = embedding_basis_stage(ArtifactStore(tmp_path / "other"), [whole], TFIDF)
    assert again.key == basis.key
    a, b = (np.load(f"{ref.path}/{cluster_stages.BASIS_FILE}") for ref in (basis, again))
    np.testing.assert_array_equal(a["components"], b["components"])
    with pytest.raises(EmbeddingError, match="needs the shared basis"):
        embed_stage(store, whole, TFIDF, None)
    with pytest.raises(EmbeddingError, match="lower embedding.dim"):
        embedding_basis_stage(store, [halves[0]], TFIDF.model_copy(update={"dim": 120}))


def test_clusters_separate_domains_and_tables_are_consistent(tmp_path, two_domains):
    store = ArtifactStore(tmp_path)
    pool = _pool(store, two_domains, "pool")
    embeddings = embed_stage(store, pool, TFIDF, embedding_basis_stage(store, [pool], TFIDF))
    cfg = ClusterConfig(embedding=TFIDF, k=4, batch_size=256, n_init=3, neighbour_distance=0.9, seed=0)
    ref = cluster_stage(store, [embeddings], cfg)

    assignments = ref.read("assignments").to_pylist()
    domain = {r["doc_id"]: r["domain"] for r in two_domains}
    assert sorted(a["doc_id"] for a in assignments) == sorted(domain)
    assert _purity([a["cluster"] for a in assignments], [domain[a["doc_id"]] for a in assignments]) >= 0.9

    clusters = ref.read("clusters").to_pylist()
    centroids = np.asarray([c["centroid"] for c in clusters], dtype=np.float32)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    assert sum(c["size"] for c in clusters) == 240 and all(c["size"] == c["kept"] for c in clusters)
    vectors = _embeddings(embeddings)
    for a in assignments[:20]:
        assert a["distance"] == pytest.approx(1 - vectors[a["doc_id"]] @ centroids[a["cluster"]], abs=1e-5)

    distances = np.load(f"{ref.path}/{CENTROID_DISTANCES_FILE}")
    assert distances.shape == (4, 4) and np.allclose(distances, distances.T) and np.all(np.diag(distances) == 0)
    # a threshold between the centroid distances: some pairs are neighbours, some not; the rest of the key is equal
    threshold = float(np.median(distances[~np.eye(4, dtype=bool)]))
    neighbours = cluster_stage(store, [embeddings], cfg.model_copy(update={"neighbour_distance": threshold}))
    np.testing.assert_array_equal(np.load(f"{neighbours.path}/{CENTROID_DISTANCES_FILE}"), distances)
    pairs = {(n["cluster"], n["neighbour"]): n["distance"] for n in neighbours.read("neighbours").to_pylist()}
    expected = {(i, j) for i in range(4) for j in range(4) if distances[i, j] < threshold}
    assert set(pairs) == expected and {(i, i) for i in range(4)} <= expected and 4 < len(expected) < 16
    assert all(pairs[i, j] == pytest.approx(distances[i, j]) for i, j in expected)

    decisions = ref.read("decisions")
    assert decisions.schema == DECISIONS and decisions.num_rows == 240
    assert set(decisions["decision"].to_pylist()) == {"kept"} and set(decisions["stage"].to_pylist()) == {"cluster"}
    first = decisions.to_pylist()[0]
    assert first["group"].startswith("cluster ") and " of 4 (cosine distance " in first["reason"]
    stats = ref.manifest()["stats"]
    assert stats["docs_in"] == stats["docs_out"] == 240 and stats["dropped"] == 0 and stats["k"] == 4
    assert kept_doc_ids(ref) == set(domain)


def test_minilm_clusters_separate_domains(tmp_path):
    rows = _rows("code", 30) + _rows("fortunes", 30) + _rows("dictionary", 30)
    store = ArtifactStore(tmp_path)
    pool = _pool(store, rows, "pool")
    embeddings = embed_stage(store, pool, EmbeddingConfig(max_tokens=64), None)
    ref = cluster_stage(store, [embeddings], ClusterConfig(k=3, n_init=3, seed=0))
    assignments = ref.read("assignments").to_pylist()
    domain = {r["doc_id"]: r["domain"] for r in rows}
    assert _purity([a["cluster"] for a in assignments], [domain[a["doc_id"]] for a in assignments]) >= 0.9


def test_semdedup_drops_an_edited_near_copy_and_records_its_keeper(tmp_path):
    rows = _rows("prose", 60) + _rows("fortunes", 60)
    original = rows[5]
    copy = {**original, "doc_id": "prose-copy", "line": 999,
            "text": original["text"].replace("The ", "A ", 2) + "\nEdited for this test."}
    store = ArtifactStore(tmp_path)
    pool = _pool(store, rows + [copy], "pool")
    embeddings = embed_stage(store, pool, TFIDF, embedding_basis_stage(store, [pool], TFIDF))
    cfg = ClusterConfig(embedding=TFIDF, k=4, seed=0, semdedup=SemDedupConfig(enabled=True, threshold=0.95))
    ref = cluster_stage(store, [embeddings], cfg)

    decisions = {d["doc_id"]: d for d in ref.read("decisions").to_pylist()}
    pair = {original["doc_id"], "prose-copy"}
    dropped = {doc for doc, d in decisions.items() if d["decision"] == "dropped"}
    assert len(dropped & pair) == 1
    loser = (dropped & pair).pop()
    assert decisions[loser]["ref_doc_id"] == (pair - {loser}).pop()
    assert decisions[loser]["score"] > 0.95 and "semantic duplicate in cluster" in decisions[loser]["reason"]
    assert decisions[loser]["ref_doc_id"] in decisions[loser]["reason"]
    kept = kept_doc_ids(ref)
    assert loser not in kept and len(kept) == 121 - len(dropped)
    assert all(decisions[d]["ref_doc_id"] in kept for d in dropped)
    stats = ref.manifest()["stats"]
    assert stats["dropped"] == len(dropped) and stats["docs_out"] == len(kept)
    assert sum(c["kept"] for c in ref.read("clusters").to_pylist()) == len(kept)


def test_semantic_dedup_keeps_nearest_to_centroid_and_compares_only_with_kept():
    # a ~ b (0.96), b ~ c (0.96), a vs c below 0.95: greedy keeps a (nearest centroid), drops b, keeps c
    angle = np.arccos(0.96)
    vectors = np.array([[np.cos(t), np.sin(t)] for t in (0.0, angle, 2 * angle)], dtype=np.float32)
    result = semantic_dedup(vectors, np.zeros(3, np.int32), np.array([0.1, 0.2, 0.3]), ["a", "b", "c"], 0.95)
    assert result.keeper.tolist() == [-1, 0, -1]
    assert result.cosine[1] == pytest.approx(0.96, abs=1e-5)
    # ties in distance are broken by doc_id; different clusters are never compared
    same = np.array([[1.0, 0.0]] * 3, dtype=np.float32)
    result = semantic_dedup(same, np.array([0, 0, 1]), np.zeros(3), ["z", "y", "x"], 0.95)
    assert result.keeper.tolist() == [1, -1, -1]


def test_cluster_stage_is_cached_and_errors_name_the_setting(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    pool = _pool(store, _rows("fortunes", 40) + _rows("code", 40), "pool")
    embeddings = embed_stage(store, pool, TFIDF, embedding_basis_stage(store, [pool], TFIDF))
    cfg = ClusterConfig(embedding=TFIDF, k=2, seed=0)
    first = cluster_stage(store, [embeddings], cfg)

    def fail(*args, **kwargs):
        raise AssertionError("recomputed a cached clustering")

    monkeypatch.setattr(cluster_stages, "spherical_kmeans", fail)
    assert cluster_stage(store, [embeddings], cfg) == first
    # an embedding setting that does not change the vectors does not change the clustering key
    assert cluster_stage(store, [embeddings], cfg.model_copy(update={"embedding": EmbeddingConfig()})) == first
    with pytest.raises(AssertionError, match="recomputed"):
        cluster_stage(store, [embeddings], cfg.model_copy(update={"seed": 1}))
    monkeypatch.undo()
    with pytest.raises(ClusterError, match=r"cluster.k=81 is more than the 80 documents"):
        cluster_stage(store, [embeddings], ClusterConfig(embedding=TFIDF, k=81))


def test_torch_threads_follow_the_dask_worker():
    from distributed import Client, LocalCluster

    from selectflow.cluster.embed import worker_threads

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            assert client.submit(worker_threads).result() == 1


@pytest.mark.gpu
def test_cuda_float16_embeddings_match_cpu():
    texts = [r["text"] for r in _rows("prose", 20) + _rows("code", 20)]
    cpu = minilm_embed(texts, EmbeddingConfig(max_tokens=128, device="cpu"), threads=1)
    cuda = minilm_embed(texts, EmbeddingConfig(max_tokens=128, device="cuda"))
    assert (cpu * cuda).sum(1).min() > 0.999

