"""Curricula: the same documents as the shuffled order, in the order requested, and their comparison."""

import numpy as np
import pytest
from conftest import docs_table, sample_records

from selectflow.compression import compression_ratio
from selectflow.config import ProbeConfig, ProbeModelConfig
from selectflow.probe.curriculum import reorder_for
from selectflow.probe.data import pack_train
from selectflow.probe.tokenizer import load_tokenizer

TOKENIZER = load_tokenizer("bytes")


def _texts(name: str, n: int) -> list[str]:
    return [r.get("text") or "\n".join(t["value"] for t in r["conversations"]) for r in sample_records(name, n)]


TEXTS = _texts("prose.jsonl.zst", 40) + _texts("fortunes.jsonl.zst", 40) + _texts("code.jsonl.zst", 40)
DOMAINS = ["prose"] * 40 + ["fortunes"] * 40 + ["code"] * 40


def _pack(order: str, seed: int = 3):
    return pack_train(TEXTS, TOKENIZER, 16_384, 64, 4, seed, "repeat", "toy", reorder_for(order, TEXTS, DOMAINS))


@pytest.mark.parametrize("order", ["domain", "domain_reversed", "easy_to_hard", "hard_to_easy"])
def test_a_curriculum_reorders_the_documents_the_shuffle_brings_within_the_budget(order):
    shuffled, ordered = _pack("shuffled"), _pack(order)
    assert ordered.blocks.shape == shuffled.blocks.shape and ordered.epochs == 1.0
    assert set(ordered.doc_indices) <= set(shuffled.doc_indices)
    # the budget ends where it did, so what is cut off the end is less than the shuffled order's overshoot
    lost = sum(len(TEXTS[i].encode()) + 1 for i in set(shuffled.doc_indices) - set(ordered.doc_indices))
    assert lost < max(len(TEXTS[i].encode()) + 1 for i in shuffled.doc_indices)
    if order.startswith("domain"):
        seen = [DOMAINS[i] for i in ordered.doc_indices]
        runs = [d for k, d in enumerate(seen) if k == 0 or d != seen[k - 1]]
        assert runs == sorted(set(seen), reverse=order == "domain_reversed")  # each domain once, in name order
    else:
        ratios = [compression_ratio(TEXTS[i], "zlib", 9) for i in ordered.doc_indices]
        assert ratios == sorted(ratios, reverse=order == "easy_to_hard")
    # blocks are trained in stream order: the first block starts with the first document's first bytes
    first = TEXTS[ordered.doc_indices[0]].encode("utf-8")[:64]
    assert bytes(ordered.blocks[0][: len(first)].tolist()) == first


def test_a_reorder_that_changes_the_documents_is_refused():
    with pytest.raises(ValueError, match="reorder the budget's documents"):
        pack_train(TEXTS, TOKENIZER, 16_384, 64, 4, 0, "repeat", "toy", lambda chosen: chosen[:-1])
    with pytest.raises(ValueError, match="unknown order"):
        reorder_for("alphabetical", TEXTS, DOMAINS)


def test_the_comparison_trains_exactly_the_orders_requested(tmp_path):
    from selectflow.probe.curriculum import BASELINE_ORDER
    from selectflow.stages.curriculum import curriculum_stage
    from selectflow.stages.probe import probe_stage
    from selectflow.stages.registry import CURRICULUM_PROBE
    from selectflow.store import ArtifactStore

    store = ArtifactStore(tmp_path)
    subset = [store.build("subset", {}, ["toy"], "test",
                          lambda writer: writer.write("docs", docs_table(TEXTS, DOMAINS, "toy")))]
    reference = docs_table(_texts("prose.jsonl.zst", 60)[40:], ["prose"] * 20, "ref")
    cfg = ProbeConfig(model=ProbeModelConfig(hidden=32, layers=1, heads=2, intermediate=64, seq_len=64),
                      batch_size=4, evals=4, eval_tokens=2048, learning_rate=3e-3, cpu_threads=1, device="cpu")
    orders = [BASELINE_ORDER, "domain_reversed", "hard_to_easy"]
    probes = {order: {seed: probe_stage(store, f"toy {order}", subset, reference, None, cfg, seed, 16_384,
                                        stage=CURRICULUM_PROBE.name, order=order) for seed in (0, 1)}
              for order in orders}
    assert {ref.manifest()["stats"]["order"] for by_seed in probes.values() for ref in by_seed.values()} == set(orders)
    compared = curriculum_stage(store, "toy", probes, 0.95, 0.5)
    table = compared.read("orders").to_pylist()
    assert sorted({(row["order"], row["seed"]) for row in table}) == sorted((o, s) for o in orders for s in (0, 1))
    stats = compared.manifest()["stats"]
    assert set(stats["orders"]) == set(orders) and "vs_shuffled" not in stats["orders"][BASELINE_ORDER]
    assert all(np.isfinite(row["area_bpb"]) for row in table) and stats["verdict"].startswith("Curricula of toy")
