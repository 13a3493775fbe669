import math
import shutil

import numpy as np
import pyarrow as pa
import pytest
from conftest import sample_records
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from selectflow.config import ProbeConfig, ProbeModelConfig
from selectflow.probe import load_tokenizer, pack_eval, pack_train, tiny_llama, train_probe
from selectflow.probe.compare import learning_speeds
from selectflow.probe.data import common_budget, stream_tokens
from selectflow.probe.tokenizer import ByteTokenizer
from selectflow.probe.train import eval_steps
from selectflow.schema import DOCS
from selectflow.stages.probe import full_pool_stage, probe_stage, subset_profile
from selectflow.store import ArtifactStore

TINY = dict(model=ProbeModelConfig(hidden=32, layers=1, heads=2, intermediate=64, seq_len=32), batch_size=4,
            tokens=2048, evals=4, eval_tokens=512, learning_rate=1e-2, cpu_threads=1, device="cpu")
BUDGET = 2048  # = TINY tokens: 16 steps of 4 x 32


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
    return load_tokenizer()  # the default: UTF-8 bytes


@pytest.fixture(scope="module")
def heldout():
    return _docs(_texts("reference.jsonl.zst", 40), "ref"), _docs(_texts("unseen.jsonl.zst", 20), "unseen")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return ArtifactStore(tmp_path_factory.mktemp("probe-store"))


def test_byte_tokenizer_is_the_default(tokenizer):
    assert isinstance(tokenizer, ByteTokenizer) and tokenizer.name == "bytes"
    assert ProbeConfig().tokenizer == "bytes" and isinstance(load_tokenizer("bytes"), ByteTokenizer)
    assert tokenizer.vocab_size == 257 and tokenizer.separator_id == 256  # the separator is not a byte
    assert tokenizer.token_bytes[256] == 0 and (tokenizer.token_bytes[:256] == 1).all()
    with pytest.raises(ValueError, match="unknown kind 'sentencepiece'"):
        load_tokenizer("sentencepiece")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(), min_size=1, max_size=4))
def test_byte_tokenizer_round_trips_any_unicode(texts):
    tokenizer = ByteTokenizer()
    encoded = tokenizer.encode_batch(texts)
    for text, ids in zip(texts, encoded):
        assert tokenizer.decode(ids) == text
        assert all(0 <= i < 256 for i in ids) and tokenizer.separator_id not in ids
        assert int(tokenizer.token_bytes[ids].sum()) == len(text.encode("utf-8"))
    # a packed stream (documents + separators) decodes to the documents, the separators skipped
    stream = [t for ids in encoded for t in [*ids, tokenizer.separator_id]]
    assert tokenizer.decode(stream) == "".join(texts)
    assert stream_tokens(texts, tokenizer) == len(stream)
    assert int(tokenizer.token_bytes[stream].sum()) == sum(len(text.encode("utf-8")) for text in texts)


def test_byte_tokenizer_drops_a_character_cut_at_the_budget():
    tokenizer = ByteTokenizer()
    (ids,) = tokenizer.encode_batch(["ab€"])  # € is 3 bytes
    assert len(ids) == 5 and tokenizer.decode(ids[:4]) == "ab" and tokenizer.decode(ids[:2]) == "ab"


def test_hf_token_bytes_sum_to_utf8_bytes():
    tokenizer = load_tokenizer("hf")  # SmolLM2's, offline
    assert tokenizer.vocab_size > 10_000
    texts = _texts("prose.jsonl.zst", 5) + ["naïve café — ünïcödé 💡 and tabs\t"]
    for text, ids in zip(texts, tokenizer.encode_batch(texts)):
        assert int(tokenizer.token_bytes[ids].sum()) == len(text.encode("utf-8"))
    assert tokenizer.token_bytes[tokenizer.separator_id] == 0
    assert stream_tokens(texts, tokenizer) == sum(len(ids) + 1 for ids in tokenizer.encode_batch(texts))


def test_equal_budget_across_subsets_and_short_subsets(tokenizer):
    cfg = ProbeConfig(**TINY)
    seq, batch = cfg.model.seq_len, cfg.batch_size
    small_texts = _texts("fortunes.jsonl.zst", 5)
    assert stream_tokens(small_texts, tokenizer) < 1920
    big = pack_train(_texts("prose.jsonl.zst", 50), tokenizer, 2000, seq, batch, seed=0)
    small = pack_train(small_texts, tokenizer, 2000, seq, batch, seed=0, short_subset="repeat")
    # 2000 tokens round down to whole batches of 4 x 32: 15 batches = 1920 tokens for both
    assert big.blocks.shape == small.blocks.shape == (60, 32)
    assert big.epochs == 1.0 and big.unique_blocks == 60
    assert small.unique_blocks < 60 and small.epochs > 1.0  # repeated, and the first epoch is its unique blocks
    assert {tuple(b) for b in small.blocks} == {tuple(b) for b in small.blocks[: small.unique_blocks]}
    for refusing in ("error", "shrink"):  # with 'shrink' the flow lowers the budget first; packing never repeats
        with pytest.raises(ValueError, match="short_subset='repeat'"):
            pack_train(small_texts, tokenizer, 2000, seq, batch, seed=0, short_subset=refusing)
    with pytest.raises(ValueError, match="less than one batch"):
        pack_train(_texts("prose.jsonl.zst", 5), tokenizer, 100, seq, batch, seed=0)
    with pytest.raises(ValueError, match="no documents"):
        pack_train([], tokenizer, 2000, seq, batch, seed=0)
    # the texts as trained hold exactly the epoch's tokens: re-tokenized, they give the same stream
    stream = [t for ids in tokenizer.encode_batch(big.texts_used) for t in [*ids, tokenizer.separator_id]]
    assert sorted(map(tuple, np.array(stream[: big.tokens]).reshape(60, 32))) == sorted(map(tuple, big.blocks))


def test_shrink_rule_trains_every_subset_one_epoch_on_the_smallest(tokenizer):
    subsets = {"big": _texts("prose.jsonl.zst", 50), "mid": _texts("dictionary.jsonl.zst", 12),
               "small": _texts("fortunes.jsonl.zst", 12)}
    sizes = {name: stream_tokens(texts, tokenizer) for name, texts in subsets.items()}
    assert sizes["small"] < sizes["mid"] < 8192 < sizes["big"]
    budget, note = common_budget(8192, sizes, 4, 32)
    # the smallest subset's whole batches: less than one batch of it is left out
    assert budget % (4 * 32) == 0 and 0 <= sizes["small"] - budget < 4 * 32 + 32
    assert budget == sizes["small"] // 32 // 4 * 4 * 32
    assert "'small'" in note and f"from 8192 to {budget}" in note
    packed = {name: pack_train(texts, tokenizer, budget, 32, 4, seed=0, short_subset="shrink")
              for name, texts in subsets.items()}
    assert {p.blocks.shape for p in packed.values()} == {(budget // 32, 32)}
    assert all(p.epochs == 1.0 and p.unique_blocks == budget // 32 for p in packed.values())
    # 'repeat' at the configured budget: the small subsets go round several times, the big one once
    repeated = {name: pack_train(texts, tokenizer, 8192, 32, 4, seed=0, short_subset="repeat")
                for name, texts in subsets.items()}
    assert repeated["big"].epochs == 1.0 and repeated["small"].epochs > repeated["mid"].epochs > 1.0
    # nothing to lower when every subset holds the budget; a subset below one batch cannot be compared
    assert common_budget(1000, sizes, 4, 32) == (896, "")
    with pytest.raises(ValueError, match="'tiny' holds 100 tokens, less than one batch"):
        common_budget(8192, {**sizes, "tiny": 100}, 4, 32)


def test_eval_steps_are_evenly_spaced_and_end_at_the_last_step():
    assert eval_steps(16, 4) == {4, 8, 12, 16}
    assert eval_steps(10, 3) == {3, 7, 10}
    assert eval_steps(2, 5) == {1, 2}
    assert max(eval_steps(1000, 16)) == 1000 and len(eval_steps(1000, 16)) == 16


def test_deterministic_per_seed_on_cpu_and_prequential_code_length(tokenizer):
    cfg = ProbeConfig(**TINY)
    held = {"reference": pack_eval(_texts("reference.jsonl.zst", 20), tokenizer, 256, 32, "reference")}
    train = pack_train(_texts("prose.jsonl.zst", 40), tokenizer, cfg.tokens, 32, 4, seed=0)
    first = train_probe(train, held, tokenizer, cfg, seed=0)
    second = train_probe(train, held, tokenizer, cfg, seed=0)
    assert first.curve == second.curve  # bit-identical on CPU
    other_order = pack_train(_texts("prose.jsonl.zst", 40), tokenizer, cfg.tokens, 32, 4, seed=1)
    other = train_probe(other_order, held, tokenizer, cfg, seed=1)
    assert not np.array_equal(other_order.blocks, train.blocks)
    assert other.curve[0]["reference_bpb"] != first.curve[0]["reference_bpb"]  # another init
    assert [r["train_loss"] for r in other.curve[1:]] != [r["train_loss"] for r in first.curve[1:]]
    assert first.metrics["seed"] == 0 and other.metrics["seed"] == 1
    assert train_probe(train, held, tokenizer, cfg).metrics["seed"] == cfg.seed  # default: the config's seed
    assert len(first.curve) == 1 + 16
    assert [r["step"] for r in first.curve if r["reference_bpb"] is not None] == [0, 4, 8, 12, 16]
    trained = first.curve[1:]
    assert trained[-1]["train_loss"] < trained[0]["train_loss"]
    # prequential code length = Σ step loss in bits / Σ step bytes; bytes = the predicted byte ids (not separators)
    for step, row in enumerate(trained):
        block = train.blocks[step * 4:(step + 1) * 4]
        assert row["train_bytes"] == int((block[:, 1:] < 256).sum())
        assert row["train_nats"] == pytest.approx(row["train_loss"] * 4 * 31)
        assert row["train_bpb"] == pytest.approx(row["train_nats"] / math.log(2) / row["train_bytes"])
    manual = sum(r["train_loss"] * 124 for r in trained) / math.log(2) / sum(r["train_bytes"] for r in trained)
    assert first.metrics["prequential_bpb"] == pytest.approx(manual, rel=1e-9)
    assert first.metrics["first_epoch_loss"] == pytest.approx(np.mean([r["train_loss"] for r in trained]))
    metrics = first.metrics
    assert metrics["reference_bpb"] == trained[-1]["reference_bpb"] < metrics["reference_initial_bpb"]
    assert metrics["reference_initial_bpb"] == first.curve[0]["reference_bpb"]
    # an untrained byte model is about uniform over 257 symbols: ~8 bits per byte
    assert 7.0 < metrics["reference_initial_bpb"] < 9.5


def test_probes_on_threads_get_their_seeds_init(tokenizer):
    """Dask thread workers train probes side by side in one process: each must still start from its seed's init
    (the pairing of subsets by seed rests on it), whatever the others do with torch's global generator."""
    import threading

    cfg = ProbeConfig(**{**TINY, "tokens": 256, "evals": 1})
    held = {"reference": pack_eval(_texts("reference.jsonl.zst", 10), tokenizer, 128, 32, "reference")}
    train = pack_train(_texts("prose.jsonl.zst", 10), tokenizer, 256, 32, 4, seed=0)
    alone = {seed: train_probe(train, held, tokenizer, cfg, seed).curve[0]["reference_bpb"] for seed in range(4)}
    assert len(set(alone.values())) == 4
    for _ in range(2):
        together = {}
        threads = [threading.Thread(target=lambda s=seed: together.__setitem__(
            s, train_probe(train, held, tokenizer, cfg, s).curve[0]["reference_bpb"])) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert together == pytest.approx(alone, rel=1e-6)


def test_redundant_subset_learned_faster_with_higher_ratio(store, heldout):
    cfg = ProbeConfig(**TINY)
    diverse = _texts("fortunes.jsonl.zst", 200)
    redundant = _texts("fortunes.jsonl.zst", 5) * 40  # the same five fortunes over and over
    results = {}
    for name, texts in (("diverse", diverse), ("redundant", redundant)):
        results[name] = probe_stage(store, name, _subset(store, texts, name), heldout[0], heldout[1], cfg, seed=0,
                                    tokens=BUDGET)
    diverse_stats, redundant_stats = (results[n].manifest()["stats"] for n in ("diverse", "redundant"))
    assert diverse_stats["tokens"] == redundant_stats["tokens"] == BUDGET
    assert diverse_stats["tokenizer"] == "bytes" and diverse_stats["seed"] == 0 and diverse_stats["epochs"] == 1.0
    assert redundant_stats["R_zlib"] > diverse_stats["R_zlib"] and redundant_stats["R_zstd"] > diverse_stats["R_zstd"]
    assert redundant_stats["prequential_bpb"] < diverse_stats["prequential_bpb"]
    for stats in (diverse_stats, redundant_stats):
        for held in ("reference", "unseen"):
            assert stats[f"{held}_bpb"] < stats[f"{held}_initial_bpb"]
            assert 0 < stats[f"{held}_bpb"] < 9
    # every subset starts from the same model (seed 0) on the same held-out blocks: one shared level
    curves = {}
    for name, ref in results.items():
        evaluated = [r for r in ref.read("curve").to_pylist() if r["reference_bpb"] is not None]
        curves[name] = {0: ([r["step"] for r in evaluated], [r["reference_bpb"] for r in evaluated])}
    assert curves["diverse"][0][1][0] == curves["redundant"][0][1][0]
    level, speeds = learning_speeds(curves, 0.5, None, 0.95)
    initial, best = curves["diverse"][0][1][0], min(c[0][1][-1] for c in curves.values())
    assert level == pytest.approx(initial - 0.5 * (initial - best))
    best_name = min(curves, key=lambda n: curves[n][0][1][-1])
    assert speeds[best_name].steps[0] is not None and 0 < speeds[best_name].steps[0] <= 16
    # decisions: every document of the subset, trained on or beyond the budget
    decisions = results["diverse"].read("decisions")
    assert decisions.num_rows == 200 and set(decisions["decision"].to_pylist()) <= {"kept", "dropped"}
    assert decisions["decision"].to_pylist().count("kept") == diverse_stats["docs_used"]
    assert "seed 0" in decisions["reason"][0].as_py()
    # a configured absolute level (bits per byte) is reported per run
    with_level = probe_stage(store, "diverse", _subset(store, diverse, "diverse"), heldout[0], heldout[1],
                             ProbeConfig(**TINY, speed_level=level), seed=0, tokens=BUDGET)
    assert with_level.manifest()["stats"]["steps_to_level"] == speeds["diverse"].steps[0]
    # another seed is another artifact; the same seed and budget is the cached one
    assert probe_stage(store, "diverse", _subset(store, diverse, "diverse"), heldout[0], heldout[1], cfg, seed=0,
                       tokens=BUDGET) == results["diverse"]
    profile = subset_profile(_subset(store, redundant, "redundant"), cfg)
    assert profile["docs"] == 200 and profile["tokens"] == stream_tokens(redundant, ByteTokenizer())
    assert profile["R_zlib"] > 1


def test_full_pool_sample_covers_the_budget(store, tokenizer):
    cfg = ProbeConfig(**TINY)
    pool = _subset(store, _texts("dictionary.jsonl.zst", 300), "pool")
    full = full_pool_stage(store, pool, cfg, seed=0, budget=BUDGET)
    docs = full.read("docs")
    lengths = [len(text.encode("utf-8")) + 1 for text in docs["text"].to_pylist()]
    assert sum(lengths) >= BUDGET and sum(lengths) - lengths[-1] < BUDGET  # the sample just covers the budget
    assert full.read("decisions").num_rows == 300
    assert full_pool_stage(store, pool, cfg, seed=0, budget=BUDGET) == full  # seeded and cached
    assert full_pool_stage(store, pool, cfg, seed=1, budget=BUDGET).read("docs")["doc_id"] != docs["doc_id"]
    bigger = full_pool_stage(store, pool, cfg, seed=0, budget=4 * BUDGET).read("docs")
    assert bigger.num_rows > docs.num_rows


def test_hf_tokenizer_probe(store, heldout, tiny_lm, tmp_path):
    cfg = ProbeConfig(**TINY, tokenizer="hf", tokenizer_path=str(tiny_lm))
    ref = probe_stage(store, "prose", _subset(store, _texts("prose.jsonl.zst", 40), "prose"), heldout[0], None,
                      cfg, seed=0, tokens=BUDGET)
    stats = ref.manifest()["stats"]
    assert stats["tokenizer"] == str(tiny_lm) and stats["tokens"] == BUDGET
    # bits per byte do not depend on the tokenizer's vocabulary: an untrained model still starts near log2(vocab)
    # bits per token, i.e. fewer bits per byte than a byte model (tokens hold several bytes)
    assert 0 < stats["reference_bpb"] < stats["reference_initial_bpb"] < math.log2(600)
    # the tokenizer counts by its files' content: the same files elsewhere reuse the probe
    moved = tmp_path / "moved-tokenizer"
    shutil.copytree(tiny_lm, moved)
    again = probe_stage(store, "prose", _subset(store, _texts("prose.jsonl.zst", 40), "prose"), heldout[0], None,
                        cfg.model_copy(update={"tokenizer_path": str(moved)}), seed=0, tokens=BUDGET)
    assert again.key == ref.key


def test_clear_errors(store, heldout, tmp_path):
    cfg = ProbeConfig(**TINY)
    with pytest.raises(ValueError, match="subset 'nothing' is empty"):
        probe_stage(store, "nothing", _subset(store, [], "empty"), heldout[0], heldout[1], cfg, seed=0, tokens=BUDGET)
    for field in ("init_checkpoint", "tokenizer_path"):
        with pytest.raises(ValidationError, match=f"probe.{field} needs a Hugging Face tokenizer.*tokenizer: hf"):
            ProbeConfig(**TINY, **{field: str(tmp_path / "x")})
    bad = ProbeConfig(**TINY, tokenizer="hf", init_checkpoint=str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="init_checkpoint .* is not a local folder"):
        probe_stage(store, "bad", _subset(store, ["some text " * 50], "bad"), heldout[0], heldout[1], bad, seed=0,
                    tokens=BUDGET)
    with pytest.raises(FileNotFoundError, match="tokenizer not found"):
        load_tokenizer("hf", str(tmp_path / "no-tokenizer"))
    (tmp_path / "notamodel").mkdir()
    from selectflow.probe.model import load_checkpoint
    with pytest.raises(FileNotFoundError, match=r"init_checkpoint .*\(no config.json\)"):
        load_checkpoint(str(tmp_path / "notamodel"), 100)
    with pytest.raises(ValueError, match="multiple of heads"):
        ProbeModelConfig(hidden=30, heads=4)


def test_continue_from_local_checkpoint(tokenizer, tmp_path):
    base = {**TINY, "tokens": 256, "evals": 1}
    folder = tmp_path / "ckpt"
    tiny_llama(ProbeConfig(**base).model, tokenizer.vocab_size, seed=7).save_pretrained(folder)
    train = pack_train(_texts("prose.jsonl.zst", 10), tokenizer, 256, 32, 4, seed=0)
    held = {"reference": pack_eval(_texts("reference.jsonl.zst", 10), tokenizer, 128, 32, "reference")}
    fresh0 = train_probe(train, held, tokenizer, ProbeConfig(**base), seed=0)
    # an init checkpoint needs tokenizer 'hf' in the config; a byte-level checkpoint works with the byte ids given
    resumed = train_probe(train, held, tokenizer,
                          ProbeConfig(**base, tokenizer="hf", init_checkpoint=str(folder)), seed=0)
    # the checkpoint's weights (seed 7), not a fresh seed-0 model, are evaluated at step 0
    expected = train_probe(train, held, tokenizer, ProbeConfig(**base), seed=7)
    assert resumed.curve[0]["reference_bpb"] == pytest.approx(expected.curve[0]["reference_bpb"], rel=1e-6)
    assert resumed.curve[0]["reference_bpb"] != fresh0.curve[0]["reference_bpb"]


@pytest.mark.gpu
def test_cuda_bfloat16_probe_learns_like_cpu(tokenizer):
    train = pack_train(_texts("prose.jsonl.zst", 40), tokenizer, 2048, 32, 4, seed=0)
    held = {"reference": pack_eval(_texts("reference.jsonl.zst", 20), tokenizer, 256, 32, "reference")}
    cpu = train_probe(train, held, tokenizer, ProbeConfig(**TINY), seed=0)
    cuda = train_probe(train, held, tokenizer, ProbeConfig(**TINY | {"device": "cuda"}), seed=0)
    assert len(cuda.curve) == len(cpu.curve) and cuda.metrics["device"].startswith("cuda")
    for key in ("prequential_bpb", "reference_bpb", "reference_initial_bpb"):
        assert cuda.metrics[key] == pytest.approx(cpu.metrics[key], rel=0.05), key
    assert cuda.curve[1]["train_loss"] == pytest.approx(cpu.curve[1]["train_loss"], rel=0.01)  # same init
