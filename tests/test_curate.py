"""End-to-end `curate` runs under a temporary Prefect server: outputs, lineage, MLflow, retries, caching."""

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from selectflow.config import load_config
from selectflow.lineage import doc_lineage, run_graph
from selectflow.runs import load_run
from selectflow.select.strata import stratum_quotas
from selectflow.store import ArtifactStore
from tests.conftest import SAMPLE, write_config


def read_outputs(summary, which: str = "outputs") -> list[dict]:
    files = sorted(Path(summary[which]).glob("part-*.parquet"))
    rows = [row for f in files for row in pq.read_table(f).to_pylist()]
    return sorted(rows, key=lambda r: r["doc_id"])


def read_outputs_in_order(summary) -> list[dict]:
    from pathlib import Path

    return [row for f in sorted(Path(summary["outputs"]).glob("part-*.parquet")) for row in pq.read_table(f).to_pylist()]


@pytest.fixture
def small_config(tmp_path, small_corpus):
    inputs = [{"path": str(small_corpus / "part-*.jsonl")}, {"path": str(small_corpus / "bad.jsonl")}]
    return load_config(write_config(tmp_path / "c.yaml", inputs, tmp_path / "ws"))


def test_curate_small_corpus(prefect_harness, small_config):
    from selectflow.flows.curate import curate

    summary = curate(small_config)
    stages = {row["stage"]: row for row in summary["stages"]}
    assert stages["ingest"]["dropped"] == 4  # the four bad records of bad.jsonl
    assert set(summary["quarantine"]["reasons"]) >= {"malformed JSON", "not valid UTF-8", "field 'text' missing"}
    assert stages["dedup_exact"]["dropped"] > 0 and stages["dedup_near"]["dropped"] > 0
    assert stages["dedup_exact"]["docs_in"] == stages["ingest"]["docs_out"]
    assert stages["dedup_near"]["docs_in"] == stages["dedup_exact"]["docs_out"]
    deduped = read_outputs(summary, "deduped")
    assert len(deduped) == stages["dedup_near"]["docs_out"] == stages["select_zip"]["docs_in"]
    assert len({row["content_hash"] for row in deduped}) == len(deduped)  # no exact duplicates left
    outputs = read_outputs(summary)
    assert len(outputs) == summary["docs_out"] == stages["select_zip"]["docs_out"] == 150  # ceil(150/25)*25
    assert {row["doc_id"] for row in outputs} <= {row["doc_id"] for row in deduped}

    store = ArtifactStore(small_config.workspace / "store")
    run = load_run(store)
    exact = run.refs("dedup_exact")[0].read("decisions")
    dropped = exact.filter(pc.equal(exact["decision"], "dropped")).to_pylist()[0]
    lineage = doc_lineage(store, dropped["doc_id"])
    assert lineage["origin"]["source"].endswith(".jsonl")
    assert lineage["final"] == "out: dropped at dedup_exact"
    assert f"exact duplicate of {dropped['ref_doc_id']}" in lineage["decisions"][-1]["reason"]
    near = run.refs("dedup_near")[0].read("decisions")
    dropped_near = near.filter(pc.equal(near["decision"], "dropped")).to_pylist()[0]
    lineage = doc_lineage(store, dropped_near["doc_id"])
    assert lineage["final"] == "out: dropped at dedup_near"
    assert "near-duplicate of" in lineage["decisions"][-1]["reason"]
    kept = doc_lineage(store, outputs[0]["doc_id"])
    assert kept["final"] == "in: selected by select_zip"
    by_stage = {d["stage"]: d for d in kept["decisions"]}
    assert list(by_stage) == ["ingest", "dedup_exact", "dedup_near", "cluster", "select_zip", "select_random"]
    assert by_stage["select_zip"]["reason"].startswith("selected in round ")
    assert by_stage["cluster"]["group"].startswith("cluster ")
    zip_decisions = run.refs("select_zip")[0].read("decisions")
    assert zip_decisions.num_rows == len(deduped)
    rejected = zip_decisions.filter(pc.equal(zip_decisions["decision"], "rejected"))["doc_id"][0].as_py()
    assert doc_lineage(store, rejected)["final"] == "out: not selected at select_zip"
    bad = doc_lineage(store, f"{small_config.ingest.inputs[1].path}:2")
    assert bad["final"].startswith("out: quarantined at ingest (malformed JSON")

    graph = run_graph(store)
    assert [s["stage"] for s in graph["stages"]] == [
        "ingest", "dedup_exact", "minhash", "dedup_near", "deduped", "embed", "cluster", "select_zip", "select_random"]
    assert len(graph["stages"][0]["artifacts"]) == 13

    import mlflow

    client = mlflow.MlflowClient(small_config.tracking.tracking_uri)
    parent = client.get_run(summary["mlflow_run_id"])
    assert parent.data.metrics["docs_out"] == summary["docs_out"]
    assert parent.data.tags["prefect.flow_run_id"] == run.flow_run_id
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_stage = {child.data.tags["selectflow.stage"]: child for child in children}
    assert set(by_stage) == {"ingest", "dedup_exact", "dedup_near", "cluster", "select_zip", "select_random"}
    zip_run = by_stage["select_zip"]
    assert zip_run.data.metrics["docs_out"] == 150 and zip_run.data.metrics["final_ratio.zlib9"] > 1
    assert len(client.get_metric_history(zip_run.info.run_id, "seconds_coarse")) == 6  # one per round
    selected_ids = client.download_artifacts(zip_run.info.run_id, "selected_ids.txt")
    assert open(selected_ids).read().split() == [row["doc_id"] for row in read_outputs_in_order(summary)]
    assert by_stage["dedup_exact"].data.metrics["dropped"] == stages["dedup_exact"]["dropped"]
    assert by_stage["ingest"].inputs.dataset_inputs  # artifacts logged as datasets
    assert client.list_artifacts(by_stage["ingest"].info.run_id, "manifests")


def test_rerun_is_cached_and_identical(prefect_harness, small_config):
    from selectflow.flows.curate import curate

    first = curate(small_config)
    store = ArtifactStore(small_config.workspace / "store")
    stamps = {p: p.stat().st_mtime_ns for p in (store.root / "artifacts").rglob("manifest.json")}
    second = curate(small_config)
    assert read_outputs(first) == read_outputs(second)
    assert {p: p.stat().st_mtime_ns for p in (store.root / "artifacts").rglob("manifest.json")} == stamps


@pytest.mark.slow  # ~45 s on 2 cores
def test_grown_corpus_reuses_unchanged_shards(prefect_harness, small_config, small_corpus, tmp_path):
    import shutil

    from selectflow.flows.curate import curate

    grown = tmp_path / "grown"
    grown.mkdir()
    for f in sorted(small_corpus.glob("part-0[0-5].jsonl")):
        shutil.copy(f, grown / f.name)
    small_config.ingest.inputs = [small_config.ingest.inputs[0].model_copy(update={"path": str(grown / "*.jsonl")})]
    curate(small_config)
    store = ArtifactStore(small_config.workspace / "store")
    before = {p.parent.name for p in (store.root / "artifacts" / "ingest").glob("*/manifest.json")}
    sig_before = {p.parent.name for p in (store.root / "artifacts" / "minhash").glob("*/manifest.json")}
    shutil.copy(small_corpus / "part-06.jsonl", grown / "part-06.jsonl")
    curate(small_config)
    after = {p.parent.name for p in (store.root / "artifacts" / "ingest").glob("*/manifest.json")}
    sig_after = {p.parent.name for p in (store.root / "artifacts" / "minhash").glob("*/manifest.json")}
    assert before < after and len(after - before) == 1  # only the new file was ingested
    (new,) = after - before
    new_shards = len(ArtifactStore(store.root).get("ingest", new).shards("docs"))
    assert sig_before < sig_after and len(sig_after - sig_before) == new_shards  # only the new file's shards


def test_failed_shard_is_retried(prefect_harness, small_config, monkeypatch):
    import selectflow.stages.ingest as stage
    from selectflow.flows.curate import curate

    real = stage.read_input
    calls = {}

    def flaky(file, cfg):
        calls[file.uri] = calls.get(file.uri, 0) + 1
        if file.uri.endswith("part-03.jsonl") and calls[file.uri] == 1:
            raise OSError("injected: network filesystem hiccup")
        return real(file, cfg)

    monkeypatch.setattr(stage, "read_input", flaky)
    summary = curate(small_config)
    failed = [uri for uri in calls if uri.endswith("part-03.jsonl")]
    assert calls[failed[0]] == 2
    assert all(n == 1 for uri, n in calls.items() if uri != failed[0])
    assert summary["stages"][0]["docs_out"] > 0


def test_zip_inside_the_reference_sets_cluster_mix(prefect_harness, tmp_path, small_corpus):
    """The reference set is embedded like the pool, assigned to its clusters, and ZIP runs inside those quotas."""
    from selectflow.flows.curate import curate

    config = load_config(write_config(
        tmp_path / "c.yaml", [{"path": str(small_corpus / "part-*.jsonl")}], tmp_path / "ws",
        reference=[{"path": str(SAMPLE / "reference.jsonl.zst")}],
        selection={"budget": 20000, "budget_unit": "tokens", "token_counter": "bytes", "selectors": [
            {"method": "zip", "k1": 100, "k2": 10, "k3": 5, "strata": "cluster", "quota": "reference"},
            {"method": "random"}]}))
    summary = curate(config)
    run = load_run(ArtifactStore(config.workspace / "store"))
    (assigned,) = run.refs("reference_clusters")
    mix = Counter(assigned.read("assignments")["cluster"].to_pylist())
    (zip_ref,) = run.refs("select_zip")
    strata = zip_ref.manifest()["stats"]["strata"]
    assert sum(s["quota"] for s in strata.values()) == 20000 and summary["subsets"]
    reached = {f"cluster {c}" for c in mix}
    assert all(s["quota"] == 0 for name, s in strata.items() if name not in reached)  # reference clusters hold it
    assert {row["group"] for row in zip_ref.read("decisions").to_pylist()} == set(strata)


def test_mixture_search_and_curricula_in_a_run(prefect_harness, tmp_path, small_corpus):
    """The mixture selector in a run: its proposals sampled and probed on the workers, the fit, the subset resampled
    to the fitted cluster weights, ZIP and DSIR inside those weights' quotas, every stage in the run record and each
    mixture probe in MLflow; then the mixture subset trained in the curricula requested."""
    from selectflow.flows.curate import curate

    config = load_config(write_config(
        tmp_path / "c.yaml", [{"path": str(small_corpus / "part-*.jsonl")}], tmp_path / "ws",
        reference=[{"path": str(SAMPLE / "reference.jsonl.zst")}],
        probe={"enabled": False, "model": {"hidden": 32, "layers": 1, "heads": 2, "intermediate": 64, "seq_len": 64},
               "batch_size": 8, "evals": 2, "eval_tokens": 4096, "cpu_threads": 1, "seeds": 2},
        selection={"budget": 40000, "budget_unit": "tokens", "token_counter": "bytes", "selectors": [
            {"method": "mixture", "components": "cluster", "mixtures": 4, "probe_tokens": 8192, "candidates": 500,
             "top": 10},
            {"method": "zip", "k1": 100, "k2": 10, "k3": 5, "strata": "cluster", "quota": "mixture"},
            {"method": "dsir", "features": {"buckets": 1024}, "strata": "cluster", "quota": "mixture"},
            {"method": "random"}]},
        curriculum={"enabled": True, "orders": ["domain", "easy_to_hard"]}))
    summary = curate(config)
    run = load_run(ArtifactStore(config.workspace / "store"))
    (plan,), (fit,) = run.refs("mixture_plan"), run.refs("mixture_fit")
    assert len(run.refs("mixture_sample")) == len(run.refs("mixture_probe")) == 4 + 3 * 2  # + validation, 2 seeds
    components = plan.manifest()["stats"]["components"]
    assert fit.read("mixtures").num_rows == 4 and fit.manifest()["stats"]["components"] == components
    (selected,) = run.refs("select_mixture")
    stats = selected.manifest()["stats"]
    assert stats["tokens"] >= 40000 and set(stats["quotas"]) == set(components)
    assert sum(stats["quotas"].values()) == 40000
    weights = np.array(fit.manifest()["stats"]["weights"])
    assert np.isclose(weights.sum(), 1.0) and weights.min() >= 0.02 - 1e-9
    # ZIP inside the probed mixture: its strata's quotas follow the fitted weights (capped at what ZIP can take)
    strata = run.refs("select_zip")[0].manifest()["stats"]["strata"]
    weight = dict(zip(components, weights))
    names = sorted(strata)
    expected = stratum_quotas((np.array([strata[n]["held"] for n in names]) * 5 / 10).astype(np.int64), 40000,
                              "reference", np.array([weight[n] for n in names]))
    assert [strata[n]["quota"] for n in names] == expected.tolist()
    strata = run.refs("select_dsir")[0].manifest()["stats"]["strata"]  # DSIR inside it, which can take all it holds
    expected = stratum_quotas(np.array([strata[n]["held"] for n in names]), 40000, "reference",
                              np.array([weight[n] for n in names]))
    assert [strata[n]["quota"] for n in names] == expected.tolist()
    assert all(strata[n]["tokens"] >= strata[n]["quota"] for n in names)
    import mlflow

    client = mlflow.MlflowClient(config.tracking.tracking_uri)
    parent = client.get_run(summary["mlflow_run_id"])
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    stages = {child.data.tags["selectflow.stage"] for child in children}
    assert {f"probe_mixture_{i}_seed_0" for i in range(4)} | {"select_mixture"} <= stages
    assert {f"probe_{name}_mixture_seed_{seed}" for name in ("proposed", "natural", "uniform") for seed in (0, 1)} <= stages
    (validation,) = run.refs("mixture_validation")
    assert set(validation.manifest()["stats"]["differences"]) == {"proposed - natural", "proposed - uniform"}
    (curricula,) = run.refs("curriculum")
    assert curricula.manifest()["stats"]["subset"] == "mixture" and len(run.refs("curriculum_probe")) == 3 * 2
    assert set(curricula.manifest()["stats"]["orders"]) == {"shuffled", "domain", "easy_to_hard"}
    assert {"curriculum", "probe_mixture_easy_to_hard_seed_1"} <= stages
    html = Path(summary["report"]).read_text()
    for section in ("mixture", "curriculum"):
        body = html.split(f'<section id="{section}">')[1].split("</section>")[0]
        assert "<img" in body and ("the proposed mixture" in body or "Curricula of mixture" in body)


def test_missing_input_fails_at_once(prefect_harness, tmp_path):
    from selectflow.flows.curate import curate
    from selectflow.ingest import IngestError

    config = load_config(write_config(tmp_path / "c.yaml", [{"path": str(tmp_path / "nope.jsonl")}], tmp_path / "ws"))
    with pytest.raises(IngestError, match="nope.jsonl"):
        curate(config)
    assert not (tmp_path / "ws" / "store").exists()


@pytest.mark.slow  # the quickstart runs the same job in CI
@pytest.mark.timeout(1500)  # ~8 minutes on 2 idle cores; CI machines run it at a fraction of that speed
def test_curate_sample_corpus_as_shipped(prefect_harness, tmp_path):
    """The README's job: the embedded sample with its shipped config (process workers), under a test server."""
    from selectflow.flows.curate import curate
    from selectflow.cli import SAMPLE_CONFIG
    from tests.conftest import SHARED_MLFLOW

    # The shipped probes (3 seeds x 1 MiB per subset) run in CI's quickstart; here 2 seeds x 64 KiB check the
    # verdicts' shape without running them twice.
    config = load_config(SAMPLE_CONFIG, {"workspace": str(tmp_path / "ws"), "tracking.tracking_uri": SHARED_MLFLOW,
                                         "probe.tokens": 65536, "probe.seeds": 2})
    assert config.dask.processes
    summary = curate(config)
    stages = {row["stage"]: row for row in summary["stages"]}
    assert stages["ingest"]["docs_out"] == 17293 and summary["quarantine"]["count"] == 0
    # The corpus README counts 786 byte-identical extra copies; normalization (case, whitespace) finds a few more.
    assert 786 <= stages["dedup_exact"]["dropped"] < 900
    assert 150 <= stages["dedup_near"]["dropped"] < 600
    outputs = read_outputs(summary)
    assert {row["domain"] for row in outputs} == {"prose", "code", "dictionary", "fortune", "license", "qa"}
    qa = next(row for row in outputs if row["domain"] == "qa")
    assert qa["text"].startswith("human: ") and "\n\ngpt: " in qa["text"] and '"conversations"' in qa["record"]
    probes = summary["probes"]
    assert set(probes["subsets"]) == {"zip", "quad", "random"} and probes["budget_tokens"] == 65536
    assert all(probes["subsets"][name]["verdict"].startswith(
        ("beats random by", "worse than random by", "indistinguishable from random")) for name in ("zip", "quad"))


def test_curate_whole_dag_with_quad_probes_risk_and_report(prefect_harness, tmp_path, pinned_small_corpus, tiny_lm,
                                                           monkeypatch):
    """ZIP, QUAD and both baselines: clusters, influence, QUAD, probes, risk verdict, report, lineage."""
    import mlflow

    from selectflow.flows.curate import curate

    path = write_config(
        tmp_path / "c.yaml", [{"path": str(pinned_small_corpus / "part-0[0-5].jsonl")}], tmp_path / "ws",
        reference=[{"path": str(SAMPLE / "reference.jsonl.zst")}],
        influence={"model_path": str(tiny_lm), "max_tokens": 64, "max_chunks": 1, "curvature_samples": 16},
        selection={"budget": 60, "selectors": [
            {"method": "zip", "k1": 200, "k2": 40, "k3": 20},
            # An untrained model's influence is noise around 0: a negative threshold rewards every pull.
            {"method": "quad", "pulls_per_round": 2, "samples_per_pull": 2, "block_size": 10, "threshold": -1.0},
            {"method": "dsir", "features": {"buckets": 4096}}, {"method": "random"},
            {"method": "topk", "candidates": 60}]},
        probe={"subsets": ["zip", "quad", "dsir", "random", "topk", "full"],  # 'full' only on request
               "tokenizer": "bytes", "tokens": 4096, "seeds": 2, "batch_size": 4, "evals": 4, "eval_tokens": 512,
               "model": {"hidden": 32, "intermediate": 64, "seq_len": 64},
               "unseen": [{"path": str(SAMPLE / "unseen.jsonl.zst")}]},
    )
    config = load_config(path)
    summary = curate(config)
    stages = {row["stage"]: row for row in summary["stages"]}
    assert stages["select_zip"]["docs_out"] == stages["select_quad"]["docs_out"] == 60
    assert {stages[name]["docs_out"] for name in ("select_random", "select_topk", "select_dsir")} == {60}
    # the largest costs have their rows too, with work time and no document counts
    for costly in ("influence_reference", "probe"):
        assert stages[costly]["work_s"] > 0 and stages[costly]["docs_in"] is None
    assert list(stages) == ["ingest", "dedup_exact", "dedup_near", "cluster", "influence_reference", "select_zip",
                            "select_quad", "select_dsir", "select_random", "select_topk", "probe"]
    assert set(summary["subsets"]) == {"select_zip", "select_quad", "select_dsir", "select_random", "select_topk"}
    # the random subset is there to compare with; no history yet, so no "law contradicted"
    assert summary["risk"]["verdict"] in {"ok", "at risk", "inconclusive"}
    assert "no uniform-sample noise" not in summary["risk"]["reason"]  # R's noise from the pool's uniform samples

    store = ArtifactStore(config.workspace / "store")
    run = load_run(store)
    # every deciding stage's decisions, reasons and output order, as computed before the stage contract (726c930)
    assert selection_digests(run) == {
        "dedup_exact": "31f0146cb316cea4", "dedup_near": "4a644bb0d2dad0ec", "cluster": "0325d63478ce8de4",
        "select_zip": "f328f38715ed38aa", "select_quad": "b8dc97bd9abd113c", "select_random": "778e38de9ec80ff4",
        "select_topk": "34fc626bc739e934"}
    probes = {stage: [ref.manifest()["stats"] for ref in run.refs(stage)] for stage in run.stages
              if stage.startswith("probe_")}
    assert set(probes) == {"probe_zip", "probe_quad", "probe_dsir", "probe_random", "probe_topk", "probe_full"}
    every = [stats for by_seed in probes.values() for stats in by_seed]
    assert all(sorted(stats["seed"] for stats in by_seed) == [0, 1] for by_seed in probes.values())  # paired seeds
    assert {(stats["tokens"], stats["epochs"], stats["tokenizer"]) for stats in every} == {(4096, 1.0, "bytes")}
    assert all(0 < stats["reference_bpb"] < stats["reference_initial_bpb"] and stats["unseen_bpb"] > 0
               for stats in every)
    # the same init per seed for every subset: the same held-out bits per byte before training
    for seed in (0, 1):
        initial = [s["reference_initial_bpb"] for s in every if s["seed"] == seed]
        assert initial == pytest.approx([initial[0]] * len(initial), rel=1e-5)
    assert every[0]["reference_initial_bpb"] != pytest.approx(
        next(s["reference_initial_bpb"] for s in every if s["seed"] != every[0]["seed"]), rel=1e-5)
    summarized = summary["probes"]
    assert summarized["budget_tokens"] == 4096 and summarized["seeds"] == [0, 1] and summarized["notes"] == []
    assert set(summarized["subsets"]) == {"zip", "quad", "dsir", "random", "topk", "full"}
    assert summarized["subsets"]["random"]["verdict"] == "the baseline"
    for name in ("zip", "quad", "dsir", "topk", "full"):
        row = summarized["subsets"][name]
        assert row["vs_random"] is not None and row["epochs"] == 1.0
        assert row["verdict"].startswith(("beats random by", "worse than random by", "indistinguishable from random"))

    quad = run.refs("select_quad")[0]
    detail = quad.read("quad_decisions").to_pylist()
    chosen = next(row for row in detail if row["selected"])
    lineage = doc_lineage(store, chosen["doc_id"])
    assert "select_quad" in lineage["final"] and lineage["final"].startswith("in: selected by")
    quad_decision = next(d for d in lineage["decisions"] if d["stage"] == "select_quad")
    assert f"cluster {chosen['cluster']}" == quad_decision["group"]
    assert f"round {chosen['round']}" in quad_decision["reason"]
    dsir = run.refs("select_dsir")[0].read("docs")["doc_id"][0].as_py()
    dsir_lineage = doc_lineage(store, dsir)
    assert dsir_lineage["final"].startswith("in: selected by") and "select_dsir" in dsir_lineage["final"].split(";")[0]
    assert "log importance weight" in next(d["reason"] for d in dsir_lineage["decisions"]
                                           if d["stage"] == "select_dsir")
    rounds = json.loads((Path(quad.path) / "rounds.json").read_text())
    assert rounds and all(len(r["pulled"]) == len(r["rewards"]) for r in rounds)

    report = Path(summary["report"])
    html = report.read_text()
    assert report.is_file() and html.count("data:image/png;base64,") >= 6
    assert "Recommended subset" in html and summarized["recommendation"].startswith(("Recommended: ", "No selector"))
    for section in ("Stage funnel", "Cluster composition", "Bandit", "ZIP", "Probe", "risk"):
        assert section.lower() in html.lower(), section

    client = mlflow.MlflowClient(config.tracking.tracking_uri)
    parent = client.get_run(summary["mlflow_run_id"])
    assert parent.data.tags["risk.verdict"] == summary["risk"]["verdict"]
    assert {"probe.zip.R_zlib", "probe.quad.L_bpb", "probe.quad.heldout_bpb", "probe.full.unseen_bpb",
            "probe.zip.vs_random.reference_bpb", "probe.zip.vs_random.reference_bpb.low", "probe.budget_tokens",
            "risk.zip.at_risk"} <= set(parent.data.metrics)
    assert parent.data.metrics["probe.seeds"] == 2
    assert parent.data.tags["probe.zip.verdict"] == summarized["subsets"]["zip"]["verdict"]
    assert parent.data.tags["probe.recommendation"] == summarized["recommendation"]
    assert parent.data.tags["probe.recommended"] == (summarized["recommended"] or "random")
    assert "report.html" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    quad_run = next(c for c in children if c.data.tags["selectflow.stage"] == "select_quad")
    assert len(client.get_metric_history(quad_run.info.run_id, "quad_reward_mean")) == len(rounds)

    # With enough history in this deployment's experiment, the history check fits held-out bpb on (R, L).
    import numpy as np

    experiment = client.create_experiment("history", artifact_location=(tmp_path / "mlruns-history").as_uri())
    rng = np.random.default_rng(0)
    for _ in range(config.risk.min_history):
        ratio, loss = rng.uniform(2.0, 3.5), rng.uniform(4.0, 7.0)  # L in bits per byte
        earlier = client.create_run(experiment, tags={"selectflow.deployment": "local"})
        for key, value in {"R_zlib": ratio, "L_bpb": loss,
                           "heldout_bpb": 2.0 + ratio + 0.3 * loss + rng.normal(0, 0.05)}.items():
            client.log_metric(earlier.info.run_id, f"probe.random.{key}", value)
        client.set_terminated(earlier.info.run_id)
    config.tracking.experiment = "history"
    with_history = curate(config)
    assert f"Over {config.risk.min_history} earlier probe results, held-out bpb =" in with_history["risk"]["reason"]
    assert with_history["risk"]["verdict"] != "law contradicted"  # the history's R coefficient is positive
    latest = client.get_run(with_history["mlflow_run_id"])
    assert {"risk.zip.predicted_loss", "risk.zip.interval_low", "risk.zip.interval_high"} <= set(latest.data.metrics)
    page = Path(with_history["report"]).read_text()
    assert "predicted held-out bpb" in page and "90% interval" in page and "No fit yet" not in page

    # risk.fail_on_risk: a re-run (every stage cached) whose check says "at risk" fails after recording everything.
    import selectflow.flows.curate as curate_module
    import selectflow.flows.recorder as recorder_module
    from selectflow.risk import AT_RISK, RiskVerdict, SubsetAssessment

    def at_risk(probes, history, cfg, confidence):
        verdict = RiskVerdict(AT_RISK, "reference", "higher R and lower L than the random subset", {})
        return [SubsetAssessment("zip", (verdict,), verdict)]

    monkeypatch.setattr(recorder_module, "assess_risk", at_risk)
    config.risk.fail_on_risk = True
    with pytest.raises(curate_module.SubsetAtRisk, match="at risk.*higher R and lower L"):
        curate(config)
    rerun = load_run(store)
    assert rerun.run_id != run.run_id and rerun.status == "completed" and rerun.summary["risk"]["verdict"] == AT_RISK


def selection_digests(run) -> dict[str, str]:
    """Per deciding stage: a digest of its decisions (doc, decision, reason, kept copy, group) and of the order of its
    output documents; for the influence-scored subsets, of the decisions and order only (their reasons print
    floats of a model's scores)."""
    digests = {}
    for stage in ("dedup_exact", "dedup_near", "cluster", "select_zip", "select_quad", "select_random", "select_topk"):
        columns = ["doc_id", "decision"] + ([] if stage in ("select_quad", "select_topk") else
                                            ["reason", "ref_doc_id", "group"])
        digest = hashlib.sha256()
        for ref in run.refs(stage):
            digest.update(json.dumps(ref.read("decisions", columns=columns).to_pylist()).encode())
            if ref.files("docs"):
                digest.update(json.dumps(ref.read("docs", columns=["doc_id"])["doc_id"].to_pylist()).encode())
        digests[stage] = digest.hexdigest()[:16]
    return digests
