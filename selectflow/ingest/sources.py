"""Finding inputs: expand every InputSpec into a deterministic list of work units (`InputFile`).

Rules (see also the package docstring):

* A path is a local path (``~`` expanded, made absolute) or any fsspec URL (``file://``, ``s3://``, ``memory://``, ...).
  Every unit is named by its canonical URI (``fs.unstrip_protocol``; local paths become ``file:///abs/path``
  with ``..`` resolved but symlinks not followed). That URI is what `doc_id` hashes.
* An existing file is one unit. Its format is the spec's format, or with ``format: auto`` decided by extension
  after stripping a compression suffix (``.gz .zst .zstd .bz2 .xz``): ``.jsonl .json .ndjson`` -> jsonl,
  ``.parquet .pq`` -> parquet, anything else -> text.
* A path that does not exist but contains glob characters (``* ? [``) is expanded with ``fs.glob`` (``**`` recurses);
  directories among the matches are ignored (a glob selects files).
* A directory:
  - ``format: jsonl`` / ``parquet``: every file below it (recursively) whose extension is of that format;
  - ``format: text``: the files matching ``spec.text_glob`` (relative to the directory);
  - ``format: auto``: if anything below it has a jsonl/parquet extension, exactly those files (each by its own
    extension; other files are ignored); otherwise the files matching ``spec.text_glob`` as text.
* Text files found through a directory or a glob are grouped (see `InputFile`): one unit of format ``textdir``
  per directory/glob, split into parts of at most TEXT_GROUP_MAX_FILES files / TEXT_GROUP_MAX_BYTES bytes.
  A single text file named directly is a unit of format ``text``.
* Nothing found, a path that does not exist, a file that cannot be read, or one file selected by two inputs
  (its doc_ids would collide) raises `IngestError` at once, naming the input and what to change.

Units are ordered by input index, then by URI; group members are sorted by URI.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import fsspec
from fsspec.core import has_magic
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import glob_translate

from selectflow.config import IngestConfig, InputSpec

FORMATS = ("jsonl", "parquet", "text", "textdir")
JSONL_EXTENSIONS = (".jsonl", ".json", ".ndjson")
PARQUET_EXTENSIONS = (".parquet", ".pq")
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2", ".xz": "xz"}

TEXT_GROUP_MAX_FILES = 2_000  # text files per textdir unit
TEXT_GROUP_MAX_BYTES = 256 * 2**20  # bytes of text files per textdir unit (a single bigger file is its own part)
HASH_BLOCK = 1 << 20
HASH_THREADS = 8


class IngestError(Exception):
    """An input that cannot be planned or opened; the message names the path and what to change."""


@dataclass(frozen=True)
class InputFile:
    """One unit of ingest work (one task).

    uri: canonical URI of the file; for ``textdir`` the directory (or glob) URI, with ``#part-NNNNN`` appended
        when the group was split. Used as the unit's identity and in doc_ids of jsonl/parquet records.
    format: jsonl | parquet | text | textdir.
    spec_index: index into IngestConfig.inputs.
    size: bytes (compressed size as stored; for textdir the sum over members).
    fingerprint: blake2b-128 hex of the file's bytes; for textdir a blake2b over each member's URI and content hash.
    members: textdir only: the sorted URIs of the text files of the group; each is one document whose
        `source` is the member URI and `line` is 1. Empty for other formats.
    """

    uri: str
    format: str
    spec_index: int
    size: int
    fingerprint: str
    members: tuple[str, ...] = ()


def compression_of(name: str) -> str | None:
    """Compression by extension: gzip | zstd | bz2 | xz | None."""
    return COMPRESSIONS.get(posixpath.splitext(name.lower())[1])


def format_of(name: str) -> str:
    """jsonl | parquet | text, by extension after stripping a compression suffix."""
    stem = name.lower()
    root, ext = posixpath.splitext(stem)
    if ext in COMPRESSIONS:
        root, ext = posixpath.splitext(root)
    if ext in JSONL_EXTENSIONS:
        return "jsonl"
    if ext in PARQUET_EXTENSIONS:
        return "parquet"
    return "text"


def url_to_fs(uri: str):
    """(filesystem, path) for a local path or fsspec URL; local paths normalized (``..`` resolved)."""
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise IngestError(f"{uri}: cannot open this kind of path ({exc}); use a local path or an fsspec URL") from exc
    if isinstance(fs, LocalFileSystem):
        path = posixpath.normpath(path)
    return fs, path


def canonical_uri(path: str) -> str:
    """The URI ingest uses for a local path or fsspec URL (``source`` column, doc_id): fsspec's form, not
    percent-encoded (``file:///data/my file.jsonl``), local paths absolute with ``..`` resolved. Use this to turn a
    user-given FILE into the `source` of its documents (e.g. for lineage lookups by FILE:LINE)."""
    fs, stripped = url_to_fs(path)
    return fs.unstrip_protocol(stripped)


def plan_inputs(cfg: IngestConfig) -> list[InputFile]:
    """Expand every InputSpec into work units, in a deterministic order (see the module docstring)."""
    units: list[InputFile] = []
    owner: dict[str, int] = {}
    for index, spec in enumerate(cfg.inputs):
        for unit in _plan_spec(index, spec):
            for leaf in unit.members or (unit.uri,):
                if leaf in owner:
                    raise IngestError(
                        f"{leaf} is selected by ingest.inputs[{owner[leaf]}] ({cfg.inputs[owner[leaf]].path}) and "
                        f"ingest.inputs[{index}] ({spec.path}); narrow one of them so every file is read once"
                    )
                owner[leaf] = index
            units.append(unit)
    return units


def _where(index: int, spec: InputSpec) -> str:
    return f"ingest.inputs[{index}].path {spec.path!r}"


def _plan_spec(index: int, spec: InputSpec) -> list[InputFile]:
    where = _where(index, spec)
    fs, path = url_to_fs(spec.path)
    try:
        exists = fs.exists(path)
        is_dir = exists and fs.isdir(path)
    except Exception as exc:  # permissions, credentials, network: say so at once
        raise IngestError(f"{where}: cannot access {fs.unstrip_protocol(path)}: {exc}") from exc

    text_base = None  # URI naming a text group
    if is_dir:
        files, text_files = _expand_directory(fs, path, spec, where)
        text_base = fs.unstrip_protocol(path).rstrip("/")
    elif exists:
        fmt = format_of(path) if spec.format == "auto" else spec.format
        files, text_files = ([], [path]) if fmt == "text" else ([(path, fmt)], [])
    elif has_magic(path):
        try:
            matches = fs.glob(path, detail=True)
        except Exception as exc:
            raise IngestError(f"{where}: cannot expand the glob: {exc}") from exc
        names = sorted(name for name, info in matches.items() if info.get("type") != "directory")
        if not names:
            raise IngestError(f"{where}: the glob matched no files; fix the pattern or the path")
        files, text_files = [], []
        for name in names:
            fmt = format_of(name) if spec.format == "auto" else spec.format
            (text_files.append(name) if fmt == "text" else files.append((name, fmt)))
        text_base = fs.unstrip_protocol(path)
    else:
        raise IngestError(
            f"{where}: no such file or directory ({fs.unstrip_protocol(path)}); "
            "fix the path (relative paths in a config file are relative to that file)"
        )

    every = [name for name, _ in files] + text_files
    with ThreadPoolExecutor(min(HASH_THREADS, max(1, len(every)))) as pool:
        hashed = dict(zip(every, pool.map(lambda name: _hash_file(fs, name, where), every)))

    units = []
    for name, fmt in files:
        size, digest = hashed[name]
        units.append(InputFile(_uri(fs, name), fmt, index, size, digest))
    if text_files:
        if text_base is None:  # one text file named directly
            (name,) = text_files
            size, digest = hashed[name]
            units.append(InputFile(_uri(fs, name), "text", index, size, digest))
        else:
            units.extend(_group_text(fs, text_files, hashed, text_base, index))
    return sorted(units, key=lambda unit: unit.uri)


def _expand_directory(fs, path: str, spec: InputSpec, where: str):
    try:
        found = fs.find(path, detail=True)
    except Exception as exc:
        raise IngestError(f"{where}: cannot list the directory: {exc}") from exc
    names = sorted(name for name, info in found.items() if info.get("type") != "directory")
    if spec.format in ("jsonl", "parquet"):
        files = [(name, spec.format) for name in names if format_of(name) == spec.format]
        if not files:
            raise IngestError(
                f"{where}: the directory has no {spec.format} files "
                f"({', '.join(JSONL_EXTENSIONS if spec.format == 'jsonl' else PARQUET_EXTENSIONS)}, "
                "optionally compressed); fix the path or the format"
            )
        return files, []
    if spec.format == "auto":
        files = [(name, fmt) for name in names if (fmt := format_of(name)) != "text"]
        if files:
            return files, []
    # text_glob is matched against paths relative to the directory (fsspec glob semantics, "**" = any depth),
    # on the listing we already have, so that glob characters in the directory's own name do no harm
    try:
        pattern = re.compile(glob_translate(spec.text_glob.lstrip("/")))
    except (ValueError, re.error) as exc:
        raise IngestError(f"{where}: text_glob {spec.text_glob!r} is not a valid glob: {exc}") from exc
    prefix = path.rstrip("/") + "/"
    text_files = [name for name in names if name.startswith(prefix) and pattern.match(name[len(prefix) :])]
    if not text_files:
        extra = " and no .jsonl/.json/.parquet files" if spec.format == "auto" else ""
        raise IngestError(
            f"{where}: the directory has no files matching text_glob {spec.text_glob!r}{extra}; "
            "fix the path, text_glob or format"
        )
    return [], text_files


def _uri(fs, path: str) -> str:
    return fs.unstrip_protocol(path)


def _hash_file(fs, path: str, where: str) -> tuple[int, str]:
    digest = hashlib.blake2b(digest_size=16)
    size = 0
    try:
        with fs.open(path, "rb") as handle:
            while block := handle.read(HASH_BLOCK):
                digest.update(block)
                size += len(block)
    except Exception as exc:
        raise IngestError(
            f"{where}: cannot read {_uri(fs, path)}: {exc}; check that it exists and is readable"
        ) from exc
    return size, digest.hexdigest()


def _group_text(fs, names: list[str], hashed: dict, base: str, index: int) -> list[InputFile]:
    members = sorted((_uri(fs, name), name) for name in names)
    parts: list[list[tuple[str, str]]] = [[]]
    part_bytes = 0
    for uri, name in members:
        size = hashed[name][0]
        current = parts[-1]
        if current and (len(current) >= TEXT_GROUP_MAX_FILES or part_bytes + size > TEXT_GROUP_MAX_BYTES):
            parts.append([])
            part_bytes = 0
        parts[-1].append((uri, name))
        part_bytes += size
    units = []
    for number, part in enumerate(parts):
        digest = hashlib.blake2b(digest_size=16)
        for uri, name in part:
            digest.update(f"{uri}\0{hashed[name][1]}\n".encode())
        uri = base if len(parts) == 1 else f"{base}#part-{number:05d}"
        size = sum(hashed[name][0] for _, name in part)
        units.append(InputFile(uri, "textdir", index, size, digest.hexdigest(), tuple(u for u, _ in part)))
    return units
