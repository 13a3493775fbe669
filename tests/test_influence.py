"""Influence scoring: hook gradients, EK-FAC inverse, agreement with the exact damped Gauss-Newton inverse,
chunking, persistence, the artifact stage and the errors users hit."""

from __future__ import annotations

import copy
import os
import shutil

import numpy as np
import pyarrow as pa
import pytest
import torch
from scipy.stats import spearmanr

from selectflow.config import InfluenceConfig
from selectflow.influence import InfluenceError, InfluenceScorer, chunk_token_ids
from selectflow.influence.exact import layer_gradients
from selectflow.influence.model import freeze, model_fingerprint
from selectflow.stages.influence import fit_key, influence_reference_stage, load_scorer
from selectflow.store import ArtifactStore

os.environ.setdefault("HF_HUB_OFFLINE", "1")
VOCAB = 32
T = 16


def markov_chain(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.full(VOCAB, 0.1), size=VOCAB).cumsum(1)


def sample_sequences(cumulative: np.ndarray, n: int, length: int, rng: np.random.Generator) -> list[list[int]]:
    tokens = np.empty((n, length), dtype=np.int64)
    tokens[:, 0] = rng.integers(VOCAB, size=n)
    for t in range(1, length):
        tokens[:, t] = np.minimum((cumulative[tokens[:, t - 1]] < rng.random(n)[:, None]).sum(1), VOCAB - 1)
    return tokens.tolist()


def tiny_llama(hidden: int = 16, layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def world():
    """A tiny Llama trained 30 steps on two Markov 'languages' A and B; the reference set is language A."""
    rng = np.random.default_rng(0)
    lang_a, lang_b = markov_chain(1), markov_chain(2)
    model = tiny_llama()
    train = sample_sequences(lang_a, 128, T, rng) + sample_sequences(lang_b, 128, T, rng)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(30):
        ids = torch.tensor([train[i] for i in rng.integers(0, len(train), 32)])
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {
        "model": freeze(model),
        "reference": sample_sequences(lang_a, 256, T, rng),
        "docs_a": sample_sequences(lang_a, 30, T, rng),
        "docs_b": sample_sequences(lang_b, 30, T, rng),
    }


def exact_cfg(**overrides) -> InfluenceConfig:
    """No projection: scores are exact EK-FAC influence."""
    values = dict(max_tokens=T, projection_dim=None, normalize=False, damping=0.1, curvature_samples=10_000,
                  batch_size=64, device="cpu", dtype="float32")
    return InfluenceConfig(**(values | overrides))


def test_hook_gradients_equal_per_example_autograd(world):
    rng = np.random.default_rng(3)
    chunks = [world["docs_a"][i][: int(rng.integers(3, T + 1))] for i in range(9)]  # ragged: padding in batches
    scorer = InfluenceScorer(exact_cfg(batch_size=4), model=world["model"])
    batched = scorer.chunk_vectors(chunks)
    for row, chunk in enumerate(chunks):
        grads = layer_gradients(world["model"], scorer.layers, chunk)
        expected = torch.cat([grads[name].flatten() for name in scorer.layers])
        torch.testing.assert_close(batched[row], expected, rtol=1e-4, atol=1e-7)


def _exact_inputs(world, scorer):
    reference = scorer.chunk_vectors(world["reference"]).double()
    docs = world["docs_a"] + world["docs_b"]
    return reference, scorer.chunk_vectors(docs).double(), docs


def test_ihvp_divides_by_damped_corrected_eigenvalues(world):
    """Scores equal ḡ_refᵀ (Q diag(Λ) Qᵀ + λI)⁻¹ g with the explicit Kronecker eigenbasis Q = Q_S ⊗ Q_A."""
    scorer = InfluenceScorer(exact_cfg(), model=world["model"]).fit_token_ids(world["reference"])
    reference, docs_matrix, docs = _exact_inputs(world, scorer)
    blocks, damping = [], []
    for layer in scorer.curvature.values():
        basis = torch.kron(layer.q_s.double(), layer.q_a.double())
        blocks.append(basis @ torch.diag(layer.eigenvalues.double().flatten()) @ basis.T)
        damping += [layer.damping] * basis.shape[0]
    explicit = torch.block_diag(*blocks) + torch.diag(torch.tensor(damping, dtype=torch.float64))
    expected = docs_matrix @ torch.linalg.solve(explicit, reference.mean(0))
    np.testing.assert_allclose(scorer.score_token_ids(docs), expected.numpy(), rtol=1e-3, atol=1e-4 * expected.abs().max())


@pytest.mark.parametrize("damping", [0.01, 0.1])
def test_spearman_against_exact_damped_gauss_newton_inverse(world, damping):
    """Exact: empirical Fisher (Gauss-Newton with observed tokens) of the chosen layers, block-diagonal per layer,
    damped by damping · tr(F_l)/P_l, solved densely."""
    scorer = InfluenceScorer(exact_cfg(damping=damping), model=world["model"]).fit_token_ids(world["reference"])
    reference, docs_matrix, docs = _exact_inputs(world, scorer)
    fisher = reference.T @ reference / reference.shape[0]
    solved, offset = [], 0
    for layer in scorer.layers.values():
        span = slice(offset, offset + layer.weight.numel())
        block = fisher[span, span]
        damped = block + damping * block.diagonal().mean() * torch.eye(block.shape[0], dtype=torch.float64)
        solved.append(torch.linalg.solve(damped, reference.mean(0)[span]))
        offset = span.stop
    exact = (docs_matrix @ torch.cat(solved)).numpy()
    ours = scorer.score_token_ids(docs)
    plain = (docs_matrix @ reference.mean(0)).numpy()  # no curvature: what the inverse must improve on
    assert spearmanr(ours, exact)[0] >= 0.9
    assert spearmanr(ours, exact)[0] > spearmanr(plain, exact)[0] + 0.1


def test_full_space_reference_vectors_project_to_the_fitted_ones(world):
    """reference_vectors(projected=False) is the layer-space iHVP that fit projects: P_g (H⁻¹G) P_aᵀ per layer."""
    cfg = exact_cfg(projection_dim=8, normalize=False, curvature_samples=64)
    scorer = InfluenceScorer(cfg, model=world["model"]).fit_token_ids(world["reference"][:32])
    chunks = scorer.reference_chunks(world["reference"][:32])
    full, projected = scorer.reference_vectors(chunks, projected=False), scorer.reference_vectors(chunks)
    assert full.shape[1] == sum(layer.weight.numel() for layer in scorer.layers.values())
    blocks = [scorer.projections[name].project_matrix(block).flatten(1)
              for name, block in scorer.split_layers(full, projected=False).items()]
    torch.testing.assert_close(torch.cat(blocks, dim=1), projected, rtol=1e-3, atol=1e-4 * projected.abs().max())
    torch.testing.assert_close(projected.mean(0), scorer.reference)
    with pytest.raises(InfluenceError, match="no curvature"):
        InfluenceScorer(cfg, model=world["model"]).reference_vectors(chunks)


@pytest.mark.parametrize("normalize", [False, True])
def test_exact_mode_equals_projection_wider_than_every_layer(world, normalize):
    """Exact mode averages the reference in the eigenbasis; a projection_dim above every width (identity
    projections) goes through the per-chunk reference vectors instead: both must give the same scores."""
    docs = world["docs_a"][:10] + world["docs_b"][:10]
    scores = [InfluenceScorer(exact_cfg(projection_dim=dim, normalize=normalize, curvature_samples=64),
                              model=world["model"]).fit_token_ids(world["reference"][:64]).score_token_ids(docs)
              for dim in (None, 64)]
    np.testing.assert_allclose(scores[0], scores[1], rtol=1e-4, atol=1e-6 * np.abs(scores[1]).max())


def test_reference_like_documents_score_higher(world):
    cfg = exact_cfg(projection_dim=8, normalize=True, damping=1e-3, curvature_samples=128)  # real projection
    scorer = InfluenceScorer(cfg, model=world["model"]).fit_token_ids(world["reference"])
    like, unlike = scorer.score_token_ids(world["docs_a"]), scorer.score_token_ids(world["docs_b"])
    assert like.mean() > 0 > unlike.mean()
    assert (like[:, None] > unlike[None, :]).mean() > 0.6  # AUC (0.64 measured; docs of both languages overlap)
    assert np.all(np.abs(np.concatenate([like, unlike])) <= 1.0 + 1e-6)  # cosines averaged: bounded by 1


def test_chunking_rules():
    ids = list(range(50))
    assert chunk_token_ids(ids, 16, 10, 8) == [ids[0:16], ids[16:32], ids[32:48]]  # 2-token tail dropped
    assert chunk_token_ids(ids, 16, 2, 8) == [ids[0:16], ids[16:32]]
    assert chunk_token_ids(ids[:5], 16, 4, 8) == [ids[:5]]  # a document's only chunk is kept however short
    assert chunk_token_ids([7], 16, 4, 1) == []  # no next-token loss


def test_document_score_is_mean_of_its_chunk_scores(world):
    cfg = exact_cfg(max_tokens=8, max_chunks=4, min_chunk_tokens=4, projection_dim=8, normalize=True)
    scorer = InfluenceScorer(cfg, model=world["model"]).fit_token_ids(world["reference"][:64])
    long_doc = world["docs_a"][0] + world["docs_b"][0][:10]  # 26 tokens: chunks 8, 8, 8, 2 -> the 2 is dropped
    parts = [long_doc[0:8], long_doc[8:16], long_doc[16:24]]
    scores = scorer.score_token_ids([long_doc, *parts, [5]])
    assert scores[0] == pytest.approx(np.mean(scores[1:4]), rel=1e-5)
    assert scores[4] == 0.0


@pytest.mark.parametrize("projection_dim", [8, None])  # None: exact, the projections are identities
def test_save_load_round_trip_gives_identical_scores(world, tmp_path, projection_dim):
    cfg = exact_cfg(projection_dim=projection_dim, normalize=True, curvature_samples=64)
    scorer = InfluenceScorer(cfg, model=world["model"]).fit_token_ids(world["reference"][:96])
    docs = world["docs_a"][:5] + world["docs_b"][:5]
    scorer.save(tmp_path / "state.safetensors")
    loaded = InfluenceScorer.load(tmp_path / "state.safetensors", cfg.model_copy(update={"batch_size": 3}), world["model"])
    np.testing.assert_array_equal(loaded.score_token_ids(docs), scorer.score_token_ids(docs))
    with pytest.raises(InfluenceError, match=f"projection_dim: fitted {projection_dim}, now 16"):
        InfluenceScorer.load(tmp_path / "state.safetensors", cfg.model_copy(update={"projection_dim": 16}), world["model"])


def test_bfloat16_autocast_agrees_with_float32(world):
    cfg = exact_cfg(projection_dim=8, normalize=True, curvature_samples=128)
    docs = world["docs_a"][:15] + world["docs_b"][:15]
    full = InfluenceScorer(cfg, model=world["model"]).fit_token_ids(world["reference"][:128]).score_token_ids(docs)
    half_cfg = cfg.model_copy(update={"dtype": "bfloat16"})
    half = InfluenceScorer(half_cfg, model=world["model"]).fit_token_ids(world["reference"][:128]).score_token_ids(docs)
    assert spearmanr(full, half)[0] >= 0.9
    assert np.abs(full - half).max() < 0.1


@pytest.mark.gpu
@pytest.mark.parametrize("projection_dim", [None, 8])
def test_cuda_scores_match_cpu(world, projection_dim):
    cfg = exact_cfg(projection_dim=projection_dim, normalize=True, curvature_samples=128)
    docs = world["docs_a"][:15] + world["docs_b"][:15]

    def scores(**overrides):
        scorer = InfluenceScorer(cfg.model_copy(update=overrides), model=copy.deepcopy(world["model"]))
        return scorer.fit_token_ids(world["reference"][:128]).score_token_ids(docs)

    cpu = scores()
    np.testing.assert_allclose(scores(device="cuda"), cpu, rtol=1e-3, atol=1e-4 * np.abs(cpu).max())
    half = scores(device="cuda", dtype="auto")  # auto = bfloat16 autocast on CUDA
    assert spearmanr(cpu, half)[0] >= 0.9
    assert np.abs(cpu - half).max() < 0.1


def test_errors_say_what_to_change(world, tmp_path):
    scorer = InfluenceScorer(exact_cfg(), model=world["model"])
    with pytest.raises(InfluenceError, match="reference set is empty"):
        scorer.fit([])
    with pytest.raises(InfluenceError, match="no text of >= 2 tokens"):
        scorer.fit_token_ids([[3], []])
    with pytest.raises(InfluenceError, match="not fitted"):
        scorer.score_token_ids([[1, 2, 3]])
    with pytest.raises(InfluenceError, match=r"max_tokens=128 exceeds the model's context \(64 positions\)"):
        InfluenceScorer(exact_cfg(max_tokens=128), model=world["model"])
    with pytest.raises(InfluenceError, match="neither a .gguf file nor a folder with config.json"):
        InfluenceScorer(exact_cfg(model_path=str(tmp_path / "missing")))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    with pytest.raises(InfluenceError, match="could not load a causal LM"):
        InfluenceScorer(exact_cfg(model_path=str(tmp_path / "broken")))


class WordTokenizer:
    """Minimal tokenizer: the scorer only needs `tokenizer(texts, add_special_tokens=False)["input_ids"]`."""

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[int(word) % VOCAB for word in text.split()] for text in texts]}


def test_stage_builds_a_cached_artifact_that_scores_like_the_scorer(world, tmp_path):
    as_text = lambda seqs: [" ".join(map(str, seq)) for seq in seqs]  # noqa: E731
    reference = pa.table({"text": as_text(world["reference"][:96])})
    cfg = exact_cfg(projection_dim=8, normalize=True, curvature_samples=64)
    store = ArtifactStore(tmp_path / "ws")
    ref = influence_reference_stage(store, reference, cfg, model=world["model"], tokenizer=WordTokenizer())
    stats = ref.manifest()["stats"]
    assert stats["reference_chunks"] == 96 and stats["curvature_chunks"] == 64 and stats["layers"] == 8
    assert stats["device"] == "cpu" and stats["dims"] > 0
    again = influence_reference_stage(store, reference, cfg, model=world["model"], tokenizer=WordTokenizer())
    assert again.key == ref.key
    run_settings = cfg.model_copy(update={"batch_size": 3, "device": "cpu", "dtype": "float32"})  # float32 = CPU's auto
    assert influence_reference_stage(store, reference, run_settings, model=world["model"],
                                     tokenizer=WordTokenizer()).key == ref.key  # reused, not refitted
    assert fit_key(cfg.model_copy(update={"damping": 0.5})) != fit_key(cfg)  # a fit setting: refitted
    docs = as_text(world["docs_a"][:4] + world["docs_b"][:4])
    direct = InfluenceScorer(cfg, world["model"], WordTokenizer()).fit(reference.column("text").to_pylist())
    np.testing.assert_allclose(load_scorer(ref, cfg, world["model"], WordTokenizer()).score(docs),
                               direct.score(docs), rtol=1e-5, atol=1e-7)


def test_model_is_keyed_by_content_not_path(tiny_lm, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(tiny_lm, moved)
    assert model_fingerprint(str(moved)) == model_fingerprint(str(tiny_lm))
    weights = next(path for path in moved.iterdir() if path.suffix in {".safetensors", ".bin"})
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")  # other weights under the same path
    assert model_fingerprint(str(moved)) != model_fingerprint(str(tiny_lm))
    assert fit_key(InfluenceConfig(model_path=str(tiny_lm))) != fit_key(InfluenceConfig(model_path=str(moved)))


@pytest.mark.slow
def test_smollm2_scores_sample_documents():
    from conftest import sample_records

    cfg = InfluenceConfig(max_tokens=64, max_chunks=1, curvature_samples=16, batch_size=8, device="cpu")
    reference = [r["text"] for r in sample_records("reference.jsonl.zst", 16)]
    scorer = InfluenceScorer(cfg).fit(reference)
    assert scorer.stats["layers"] == 120  # 30 blocks × q, k, v, o
    docs = [r["text"] for r in sample_records("reference.jsonl.zst", 20)[16:]]
    docs += [r["text"] for r in sample_records("fortunes.jsonl.zst", 4)]
    scores = scorer.score(docs)
    assert np.all(np.isfinite(scores)) and len(scores) == 8
    assert scores[:4].mean() > scores[4:].mean()  # held-out reference documents beat fortunes
