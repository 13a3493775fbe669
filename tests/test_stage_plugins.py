"""A selector and a document filter declared outside selectflow, each in one module (tests/toy_stages), registered
there and nowhere else: the config takes them, the DAG runs them, and every view of a run shows them."""

import re
import sys
from pathlib import Path

import mlflow
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import SAMPLE, write_config

from selectflow.config import ConfigError, load_config
from selectflow.lineage import doc_lineage
from selectflow.runs import load_run
from selectflow.store import ArtifactStore


@pytest.fixture
def toy_stages(monkeypatch):
    """The config entry that imports the toy stages' modules; what they register lasts for this test only (the
    registry is the process's)."""
    from selectflow.stages import base

    base.stages()  # the built-ins, before the copy
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    for name in [name for name in sys.modules if name.startswith("toy_stages")]:
        monkeypatch.delitem(sys.modules, name)
    yield ["toy_stages.min_length", "toy_stages.shortest"]
    for name in [name for name in sys.modules if name.startswith("toy_stages")]:
        del sys.modules[name]


def test_unregistered_methods_are_refused_by_name(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("ingest: {inputs: [{path: data.jsonl}]}\nprobe: {enabled: false}\n"
                    "selection: {selectors: [{method: shortest}]}\n")
    with pytest.raises(ConfigError,
                       match=r"no selector 'shortest' is registered \(known: zip, quad, dsir, mixture, random, topk\)"):
        load_config(path)
    path.write_text("ingest: {inputs: [{path: data.jsonl}]}\nfilters: [{method: min_length}]\n")
    with pytest.raises(ConfigError, match="no filter 'min_length' is registered"):
        load_config(path)
    path.write_text("ingest: {inputs: [{path: data.jsonl}]}\nstage_modules: [no_such_module]\n")
    with pytest.raises(ConfigError, match="stage_modules: cannot import 'no_such_module'"):
        load_config(path)


def test_a_registered_filter_and_selector_show_in_funnel_lineage_probes_risk_and_report(
        prefect_harness, tmp_path, small_corpus, toy_stages):
    from selectflow.flows.curate import curate

    path = write_config(
        tmp_path / "c.yaml", [{"path": str(small_corpus / "part-0[0-5].jsonl")}], tmp_path / "ws",
        reference=[{"path": str(SAMPLE / "reference.jsonl.zst")}],
        stage_modules=toy_stages,  # the one place the run learns of them
        filters=[{"method": "min_length", "min_chars": 60}],
        selection={"budget": 8192, "budget_unit": "tokens", "token_counter": "bytes",
                   "selectors": [{"method": "shortest"}, {"method": "random"}]},
        probe={"tokenizer": "bytes", "tokens": 4096, "seeds": 2, "batch_size": 4, "evals": 4, "eval_tokens": 512,
               "model": {"hidden": 32, "intermediate": 64, "seq_len": 64},
               "unseen": [{"path": str(SAMPLE / "unseen.jsonl.zst")}]},
    )
    config = load_config(path)
    summary = curate(config)

    # funnel: the filter's row in DAG order (before exact dedup, where it runs), the selector's after the built-ins
    rows = {row["stage"]: row for row in summary["stages"]}
    assert list(rows) == ["ingest", "filter_min_length", "dedup_exact", "dedup_near", "cluster", "select_shortest",
                          "select_random", "probe"]
    assert rows["filter_min_length"]["docs_in"] == rows["ingest"]["docs_out"]
    assert rows["filter_min_length"]["dropped"] > 0
    assert rows["dedup_exact"]["docs_in"] == rows["filter_min_length"]["docs_out"]
    assert set(summary["subsets"]) == {"select_shortest", "select_random"}

    # lineage: why a document is out (the filter) and why one is in (the selector)
    store = ArtifactStore(config.workspace / "store")
    run = load_run(store)
    decisions = pa.concat_tables([ref.read("decisions") for ref in run.refs("filter_min_length")])
    dropped = decisions.filter(pc.equal(decisions["decision"], "dropped")).to_pylist()[0]
    lineage = doc_lineage(store, dropped["doc_id"])
    assert lineage["final"] == "out: dropped at filter_min_length"
    assert "fewer than min_chars=60" in lineage["decisions"][-1]["reason"]
    chosen = run.refs("select_shortest")[0].read("docs", columns=["doc_id"])["doc_id"][0].as_py()
    lineage = doc_lineage(store, chosen)
    assert lineage["final"].startswith("in: selected by select_shortest")
    assert any(d["stage"] == "select_shortest" and "#1 shortest" in d["reason"] for d in lineage["decisions"])

    # probes: trained on the new subset, compared with random, with a verdict
    probes = summary["probes"]["subsets"]
    assert set(probes) == {"shortest", "random"}
    assert probes["shortest"]["vs_random"] is not None
    assert probes["shortest"]["verdict"].startswith(("beats random by", "worse than random by",
                                                     "indistinguishable from random"))

    # risk: the entropy-law check covers it
    client = mlflow.MlflowClient(config.tracking.tracking_uri)
    parent = client.get_run(summary["mlflow_run_id"])
    assert {"risk.shortest.at_risk", "probe.shortest.vs_random.reference_bpb"} <= set(parent.data.metrics)

    # report: its funnel row, its probe results and its risk line
    html = Path(summary["report"]).read_text()
    for key, needle in (("funnel", "filter_min_length"), ("funnel", "select_shortest"), ("probes", "shortest"),
                        ("risk", "shortest")):
        section = re.search(rf'<section id="{key}">(.*?)</section>', html, re.DOTALL)
        assert section and needle in section.group(1), (key, needle)
