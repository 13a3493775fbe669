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


def built(store, name="s", rows=4):
    """An artifact with two table parts and two side files, built through the cache."""

    def write(writer):
        writer.write("docs", table(rows))
        writer.write("docs", table(rows + 1))
        writer.write_json("rounds.json", [{"round": 1}])
        writer.file("centroids.bin").write_bytes(b"\x01" * 64)

    return store.build(name, {"a": 1}, ["in"], "v1", write)


def test_manifest_vouches_for_every_file_and_checkpoints_go_on_commit(tmp_path):
    store = ArtifactStore(tmp_path)
    with store.writer("s", "k", [], {}, "v1") as writer:
        (writer.checkpoint_dir / "state.npz").write_bytes(b"progress")
        writer.write("docs", table(2))
        ref = writer.commit()
    assert {f["name"] for f in ref.manifest()["files"]} == {"docs-00000.parquet"}
    assert not (tmp_path / "checkpoints" / "s" / "k").exists()
    ref = built(store)
    files = {f["name"]: f for f in ref.manifest()["files"]}
    assert set(files) == {"docs-00000.parquet", "docs-00001.parquet", "rounds.json", "centroids.bin"}
    assert files["centroids.bin"]["bytes"] == 64 and ref.verify() == []


@pytest.mark.parametrize("damage", ["truncate", "edit", "delete", "manifest"])
def test_damaged_artifact_is_quarantined_and_rebuilt(tmp_path, damage, caplog):
    store = ArtifactStore(tmp_path)
    ref = built(store)
    folder = tmp_path / "artifacts" / "s" / ref.key
    part, side = folder / "docs-00001.parquet", folder / "centroids.bin"
    if damage == "truncate":
        part.write_bytes(part.read_bytes()[:-10])
    elif damage == "edit":  # same size, other bytes: only the sha256 can tell
        side.write_bytes(b"\x02" * 64)
    elif damage == "delete":
        part.unlink()
    else:
        (folder / "manifest.json").write_text("{not json")
    assert ref.verify() != []

    rebuilt = built(store)
    assert rebuilt == ref and rebuilt.verify() == [] and rebuilt.read("docs").num_rows == 9
    (moved,) = (tmp_path / "quarantine" / "s").iterdir()
    assert moved.name.startswith(ref.key)
    note = json.loads((moved / "DAMAGE.json").read_text())
    assert note["artifact"] == f"s/{ref.key}" and note["problems"]
    assert "damaged artifact s/" in caplog.text and str(moved) in caplog.text
    expected = {"truncate": "docs-00001.parquet", "edit": "centroids.bin", "delete": "docs-00001.parquet: missing",
                "manifest": "unreadable manifest"}[damage]
    assert expected in " ".join(note["problems"])


def test_intact_cache_hit_is_not_rebuilt(tmp_path):
    store = ArtifactStore(tmp_path)
    ref = built(store)
    created = ref.manifest()["created_at"], (tmp_path / "artifacts" / "s" / ref.key / "manifest.json").stat().st_mtime_ns
    assert store.build("s", {"a": 1}, ["in"], "v1", lambda writer: pytest.fail("an intact artifact was rebuilt")) == ref
    assert (ref.manifest()["created_at"],
            (tmp_path / "artifacts" / "s" / ref.key / "manifest.json").stat().st_mtime_ns) == created
    assert not (tmp_path / "quarantine").exists()
