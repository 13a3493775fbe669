"""The stage contract: declarations in one registry, decisions through one builder, counts every stage reports."""

import pyarrow as pa
import pytest

from selectflow.schema import decisions_table
from selectflow.stages.base import Decisions, Kind, Stage, register, stage_of_name, stages, write_decisions
from selectflow.store import ArtifactStore


def test_the_registry_declares_the_dag_in_order():
    assert [s.name for s in stages(Kind.FILTER)] == ["dedup_exact", "dedup_near", "cluster"]
    assert [s.subset for s in stages(Kind.SELECTOR)] == ["zip", "quad"]
    assert [s.subset for s in stages(Kind.BASELINE)] == ["random", "topk"]
    rows = [s.name for s in stages() if s.row]
    assert rows == ["ingest", "dedup_exact", "dedup_near", "cluster", "influence_reference", "select_zip",
                    "select_quad", "select_random", "select_topk", "probe"]
    assert stage_of_name("dedup_near").work_of == ("minhash",)


def test_a_stage_is_declared_once():
    zip_stage = stage_of_name("select_zip")
    assert register(zip_stage) is zip_stage  # the same declaration again is fine
    with pytest.raises(ValueError, match="already registered"):
        register(Stage("select_zip", Kind.BASELINE, "another", subset="other"))
    with pytest.raises(ValueError, match="name their subset"):
        Stage("toy_selector", Kind.SELECTOR, "toy")
    with pytest.raises(ValueError, match="name their subset"):
        Stage("toy_filter", Kind.FILTER, "toy", subset="toy")
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
