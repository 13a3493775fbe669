"""ZIP selection: exact mode == the naive reference (bench/zip/naive.py) id for id; sizes, decisions, errors, zstd."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import sample_records

from selectflow.compression import set_ratio
from selectflow.schema import DOCS
from selectflow.select import DECISIONS_SCHEMA, ZipConfig, ZipError, record_repr, zip_select
from selectflow.select.zip import ZipCheckpoint, lowest_unused

_spec = importlib.util.spec_from_file_location("zip_naive", Path(__file__).parents[1] / "bench" / "zip" / "naive.py")
naive = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(naive)


def _text(record: dict) -> str:
    if "conversations" in record:
        return "\n".join(turn["value"] for turn in record["conversations"])
    return record["text"]


def _docs(per_file: int = 60) -> pa.Table:
    """Real documents: ShareGPT chat records, prose, code, licences (with near-copies), fortunes; some without a
    record (plain text inputs)."""
    rows = []
    for name in ("qa", "prose", "code", "licenses", "fortunes", "dictionary"):
        for k, record in enumerate(sample_records(f"{name}.jsonl.zst", per_file)):
            text = _text(record)
            rows.append({
                "doc_id": f"{name}-{k}", "source": f"sample/{name}", "line": k + 1, "domain": record.get("domain"),
                "text": text, "content_hash": str(k), "n_bytes": len(text.encode()),
                "record": None if name == "fortunes" else json.dumps(record),
            })
    rng = np.random.default_rng(0)
    rows = [rows[i] for i in rng.permutation(len(rows))]
    return pa.Table.from_pylist(rows, schema=DOCS)


@pytest.fixture(scope="module")
def docs() -> pa.Table:
    return _docs()


def _naive_ids(docs: pa.Table, budget, k1, k2, k3, tokens=None) -> list[str]:
    records = [json.loads(r) if r is not None else {"text": t}
               for r, t in zip(docs["record"].to_pylist(), docs["text"].to_pylist())]
    ids = docs["doc_id"].to_pylist()
    return [ids[i] for i in naive.naive_zip(records, budget, k1, k2, k3, processes=1, tokens=tokens)]


@pytest.mark.parametrize(
    "k1,k2,k3,budget,workers,parallel",
    [(60, 20, 10, 35, 2, "threads"), (100, 30, 7, 30, 1, "threads"), (40, 40, 15, 30, 2, "processes")],
)
def test_exact_matches_naive_reference(docs, k1, k2, k3, budget, workers, parallel):
    cfg = ZipConfig(k1=k1, k2=k2, k3=k3, budget=budget, workers=workers, parallel=parallel)
    result = zip_select(docs, cfg)
    assert len(result.selected) == math.ceil(budget / k3) * k3
    assert result.selected == _naive_ids(docs, budget, k1, k2, k3)
    assert len(set(result.selected)) == len(result.selected)


def test_exact_tokens_budget_matches_naive(docs):
    count = lambda text: len(text.split())  # noqa: E731
    cfg = ZipConfig(k1=60, k2=20, k3=10, budget=6000, budget_unit="tokens", workers=2)
    result = zip_select(docs, cfg)
    tokens = [count(t) for t in docs["text"].to_pylist()]
    assert result.selected == _naive_ids(docs, 6000, 60, 20, 10, tokens=tokens)
    by_id = dict(zip(docs["doc_id"].to_pylist(), tokens))
    total = sum(by_id[i] for i in result.selected)
    assert total >= 6000 and total - sum(by_id[i] for i in result.selected[-10:]) < 6000  # stopped at first round over
    assert result.rounds[-1]["tokens_selected"] == total
    bytes4 = zip_select(docs, cfg.model_copy(update={"token_counter": "bytes4"}))
    assert bytes4.selected == zip_select(docs, cfg, token_count=lambda t: -(-len(t.encode()) // 4)).selected


def test_decisions_cover_every_doc_once(docs):
    cfg = ZipConfig(k1=60, k2=20, k3=10, budget=30)
    progress = []
    result = zip_select(docs, cfg, progress=lambda r, info: progress.append((r, info)))
    d = result.decisions
    assert d.schema == DECISIONS_SCHEMA
    assert sorted(d["doc_id"].to_pylist()) == sorted(docs["doc_id"].to_pylist())
    assert d.num_rows == docs.num_rows
    rows = {r["doc_id"]: r for r in d.to_pylist()}
    assert [i for i in rows if rows[i]["selected"]] and sum(r["selected"] for r in rows.values()) == 30
    for pos, doc_id in enumerate(result.selected):
        row = rows[doc_id]
        assert row["order"] == pos and row["stage_reached"] == "fine" and row["round"] == pos // 10
        assert row["marginal_bytes"] > 0
    stages = [r["stage_reached"] for r in rows.values()]
    assert stages.count("fine") == 3 * 20  # every K2 candidate of every round
    assert stages.count("global") > 0 and stages.count("coarse") > 0
    for row in rows.values():
        if row["stage_reached"] == "global":
            assert row["round"] is None and row["ratio"] == row["own_ratio"]
    assert [r for r, _ in progress] == [1, 2, 3]
    assert [info["n_selected"] for _, info in progress] == [10, 20, 30]
    assert all(set(info) >= {"seconds_global", "seconds_coarse", "seconds_fine", "selected_ratio"}
               for info in result.rounds)
    texts = dict(zip(docs["doc_id"].to_pylist(), docs["text"].to_pylist()))
    assert result.final_ratio["zlib9"] == pytest.approx(set_ratio([texts[i] for i in result.selected]))
    assert result.final_ratio["records_zlib9"] == pytest.approx(result.rounds[-1]["selected_ratio"])


def test_record_serialization():
    record = {"id": "x", "conversations": [{"from": "human", "value": "it's\n"}], "source": "s"}
    assert record_repr(json.dumps(record), "ignored") == repr(record).encode()
    assert record_repr(None, "plain 'text'") == repr({"text": "plain 'text'"}).encode()


def test_errors_for_impossible_configs(docs):
    n = docs.num_rows
    with pytest.raises(ValueError, match="k3 <= k2 <= k1"):
        ZipConfig(k1=10, k2=20, k3=5)
    with pytest.raises(ValueError, match="k3 <= k2 <= k1"):
        ZipConfig(k1=100, k2=20, k3=50)
    with pytest.raises(ValueError):
        ZipConfig(k1=100, unknown=1)
    with pytest.raises(ZipError, match=f"has {n}"):
        zip_select(docs, ZipConfig(k1=100, k2=50, k3=10, budget=n))
    with pytest.raises(ZipError, match="empty"):
        zip_select(docs.slice(0, 0), ZipConfig(k1=10, k2=5, k3=2, budget=2))
    with pytest.raises(ZipError, match="tokens"):
        zip_select(docs, ZipConfig(k1=10, k2=5, k3=2, budget=10**9, budget_unit="tokens"))
    # k1 larger than the pool: clamped to the pool (the reference's torch.topk would raise)
    small = docs.slice(0, 50)
    result = zip_select(small, ZipConfig(k1=10_000, k2=20, k3=10, budget=20))
    assert result.selected == _naive_ids(small, 20, 10_000, 20, 10)
    # the largest budget the error message allows does run
    assert len(zip_select(small, ZipConfig(k1=50, k2=20, k3=10, budget=30)).selected) == 30


def test_tokens_budget_stops_when_pool_exhausted(docs):
    small = docs.slice(0, 40)
    cfg = ZipConfig(k1=40, k2=20, k3=5, budget=sum(len(t.split()) for t in small["text"].to_pylist()),
                    budget_unit="tokens")
    result = zip_select(small, cfg)
    assert result.stopped == "pool_exhausted" and len(result.selected) == 10


def test_zstd_mode_less_redundant_than_exact(docs):
    cfg = ZipConfig(k1=200, k2=40, k3=20, budget=100)
    exact = zip_select(docs, cfg)
    zstd = zip_select(docs, cfg.model_copy(update={"mode": "zstd"}))
    assert len(zstd.selected) == len(exact.selected) == 100 and len(set(zstd.selected)) == 100
    assert zstd.decisions.num_rows == docs.num_rows
    assert zstd.final_ratio["zstd"] <= exact.final_ratio["zstd"]
    assert all(r["marginal_bytes"] > 0 for r in zstd.decisions.to_pylist() if r["selected"])


def test_zstd_mode_runs_past_its_window(docs):
    small_window = ZipConfig(k1=100, k2=20, k3=10, budget=40, mode="zstd", zstd_window_log=10)  # 1 KB of context
    result = zip_select(docs, small_window)
    texts = dict(zip(docs["doc_id"].to_pylist(), docs["text"].to_pylist()))
    assert len(result.selected) == 40 and sum(len(texts[d].encode()) for d in result.selected) > 4 * 1024


def test_gain_mode_is_length_neutral(docs):
    from scipy.stats import spearmanr

    cfg = ZipConfig(k1=200, k2=40, k3=20, budget=100, mode="zstd")
    results = {"zstd": zip_select(docs, cfg), "gain": zip_select(docs, cfg.model_copy(update={"mode": "gain"}))}
    n_bytes = dict(zip(docs["doc_id"].to_pylist(), docs["n_bytes"].to_pylist()))
    trend = {mode: spearmanr([r["own_ratio"] for r in result.decisions.to_pylist()],
                             [n_bytes[r["doc_id"]] for r in result.decisions.to_pylist()])[0]
             for mode, result in results.items()}
    assert trend["zstd"] > 0.7 and abs(trend["gain"]) < 0.3  # longer documents repeat themselves more
    median = {mode: np.median([n_bytes[d] for d in result.selected]) for mode, result in results.items()}
    pool = np.median(list(n_bytes.values()))
    assert median["zstd"] < 0.5 * pool < 0.75 * pool < median["gain"]  # plain ZIP takes the short documents


def test_stage_one_takes_the_k_lowest_unused_ties_by_position():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(1, 400))
        pi = rng.integers(0, 12, n).astype(float)  # many ties
        used = rng.random(n) < rng.random()
        k = int(rng.integers(1, n - used.sum() + 1)) if used.sum() < n else 0
        expected = np.argsort(np.where(used, np.inf, pi), kind="stable")[:k]
        assert lowest_unused(pi, used, k).tolist() == expected.tolist()


def test_zstd_context_is_the_last_window_of_the_joined_texts():
    from selectflow.compression import SEPARATOR
    from selectflow.select.zip import _ZstdScorer

    items = [bytes([65 + i % 26]) * (50 + 37 * i) for i in range(40)]
    scorer = _ZstdScorer(items, workers=1, level=3, window_log=10)
    for ids in ([], [3], list(range(40)), [39, 0, 5, 2], list(range(0, 40, 3))):
        joined = SEPARATOR.encode().join(items[i] for i in ids)
        assert scorer._recent_text(ids) == joined[-((1 << 10) - 1):]


# ----------------------------------------------------------------------------------------------- resume


class Killed(Exception):
    """Stands for the process being killed right after a round's checkpoint was saved."""


def _kill_after(rounds: int):
    def progress(done: int, info: dict) -> None:
        if done == rounds:
            raise Killed

    return progress


def _same_result(resumed, fresh) -> None:
    def rounds(result):  # timings aside, the rounds' records must match
        return [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in result.rounds]

    assert resumed.selected == fresh.selected
    assert resumed.decisions.equals(fresh.decisions)
    assert rounds(resumed) == rounds(fresh)
    assert resumed.stopped == fresh.stopped and resumed.final_ratio == fresh.final_ratio


RESUME_CONFIGS = [
    ZipConfig(k1=60, k2=20, k3=10, budget=50),
    ZipConfig(k1=60, k2=20, k3=10, budget=50, mode="zstd"),
    ZipConfig(k1=60, k2=20, k3=10, budget=4000, budget_unit="tokens"),
    ZipConfig(k1=60, k2=20, k3=10, budget=4000, budget_unit="tokens", mode="zstd"),
]


@pytest.mark.parametrize("cfg", RESUME_CONFIGS, ids=lambda c: f"{c.mode}-{c.budget_unit}")
def test_killed_run_resumes_from_last_finished_round(docs, cfg, tmp_path):
    fresh = zip_select(docs, cfg)
    checkpoint = ZipCheckpoint(tmp_path)
    with pytest.raises(Killed):
        zip_select(docs, cfg, progress=_kill_after(2), checkpoint=checkpoint)
    assert len(fresh.rounds) >= 4 and checkpoint.load().rounds[-1]["round"] == 1
    ran = []
    resumed = zip_select(docs, cfg, progress=lambda done, info: ran.append(done), checkpoint=checkpoint)
    assert resumed.resumed_from_round == 2 and fresh.resumed_from_round == 0
    assert ran == list(range(3, len(fresh.rounds) + 1))  # only the rounds after the second were run again
    _same_result(resumed, fresh)


def test_costly_checkpoints_are_spaced_and_the_run_still_resumes(docs, tmp_path, monkeypatch):
    cfg = RESUME_CONFIGS[0]
    fresh = zip_select(docs, cfg)
    checkpoint = ZipCheckpoint(tmp_path)
    saved = []
    save = checkpoint.save

    def slow_save(state):  # stands for the ~50 MB a pool of 10^6 documents writes
        save(state)
        saved.append(len(state.rounds))
        clock[0] += 1.0

    clock = [0.0]
    monkeypatch.setattr("selectflow.select.zip.time.perf_counter", lambda: clock[0])
    monkeypatch.setattr(checkpoint, "save", slow_save)
    with pytest.raises(Killed):
        zip_select(docs, cfg, progress=_kill_after(4), checkpoint=checkpoint)
    assert saved == [1]  # the first save took 1 s, so the next waits for 20 s (no round took any time)
    monkeypatch.undo()
    resumed = zip_select(docs, cfg, checkpoint=ZipCheckpoint(tmp_path))
    assert resumed.resumed_from_round == 1
    _same_result(resumed, fresh)


def test_damaged_or_foreign_checkpoint_is_ignored_with_a_warning(docs, tmp_path, caplog):
    cfg = RESUME_CONFIGS[0]
    fresh = zip_select(docs, cfg)
    checkpoint = ZipCheckpoint(tmp_path)
    with pytest.raises(Killed):
        zip_select(docs, cfg, progress=_kill_after(2), checkpoint=checkpoint)
    whole = checkpoint.path.read_bytes()
    for damaged in (whole[: len(whole) // 2], b"not an npz at all", b""):
        checkpoint.path.write_bytes(damaged)
        caplog.clear()
        result = zip_select(docs, cfg, checkpoint=checkpoint)
        assert result.resumed_from_round == 0
        assert str(checkpoint.path) in caplog.text and "unreadable" in caplog.text
        _same_result(result, fresh)
    # a readable checkpoint saved for another config
    other = cfg.model_copy(update={"k2": 30})
    with pytest.raises(Killed):
        zip_select(docs, other, progress=_kill_after(2), checkpoint=checkpoint)
    caplog.clear()
    result = zip_select(docs, cfg, checkpoint=checkpoint)
    assert result.resumed_from_round == 0 and "another pool or config" in caplog.text
    _same_result(result, fresh)
    assert [p.name for p in tmp_path.iterdir()] == [ZipCheckpoint.FILE]  # no temporary files left behind


def test_killed_stage_resumes_and_commit_removes_its_checkpoint(docs, tmp_path):
    from selectflow.config import Budget, ZipSelector
    from selectflow.stages.select_zip import zip_stage
    from selectflow.stages.selection import SelectionContext
    from selectflow.store import ArtifactStore

    store = ArtifactStore(tmp_path)
    pool = [store.build("pool", {}, [], "test", lambda writer: writer.write("docs", docs))]
    cfg = RESUME_CONFIGS[0]
    budget = Budget(**cfg.budget_fields())
    options = ZipSelector(**cfg.model_dump(exclude=set(Budget.model_fields)))
    with pytest.raises(Killed):
        zip_stage(store, pool, budget, options, SelectionContext(), progress=_kill_after(2))
    checkpoints = store.root / "checkpoints" / "select_zip"
    assert len(list(checkpoints.glob(f"*/{ZipCheckpoint.FILE}"))) == 1
    ran = []
    ref = zip_stage(store, pool, budget, options, SelectionContext(), progress=lambda done, info: ran.append(done))
    stats = ref.manifest()["stats"]
    assert stats["resumed_from_round"] == 2 and stats["rounds"] == 5 and ran == [3, 4, 5]
    assert ref.read("docs")["doc_id"].to_pylist() == zip_select(docs, cfg).selected
    assert not (checkpoints / ref.key).exists()
