"""Content-addressed artifact store.

An artifact is a folder `<root>/artifacts/<stage>/<key>/` of Parquet tables plus `manifest.json`. Its key hashes
the stage name, the stage config, the keys of its input artifacts (or input file fingerprints) and the code version,
so the same inputs through the same code always land on the same key, and a finished artifact is never recomputed.
Writes go to a temporary folder that is renamed into place only when complete: a crash leaves no half artifact.

The manifest records the size and sha256 of every file of the artifact, and the store checks them on every cache hit
(sha256 runs at ~1.4 GB/s on one core here, so a full check costs far less than any stage it saves). A damaged
artifact (a file missing, truncated or edited, an unreadable manifest) is logged, moved aside to
`<root>/quarantine/<stage>/` with a note of what was wrong, and rebuilt.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from selectflow import __version__

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


def stable_hash(*parts: Any, size: int = 16) -> str:
    """Hash of JSON-serializable parts, independent of dict order."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.blake2b(blob, digest_size=size).hexdigest()


def source_version(paths) -> str:
    """Package version plus a hash of the given source files."""
    digest = hashlib.blake2b(digest_size=6)
    for path in paths:
        digest.update(Path(path).read_bytes())
    return f"{__version__}+{digest.hexdigest()}"


@functools.lru_cache(maxsize=1)
def package_code_version() -> str:
    """Version of the whole selectflow package: any code change invalidates task caches."""
    return source_version(sorted(Path(__file__).parent.rglob("*.py")))


def manifest_files(manifest: dict) -> list[dict]:
    """Every file a manifest vouches for: all of them (name, bytes, sha256) since manifests list them; the table
    parts alone (name, sha256) in older manifests."""
    if "files" in manifest:
        return manifest["files"]
    return [entry for table in manifest.get("tables", {}).values() for entry in table["files"]]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Shard:
    """One Parquet part of an artifact table: the unit of per-shard work downstream."""

    path: str
    sha256: str
    rows: int


@dataclass(frozen=True)
class ArtifactRef:
    """What tasks pass between each other: small, picklable, enough to find the artifact."""

    stage: str
    key: str
    path: str

    def exists(self) -> bool:
        return (Path(self.path) / MANIFEST).is_file()

    def manifest(self) -> dict:
        return json.loads((Path(self.path) / MANIFEST).read_text())

    def verify(self) -> list[str]:
        """What is wrong with the artifact's files against its manifest (sizes first, then sha256); [] if intact."""
        folder = Path(self.path)
        try:
            manifest = self.manifest()
        except (OSError, ValueError) as exc:
            return [f"{folder / MANIFEST}: unreadable manifest ({exc})"]
        problems = []
        for entry in manifest_files(manifest):
            path = folder / entry["name"]
            try:
                size = path.stat().st_size
            except OSError:
                problems.append(f"{path}: missing")
                continue
            if "bytes" in entry and size != entry["bytes"]:
                problems.append(f"{path}: {size} bytes, the manifest says {entry['bytes']}")
            elif file_sha256(path) != entry["sha256"]:
                problems.append(f"{path}: content differs from the manifest's sha256")
        return problems

    def files(self, table: str) -> list[str]:
        """Parquet files of one named table, in write order."""
        entries = self.manifest()["tables"].get(table, {}).get("files", [])
        return [str(Path(self.path) / entry["name"]) for entry in entries]

    def shards(self, table: str) -> list[Shard]:
        entries = self.manifest()["tables"].get(table, {}).get("files", [])
        return [Shard(str(Path(self.path) / e["name"]), e["sha256"], e["rows"]) for e in entries]

    def read(self, table: str, columns: list[str] | None = None) -> pa.Table:
        files = self.files(table)
        if not files:
            raise KeyError(f"artifact {self.stage}/{self.key} has no table {table!r}")
        return pa.concat_tables([pq.read_table(name, columns=columns) for name in files])

    def rows(self, table: str) -> int:
        return self.manifest()["tables"].get(table, {}).get("rows", 0)


class ArtifactWriter:
    """Collects tables into a temporary folder; `commit()` writes the manifest and renames it into place."""

    def __init__(self, store: ArtifactStore, stage: str, key: str, inputs: list[str], config: dict, code: str):
        self.store, self.stage, self.key = store, stage, key
        self.tmp = store.root / "tmp" / f"{stage}-{key}-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir(parents=True)
        self.manifest: dict[str, Any] = {
            "stage": stage,
            "key": key,
            "code_version": code,
            "config": config,
            "inputs": inputs,
            "tables": {},
            "stats": {},
        }
        self._started = time.perf_counter()

    def write(self, table: str, data: pa.Table) -> None:
        """Append `data` as the next Parquet part of `table` (empty tables are recorded, with their schema)."""
        entry = self.manifest["tables"].setdefault(table, {"rows": 0, "files": []})
        name = f"{table}-{len(entry['files']):05d}.parquet"
        pq.write_table(data, self.tmp / name, compression="zstd")
        entry["files"].append({"name": name, "rows": data.num_rows, "sha256": file_sha256(self.tmp / name)})
        entry["rows"] += data.num_rows

    def write_json(self, name: str, payload: Any) -> None:
        (self.tmp / name).write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))

    def file(self, name: str) -> Path:
        """Where to write a non-table file (arrays, model state) that is committed with the artifact."""
        return self.tmp / name

    @property
    def checkpoint_dir(self) -> Path:
        """A folder that outlives a killed writer (unlike `tmp`): a long stage saves its progress here and resumes
        from it when the same artifact is built again. Removed once the artifact is committed."""
        folder = self.store.root / "checkpoints" / self.stage / self.key
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def stats(self, **values: Any) -> None:
        self.manifest["stats"].update(values)

    def commit(self) -> ArtifactRef:
        self.manifest["seconds"] = round(time.perf_counter() - self._started, 3)
        self.manifest["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        hashed = {entry["name"]: entry["sha256"] for entry in manifest_files(self.manifest)}
        self.manifest["files"] = [
            {"name": name, "bytes": path.stat().st_size, "sha256": hashed.get(name) or file_sha256(path)}
            for path in sorted(p for p in self.tmp.rglob("*") if p.is_file())
            if (name := path.relative_to(self.tmp).as_posix()) != MANIFEST
        ]
        (self.tmp / MANIFEST).write_text(json.dumps(self.manifest, indent=2, sort_keys=True, default=str))
        final = self.store.artifact_dir(self.stage, self.key)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(self.tmp, final)
        except OSError:
            if not (final / MANIFEST).is_file():
                raise
            shutil.rmtree(self.tmp, ignore_errors=True)  # another worker finished the same artifact first
        shutil.rmtree(self.store.root / "checkpoints" / self.stage / self.key, ignore_errors=True)
        return ArtifactRef(self.stage, self.key, str(final))

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


class ArtifactStore:
    def __init__(self, root: str | Path):
        self.root = Path(root).absolute()
        (self.root / "artifacts").mkdir(parents=True, exist_ok=True)
        (self.root / "runs").mkdir(parents=True, exist_ok=True)

    def key(self, stage: str, config: dict, inputs: list[str], code: str) -> str:
        return stable_hash(stage, config, sorted(inputs), code)

    def artifact_dir(self, stage: str, key: str) -> Path:
        return self.root / "artifacts" / stage / key

    def get(self, stage: str, key: str) -> ArtifactRef | None:
        """The finished artifact, verified against its manifest; None if absent or damaged (then moved aside)."""
        folder = self.artifact_dir(stage, key)
        if not folder.exists():
            return None
        ref = ArtifactRef(stage, key, str(folder))
        if problems := ref.verify():
            moved = self.quarantine(ref, problems)
            log.warning("damaged artifact %s/%s moved to %s and rebuilt: %s", stage, key, moved, "; ".join(problems))
            return None
        return ref

    def artifacts(self) -> list[ArtifactRef]:
        """Every artifact folder in the store, finished or not."""
        return [ArtifactRef(folder.parent.name, folder.name, str(folder))
                for folder in sorted((self.root / "artifacts").glob("*/*")) if folder.is_dir()]

    def quarantine(self, ref: ArtifactRef, problems: list[str]) -> Path:
        """Move a damaged artifact out of the store (kept for inspection, never deleted), with a note of why."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.root / "quarantine" / ref.stage / f"{ref.key}-{stamp}-{uuid.uuid4().hex[:6]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(ref.path, target)
        except FileNotFoundError:  # another worker moved it first
            return target
        (target / "DAMAGE.json").write_text(json.dumps({"artifact": f"{ref.stage}/{ref.key}", "problems": problems,
                                                        "quarantined_at": stamp}, indent=2))
        return target

    def writer(self, stage: str, key: str, inputs: list[str], config: dict, code: str) -> ArtifactWriter:
        return ArtifactWriter(self, stage, key, inputs, config, code)

    def build(
        self, stage: str, config: dict, inputs: list[str], code: str, write: Callable[[ArtifactWriter], None]
    ) -> ArtifactRef:
        """The artifact for these inputs, config and code: found in the store, or written by `write` and committed."""
        key = self.key(stage, config, inputs, code)
        if cached := self.get(stage, key):
            return cached
        with self.writer(stage, key, inputs, config, code) as writer:
            write(writer)
            return writer.commit()

    def clean_tmp(self, older_than_s: float = 3600) -> int:
        """Remove temporary folders left by killed writers."""
        removed = 0
        now = time.time()
        for folder in (self.root / "tmp").glob("*"):
            if now - folder.stat().st_mtime > older_than_s:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed

