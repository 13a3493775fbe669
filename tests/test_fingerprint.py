"""Code fingerprints come from the imports: a stage's artifacts are rebuilt when its own module or anything it
imports changes, and stay cached when unrelated code changes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from selectflow.fingerprint import DECLARATIONS, PACKAGE_ROOT, closure_fingerprint, code_fingerprint, import_closure

STAGE_MODULES = sorted(f"selectflow.stages.{path.stem}" for path in (PACKAGE_ROOT / "stages").glob("*.py")
                       if path.stem not in ("__init__", "base", "registry", "pool"))


@pytest.fixture
def package_copy(tmp_path) -> Path:
    """A copy of the selectflow package's sources (no data) to edit."""
    copy = tmp_path / "src" / "selectflow"
    shutil.copytree(PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__", "data"))
    return copy


def _loaded_selectflow_modules(module: str) -> set[str]:
    """The selectflow modules a fresh interpreter has loaded after importing `module`."""
    script = (f"import importlib, json, sys; importlib.import_module({module!r}); "
              "print(json.dumps(sorted(name for name in sys.modules if name.split('.')[0] == 'selectflow')))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_a_stage_loads_no_selectflow_module_outside_its_closure():
    """Fails when a stage reaches code its fingerprint does not cover (an import by computed name, say)."""
    for module in STAGE_MODULES:
        uncovered = _loaded_selectflow_modules(module) - set(import_closure(module)) - DECLARATIONS
        assert not uncovered, f"{module} loads {sorted(uncovered)}, which its code fingerprint does not cover"


def test_closure_follows_imports_inside_functions_and_the_packages_on_the_way():
    closure = import_closure("selectflow.stages.select_quad")
    assert "selectflow.stages.influence" in closure  # imported inside _load_scorer
    assert {"selectflow", "selectflow.select", "selectflow.select.quad", "selectflow.config"} <= set(closure)
    assert "selectflow.probe.train" not in closure and "selectflow.cli" not in closure
    with pytest.raises(ValueError, match="not a module"):
        closure_fingerprint("selectflow.no_such_stage")


def test_editing_a_module_changes_the_fingerprint_of_exactly_the_stages_that_import_it(package_copy):
    root = package_copy
    before = {module: closure_fingerprint(module, root) for module in STAGE_MODULES}
    assert before == {module: code_fingerprint(module) for module in STAGE_MODULES}  # contents, not paths

    def changed_after_editing(relative: str) -> set[str]:
        with open(root / relative, "a", encoding="utf-8") as handle:
            handle.write("\n# edited\n")
        after = {module: closure_fingerprint(module, root) for module in STAGE_MODULES}
        changed = {module for module in STAGE_MODULES if after[module] != before[module]}
        before.update(after)
        return changed

    def importers(module: str) -> set[str]:
        return {stage for stage in STAGE_MODULES if module in import_closure(stage, root)}

    dedup_stage = "selectflow.stages.dedup"
    assert changed_after_editing("stages/dedup.py") == importers(dedup_stage) >= {dedup_stage}
    assert changed_after_editing("dedup/minhash.py") == importers("selectflow.dedup.minhash")
    assert "selectflow.stages.probe" not in importers("selectflow.dedup.minhash")
    assert changed_after_editing("probe/train.py") == {"selectflow.stages.probe"}
    assert changed_after_editing("cli.py") == set()  # no stage imports the CLI
    assert changed_after_editing("stages/registry.py") == set()  # declarations: names are in the keys already
    assert changed_after_editing("stages/base.py") == importers("selectflow.stages.base") >= {dedup_stage}


def test_an_edited_stage_module_rebuilds_its_artifacts_and_leaves_the_others_cached(package_copy, tmp_path):
    """Ingest then exact dedup, run twice from the package copy with its dedup stage module edited in between."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": text}) + "\n" for text in ["a b c", "d e f", "a b c"]))
    script = f"""
import json
from selectflow.config import ExactDedupConfig, IngestConfig, InputSpec
from selectflow.ingest import plan_inputs
from selectflow.stages.dedup import exact_dedup
from selectflow.stages.ingest import ingest_file
from selectflow.store import ArtifactStore

store = ArtifactStore({str(tmp_path / "ws")!r})
cfg = IngestConfig(inputs=[InputSpec(path={str(corpus)!r})])
ingested = [ingest_file(store, file, cfg) for file in plan_inputs(cfg)]
exact = exact_dedup(store, [shard for ref in ingested for shard in ref.shards("docs")], ExactDedupConfig())
import selectflow
print(json.dumps({{"imported_from": selectflow.__file__, "ingest": [ref.key for ref in ingested],
                  "dedup_exact": exact.key,
                  "dropped": exact.read("decisions")["decision"].to_pylist().count("dropped")}}))
"""
    env = {**os.environ, "PYTHONPATH": str(package_copy.parent)}

    def run() -> dict:
        # cwd: not the checkout, whose selectflow would shadow the copy
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                              check=False, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.splitlines()[-1])

    first = run()
    assert first["imported_from"].startswith(str(package_copy))
    assert run() == first  # nothing edited: every artifact reused
    with open(package_copy / "stages" / "dedup.py", "a", encoding="utf-8") as handle:
        handle.write("\n# an edit to the stage's own logic\n")
    second = run()
    assert second["ingest"] == first["ingest"]  # unrelated stage: cached
    assert second["dedup_exact"] != first["dedup_exact"] and second["dropped"] == first["dropped"] == 1
    assert len(list((tmp_path / "ws" / "artifacts" / "ingest").iterdir())) == len(first["ingest"])
    assert len(list((tmp_path / "ws" / "artifacts" / "dedup_exact").iterdir())) == 2
