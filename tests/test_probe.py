import math

import numpy as np
import pyarrow as pa
import pytest
from conftest import sample_records

from selectflow.config import ProbeConfig, ProbeModelConfig
from selectflow.probe import learning_speed, load_tokenizer, pack_eval, pack_train, tiny_llama, train_probe
from selectflow.schema import DOCS
from selectflow.stages.probe import full_pool_stage, probe_stage
from selectflow.store import ArtifactStore

TINY = dict(model=ProbeModelConfig(hidden=32, layers=1, heads=2, intermediate=64, seq_len=32), batch_size=4,
            tokens=2048, eval_every=4, eval_tokens=512, learning_rate=1e-2, cpu_threads=1,
            device="cpu")


def _texts(name: str, limit: int) -> list[str]:
    return [r.get("text") or "\n\n".join(t["value"] for t in r["conversations"]) for r in sample_records(name, limit)]


def _docs(texts: list[str], tag: str) -> pa.Table:
    rows = [{"doc_id": f"{tag}-{i}", "source": f"test://{tag}", "line": i + 1, "domain": tag, "text": text,
             "content_hash": f"{tag}-{i}", "n_bytes": len(text.encode()), "record": None}
            for i, text in enumerate(texts)]
    return pa.Table.from_pylist(rows, schema=DOCS)


def _subset(store: ArtifactStore, texts: list[str], tag: str):
    return [store.build("test_docs", {"tag": tag, "n": len(texts)}, [], "test",
                        lambda writer: writer.write("docs", _docs(texts, tag)))]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def heldout():
    return _docs(_texts("reference.jsonl.zst", 40), "ref"), _docs(_texts("unseen.jsonl.zst", 20), "unseen")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return ArtifactStore(tmp_path_factory.mktemp("probe-store"))


def test_token_bytes_sum_to_utf8_bytes(tokenizer):
    texts = _texts("prose.jsonl.zst", 5) + ["naïve café — ünïcödé 💡 and tabs\t"]
    for text, ids in zip(texts, tokenizer.encode_batch(texts)):
        assert int(tokenizer.token_bytes[ids].sum()) == len(text.encode("utf-8"))
    assert tokenizer.token_bytes[tokenizer.separator_id] == 0


def test_equal_budget_across_subsets_and_short_subsets(tokenizer):
    cfg = ProbeConfig(**TINY)
    seq, batch = cfg.model.seq_len, cfg.batch_size
    big = pack_train(_texts("prose.jsonl.zst", 50), tokenizer, 2000, seq, batch, seed=0)
    small = pack_train(_texts("fortunes.jsonl.zst", 8), tokenizer, 2000, seq, batch, seed=0)
    # 2000 tokens round down to whole batches of 4 x 32: 15 batches = 1920 tokens for both
    assert big.blocks.shape == small.blocks.shape == (60, 32)
    assert big.epochs == 1.0 and big.unique_blocks == 60
    assert small.unique_blocks < 60 and small.epochs > 1.0  # repeated, and the first epoch is its unique blocks
    assert {tuple(b) for b in small.blocks} == {tuple(b) for b in small.blocks[: small.unique_blocks]}
    with pytest.raises(ValueError, match="short_subset='repeat'"):
        pack_train(_texts("fortunes.jsonl.zst", 8), tokenizer, 2000, seq, batch, seed=0, short_subset="error")
    with pytest.raises(ValueError, match="less than one batch"):
        pack_train(_texts("prose.jsonl.zst", 5), tokenizer, 100, seq, batch, seed=0)
    with pytest.raises(ValueError, match="no documents"):
        pack_train([], tokenizer, 2000, seq, batch, seed=0)
    # the texts as trained hold exactly the epoch's tokens: re-tokenized, they give the same stream
    stream = [t for ids in tokenizer.encode_batch(big.texts_used) for t in [*ids, tokenizer.separator_id]]
    assert sorted(map(tuple, np.array(stream[: big.tokens]).reshape(60, 32))) == sorted(map(tuple, big.blocks))


def test_deterministic_on_cpu_and_prequential_code_length(tokenizer):
    cfg = ProbeConfig(**TINY)
    train = pack_train(_texts("prose.jsonl.zst", 40), tokenizer, cfg.tokens, 32, 4, seed=0)
    held = {"reference": pack_eval(_texts("reference.jsonl.zst", 20), tokenizer, 256, 32, "reference")}
    first = train_probe(train, held, tokenizer, cfg)
    second = train_probe(train, held, tokenizer, cfg)
    assert first.curve == second.curve
    assert len(first.curve) == 1 + 16
    trained = first.curve[1:]
    assert trained[-1]["train_loss"] < trained[0]["train_loss"]
    # prequential code length = Σ step loss in bits / Σ step bytes, bytes = UTF-8 bytes of the predicted tokens
    for step, row in enumerate(trained):
        block = train.blocks[step * 4:(step + 1) * 4]
        assert row["train_bytes"] == int(tokenizer.token_bytes[block[:, 1:]].sum())
        assert row["train_nats"] == pytest.approx(row["train_loss"] * 4 * 31)
    manual = sum(r["train_loss"] * 124 for r in trained) / math.log(2) / sum(r["train_bytes"] for r in trained)
    assert first.metrics["prequential_bpb"] == pytest.approx(manual, rel=1e-9)
    assert first.metrics["first_epoch_loss"] == pytest.approx(np.mean([r["train_loss"] for r in trained]))


def test_redundant_subset_learned_faster_with_higher_ratio(store, heldout):
    cfg = ProbeConfig(**TINY)
    diverse = _texts("fortunes.jsonl.zst", 200)
    redundant = _texts("fortunes.jsonl.zst", 5) * 40  # the same five fortunes over and over
    results = {}
    for name, texts in (("diverse", diverse), ("redundant", redundant)):
        ref = probe_stage(store, name, _subset(store, texts, name), heldout[0], heldout[1], cfg)
        results[name] = ref
    diverse_stats, redundant_stats = (results[n].manifest()["stats"] for n in ("diverse", "redundant"))
    assert diverse_stats["tokens"] == redundant_stats["tokens"] == 2048
    assert redundant_stats["R_zlib"] > diverse_stats["R_zlib"] and redundant_stats["R_zstd"] > diverse_stats["R_zstd"]
    assert redundant_stats["first_epoch_loss"] < diverse_stats["first_epoch_loss"]
    assert redundant_stats["prequential_bpb"] < diverse_stats["prequential_bpb"]
    for stats in (diverse_stats, redundant_stats):
        for held in ("reference", "unseen"):
            assert stats[f"{held}_loss"] < stats[f"{held}_initial_loss"]
            assert 0 < stats[f"{held}_bpb"] < 20
    # every compared subset starts from the same model on the same held-out blocks: one shared level
    curves = {}
    for name, ref in results.items():
        curve = ref.read("curve").to_pylist()
        evaluated = [r for r in curve if r["reference_loss"] is not None]
        curves[name] = ([r["step"] for r in evaluated], [r["reference_loss"] for r in evaluated])
    assert curves["diverse"][1][0] == curves["redundant"][1][0]
    level, steps = learning_speed(curves, fraction=0.5)
    initial, best = curves["diverse"][1][0], min(c[1][-1] for c in curves.values())
    assert level == pytest.approx(initial - 0.5 * (initial - best))
    best_name = min(curves, key=lambda n: curves[n][1][-1])
    assert steps[best_name] is not None and 0 < steps[best_name] <= 16
    # decisions: every document of the subset, trained on or beyond the budget
    decisions = results["diverse"].read("decisions")
    assert decisions.num_rows == 200 and set(decisions["decision"].to_pylist()) <= {"kept", "dropped"}
    assert decisions["decision"].to_pylist().count("kept") == diverse_stats["docs_used"]
    # a configured absolute level is reported per run
    with_level = probe_stage(store, "diverse", _subset(store, diverse, "diverse"), heldout[0], heldout[1],
                             ProbeConfig(**TINY, speed_level=level))
    assert with_level.manifest()["stats"]["steps_to_level"] == steps["diverse"]


def test_full_pool_sample_covers_the_budget(store, tokenizer):
    cfg = ProbeConfig(**TINY)
    pool = _subset(store, _texts("dictionary.jsonl.zst", 300), "pool")
    full = full_pool_stage(store, pool, cfg)
    docs = full.read("docs")
    ids = tokenizer.encode_batch(docs["text"].to_pylist())
    tokens = sum(len(i) + 1 for i in ids)
    assert tokens >= 2048 and tokens - (len(ids[-1]) + 1) < 2048  # the sample just covers the budget
    assert full.read("decisions").num_rows == 300
    assert full_pool_stage(store, pool, cfg) == full  # seeded and cached
    assert full_pool_stage(store, pool, ProbeConfig(**TINY, seed=1)).read("docs")["doc_id"] != docs["doc_id"]


def test_clear_errors(store, heldout, tmp_path):
    cfg = ProbeConfig(**TINY)
    with pytest.raises(ValueError, match="subset 'nothing' is empty"):
        probe_stage(store, "nothing", _subset(store, [], "empty"), heldout[0], heldout[1], cfg)
    bad = ProbeConfig(**TINY, init_checkpoint=str(tmp_path / "missing"), tokenizer_path=None)
    with pytest.raises(FileNotFoundError, match="init_checkpoint .* is not a local folder"):
        probe_stage(store, "bad", _subset(store, ["some text " * 50], "bad"), heldout[0], heldout[1], bad)
    with pytest.raises(FileNotFoundError, match="tokenizer not found"):
        load_tokenizer(str(tmp_path / "no-tokenizer"))
    (tmp_path / "notamodel").mkdir()
    from selectflow.probe.model import load_checkpoint
    with pytest.raises(FileNotFoundError, match=r"init_checkpoint .*\(no config.json\)"):
        load_checkpoint(str(tmp_path / "notamodel"), 100)
    with pytest.raises(ValueError, match="multiple of heads"):
        ProbeModelConfig(hidden=30, heads=4)


def test_continue_from_local_checkpoint(tokenizer, tmp_path):
    cfg = ProbeConfig(**{**TINY, "tokens": 256, "eval_every": 100})
    folder = tmp_path / "ckpt"
    tiny_llama(cfg.model, tokenizer.vocab_size, seed=7).save_pretrained(folder)
    train = pack_train(_texts("prose.jsonl.zst", 10), tokenizer, 256, 32, 4, seed=0)
    held = {"reference": pack_eval(_texts("reference.jsonl.zst", 10), tokenizer, 128, 32, "reference")}
    fresh7 = train_probe(train, held, tokenizer, ProbeConfig(**{**TINY, "tokens": 256, "seed": 0}))
    resumed = train_probe(train, held, tokenizer, cfg.model_copy(update={"init_checkpoint": str(folder)}))
    # the checkpoint's weights (seed 7), not a fresh seed-0 model, are evaluated at step 0
    expected = train_probe(train, held, tokenizer, cfg.model_copy(update={"seed": 7}))
    assert resumed.curve[0]["reference_loss"] == pytest.approx(expected.curve[0]["reference_loss"], rel=1e-6)
    assert resumed.curve[0]["reference_loss"] != fresh7.curve[0]["reference_loss"]


@pytest.mark.gpu
def test_cuda_bfloat16_probe_learns_like_cpu(tokenizer):
    train = pack_train(_texts("prose.jsonl.zst", 40), tokenizer, 2048, 32, 4, seed=0)
    held = {"reference": pack_eval(_texts("reference.jsonl.zst", 20), tokenizer, 256, 32, "reference")}
    cpu = train_probe(train, held, tokenizer, ProbeConfig(**TINY))
    cuda = train_probe(train, held, tokenizer, ProbeConfig(**TINY | {"device": "cuda"}))
    assert len(cuda.curve) == len(cpu.curve)
    for key in ("first_epoch_loss", "prequential_bpb"):
        assert cuda.metrics[key] == pytest.approx(cpu.metrics[key], rel=0.05), key
    assert cuda.curve[0]["train_loss"] == pytest.approx(cpu.curve[0]["train_loss"], rel=0.01)  # same init

