"""The stage contract: declarations in one registry, decisions through one builder, counts every stage reports."""

import pyarrow as pa
import pytest

from selectflow.schema import decisions_table
from selectflow.stages.base import Decisions, Kind, Stage, register, stage_of_name, stages, write_decisions
from selectflow.store import ArtifactRef, ArtifactStore


def test_the_registry_declares_the_dag_in_order():
    assert [s.name for s in stages(Kind.FILTER)] == ["dedup_exact", "dedup_near", "cluster"]
    assert [s.subset for s in stages(Kind.SELECTOR)] == ["zip", "quad", "dsir", "mixture"]
    assert [s.subset for s in stages(Kind.BASELINE)] == ["random", "topk"]
    rows = [s.name for s in stages() if s.row]
    assert rows == ["ingest", "dedup_exact", "dedup_near", "cluster", "influence_reference", "select_zip",
                    "select_quad", "select_dsir", "select_mixture", "select_random", "select_topk", "probe",
                    "curriculum"]
    assert stage_of_name("dedup_near").work_of == ("minhash",)


def test_a_stage_is_declared_once():
    zip_stage = stage_of_name("select_zip")
    assert register(zip_stage) is zip_stage  # the same declaration again is fine
    with pytest.raises(ValueError, match="already registered"):
        register(Stage("select_zip", Kind.BASELINE, subset="other"))
    with pytest.raises(ValueError, match="name their subset"):
        Stage("toy_selector", Kind.SELECTOR)
    with pytest.raises(ValueError, match="name their subset"):
        Stage("toy_filter", Kind.FILTER, subset="toy")
    with pytest.raises(KeyError, match="no stage 'nope'"):
        stage_of_name("nope")


def test_decisions_builder_matches_the_decisions_table_and_counts():
    decisions = Decisions("toy")
    decisions.add("a", "kept", "first")
    decisions.add("b", "dropped", "copy of a", ref="a", score=0.9, group="g")
    decisions.add("c", "selected", "picked")
    expected = decisions_table(["a", "b", "c"], "toy", ["kept", "dropped", "selected"],
                               ["first", "copy of a", "picked"], [None, "a", None], [None, 0.9, None],
                               [None, "g", None])
    assert decisions.table().equals(expected)
    assert decisions.counts() == {"docs_in": 3, "docs_out": 2, "dropped": 1}


def test_write_decisions_refuses_output_that_disagrees_with_the_decisions(tmp_path):
    store = ArtifactStore(tmp_path)
    decisions = Decisions("toy")
    decisions.add("a", "kept", "first")
    decisions.add("b", "dropped", "copy")
    docs = pa.table({"doc_id": ["a", "b"]})
    with pytest.raises(ValueError, match="2 output documents but 1 decided kept"):
        store.build("toy", {}, [], "code", lambda writer: write_decisions(writer, decisions, docs))
    ref = store.build("toy", {}, [], "code", lambda writer: write_decisions(writer, decisions, docs.slice(0, 1), x=1))
    assert ref.manifest()["stats"] == {"docs_in": 2, "docs_out": 1, "dropped": 1, "x": 1}
    assert ref.read("decisions")["decision"].to_pylist() == ["kept", "dropped"]


def _toy_filter(store: ArtifactStore, texts: list[str], min_chars: int, log) -> ArtifactRef:
    """A stage as a flow runs it: store first, its inputs, and `log` (which the generic task supplies)."""

    def write(writer):
        decisions = Decisions("toy_filter")
        for index, text in enumerate(texts):
            kept = len(text) >= min_chars
            decisions.add(f"doc{index}", "kept" if kept else "dropped", f"{len(text)} characters")
        log(f"toy filter: {decisions.kept()} of {len(decisions)} kept")
        write_decisions(writer, decisions, given_a_logger=callable(log))

    return store.build("toy_filter", {"min_chars": min_chars}, texts, "toy-code", write)


def test_the_generic_task_runs_any_stage_function(prefect_harness, tmp_path):
    from prefect import flow

    from selectflow.flows.runner import run_stages

    @flow
    def toy_flow() -> list:
        return run_stages(_toy_filter, "toy-filter", str(tmp_path), [
            {"texts": ["a long enough text", "short"], "min_chars": 10},
            {"texts": ["tiny"], "min_chars": 1},
        ], "toy", label=lambda call: f"toy filter of {len(call['texts'])}")

    first, second = toy_flow()
    assert first.manifest()["stats"] == {"docs_in": 2, "docs_out": 1, "dropped": 1, "given_a_logger": True}
    assert second.read("decisions")["decision"].to_pylist() == ["kept"]


def test_baselines_get_the_budget_the_selectors_take():
    from selectflow.config import SelectionConfig
    from selectflow.stages.selection import budgets_by_method

    zip_only = SelectionConfig(budget=150, selectors=[{"method": "zip", "k1": 400, "k2": 50, "k3": 40},
                                                      {"method": "random"}])
    budgets = budgets_by_method(zip_only)
    assert budgets["zip"].budget == 150 and budgets["random"].budget == 160  # ZIP picks whole rounds of k3
    both = zip_only.model_copy(update={"selectors": [*zip_only.selectors, *SelectionConfig(
        selectors=[{"method": "quad"}, {"method": "topk"}]).selectors]})
    assert {method: b.budget for method, b in budgets_by_method(both).items()} == {
        "zip": 150, "quad": 150, "random": 150, "topk": 150}
    tokens = SelectionConfig(budget=4096, budget_unit="tokens", selectors=[{"method": "zip"}, {"method": "random"}])
    assert budgets_by_method(tokens)["random"] == tokens.budget_of  # a tokens budget is met, not rounded
    assert [s.method for s in SelectionConfig(selectors=[]).selectors] == []
