import json

import pyarrow as pa
import pytest

from selectflow.store import ArtifactStore, stable_hash


def table(n):
    return pa.table({"x": list(range(n))})


def test_key_depends_on_config_inputs_and_code(tmp_path):
    store = ArtifactStore(tmp_path)
    base = store.key("s", {"a": 1}, ["i1", "i2"], "v1")
    assert base == store.key("s", {"a": 1}, ["i2", "i1"], "v1")  # input order does not matter
    assert base != store.key("s", {"a": 2}, ["i1", "i2"], "v1")
    assert base != store.key("s", {"a": 1}, ["i1"], "v1")
    assert base != store.key("s", {"a": 1}, ["i1", "i2"], "v2")
    assert base != store.key("t", {"a": 1}, ["i1", "i2"], "v1")
    assert stable_hash({"b": 1, "a": 2}) == stable_hash({"a": 2, "b": 1})


def test_commit_writes_manifest_and_parts(tmp_path):
    store = ArtifactStore(tmp_path)
    with store.writer("s", "k1", ["in"], {"a": 1}, "v1") as writer:
        writer.write("docs", table(3))
        writer.write("docs", table(2))
        writer.stats(docs=5)
        ref = writer.commit()
    manifest = ref.manifest()
    assert manifest["tables"]["docs"]["rows"] == 5
    assert [f["rows"] for f in manifest["tables"]["docs"]["files"]] == [3, 2]
    assert manifest["inputs"] == ["in"] and manifest["stats"] == {"docs": 5}
    assert ref.read("docs").num_rows == 5
    assert [s.rows for s in ref.shards("docs")] == [3, 2]
    assert store.get("s", "k1") == ref


def test_failed_write_leaves_no_artifact(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(RuntimeError):
        with store.writer("s", "k2", [], {}, "v1") as writer:
            writer.write("docs", table(3))
            raise RuntimeError("worker died")
    assert store.get("s", "k2") is None
    assert not list((tmp_path / "tmp").iterdir())


def test_uncommitted_writer_is_invisible(tmp_path):
    """A writer killed before commit (no __exit__) leaves only a tmp folder, never a visible artifact."""
    store = ArtifactStore(tmp_path)
    writer = store.writer("s", "k3", [], {}, "v1")
    writer.write("docs", table(1))
    assert store.get("s", "k3") is None
    assert store.clean_tmp(older_than_s=0) == 1


def test_second_commit_of_same_key_keeps_first(tmp_path):
    store = ArtifactStore(tmp_path)
    first = store.writer("s", "k4", [], {}, "v1")
    second = store.writer("s", "k4", [], {}, "v1")
    first.write("docs", table(1))
    second.write("docs", table(1))
    ref = first.commit()
    created = json.loads((tmp_path / "artifacts/s/k4/manifest.json").read_text())["created_at"]
    assert second.commit() == ref
    assert ref.manifest()["created_at"] == created
    assert not list((tmp_path / "tmp").iterdir())
