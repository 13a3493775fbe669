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
* Symbolic links met while expanding a directory or glob (to files or to directories) are skipped unless the
  spec sets ``follow_symlinks``; a path named by the spec itself is read even if it is a link. Skipped links are
  logged and carried by the spec's first unit (`InputFile.skipped_links`), so the ingest stats count them once.
  When following, a link back to a directory above it (a loop) or a dangling link is skipped the same way.
  Followed files keep the URI of the link. Other filesystems than the local one have no symlinks.
* Nothing found, a path that does not exist, a file that cannot be read, or one file selected by two inputs
  (its doc_ids would collide) raises `IngestError` at once, naming the input and what to change.

Units are ordered by input index, then by URI; group members are sorted by URI.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

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
LINK_EXAMPLES = 3  # skipped links named in a warning or error

log = logging.getLogger(__name__)


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
    skipped_links: sorted URIs of the symlinks that expanding the input skipped (see InputSpec.follow_symlinks);
        only on the first unit of the input, so that they are counted once. Not part of the fingerprint.
    """

    uri: str
    format: str
    spec_index: int
    size: int
    fingerprint: str
    members: tuple[str, ...] = ()
    skipped_links: tuple[str, ...] = ()


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
    skipped: list[str] = []
    if is_dir:
        files, text_files, skipped = _expand_directory(fs, path, spec, where)
        text_base = fs.unstrip_protocol(path).rstrip("/")
    elif exists:
        fmt = format_of(path) if spec.format == "auto" else spec.format
        files, text_files = ([], [path]) if fmt == "text" else ([(path, fmt)], [])
    elif has_magic(path):
        names, skipped = _expand_glob(fs, path, spec, where)
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

    units = _units(fs, index, files, text_files, text_base, where)
    if skipped:
        log.warning("%s: %s", where, _skipped_note(skipped, spec))
        units[0] = dataclasses.replace(units[0], skipped_links=tuple(_uri(fs, name) for name in skipped))
    return units


def _units(fs, index: int, files: list, text_files: list[str], text_base: str | None, where: str) -> list[InputFile]:
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


def _skipped_note(skipped: list[str], spec: InputSpec) -> str:
    examples = ", ".join(skipped[:LINK_EXAMPLES]) + (", ..." if len(skipped) > LINK_EXAMPLES else "")
    if spec.follow_symlinks:
        return f"skipped {len(skipped)} symlink(s) that dangle or loop back to a directory above them ({examples})"
    return (
        f"skipped {len(skipped)} symlink(s) ({examples}); set follow_symlinks: true on this input to read through them"
    )


def _expand_directory(fs, path: str, spec: InputSpec, where: str):
    """(files with their format, text files, skipped links) below a directory."""
    try:
        listing = _list_tree(fs, path, None, spec.follow_symlinks)
    except Exception as exc:
        raise IngestError(f"{where}: cannot list the directory: {exc}") from exc
    files, text_files = _select(listing.files, path, spec, where)
    skipped = _skipped_links(listing, path, spec, where)
    if not files and not text_files:
        raise IngestError(_nothing_to_read(spec, where) + (f"; {_skipped_note(skipped, spec)}" if skipped else ""))
    return files, text_files, skipped


def _skipped_links(listing: _Listing, path: str, spec: InputSpec, where: str) -> list[str]:
    """The links not followed that matter: those to directories, and those to files that would have been read."""
    if not listing.file_links:
        return listing.dir_links
    files, text_files = _select(listing.files + listing.file_links, path, spec, where)
    would_read = {name for name, _ in files}.union(text_files)
    return sorted([*listing.dir_links, *would_read.intersection(listing.file_links)])


def _nothing_to_read(spec: InputSpec, where: str) -> str:
    if spec.format in ("jsonl", "parquet"):
        extensions = ", ".join(JSONL_EXTENSIONS if spec.format == "jsonl" else PARQUET_EXTENSIONS)
        return (
            f"{where}: the directory has no {spec.format} files ({extensions}, optionally compressed); "
            "fix the path or the format"
        )
    extra = " and no .jsonl/.json/.parquet files" if spec.format == "auto" else ""
    return (
        f"{where}: the directory has no files matching text_glob {spec.text_glob!r}{extra}; "
        "fix the path, text_glob or format"
    )


def _select(names: list[str], path: str, spec: InputSpec, where: str) -> tuple[list[tuple[str, str]], list[str]]:
    """The files of a directory listing that the spec reads: ([(name, format)], text files); either may be empty."""
    if spec.format in ("jsonl", "parquet"):
        return [(name, spec.format) for name in names if format_of(name) == spec.format], []
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
    return [], [name for name in names if name.startswith(prefix) and pattern.match(name[len(prefix) :])]


def _expand_glob(fs, path: str, spec: InputSpec, where: str) -> tuple[list[str], list[str]]:
    """(files matching a glob, skipped links), both sorted; directories among the matches are ignored."""
    try:
        if isinstance(fs, LocalFileSystem):
            names, skipped = _glob_local(path, spec.follow_symlinks)
        else:
            matches = fs.glob(path, detail=True)
            names, skipped = sorted(name for name, info in matches.items() if info.get("type") != "directory"), []
    except Exception as exc:
        raise IngestError(f"{where}: cannot expand the glob: {exc}") from exc
    if not names:
        note = f"; {_skipped_note(skipped, spec)}" if skipped else ""
        raise IngestError(f"{where}: the glob matched no files; fix the pattern or the path{note}")
    return names, skipped


def _glob_local(path: str, follow: bool) -> tuple[list[str], list[str]]:
    root, depth = _glob_root(path)
    if not os.path.isdir(root):
        return [], []
    listing = _list_local(root, depth, follow)
    pattern = re.compile(glob_translate(path))
    names = [name for name in listing.files if pattern.match(name)]
    return names, sorted([*listing.dir_links, *(name for name in listing.file_links if pattern.match(name))])


def _glob_root(path: str) -> tuple[str, int | None]:
    """The directory a local glob starts from, and how many levels below it a match can be (None with ``**``),
    as fsspec's glob decides them."""
    magic = min(i for i in (path.find("*"), path.find("?"), path.find("[")) if i >= 0)
    slash = path.rindex("/", 0, magic)
    depth = None if "**" in path else path[slash + 1 :].count("/") + 1
    return path[:slash] or "/", depth


@dataclass
class _Listing:
    """What is below a directory: the files, and the symlinks that were not followed."""

    files: list[str] = field(default_factory=list)
    file_links: list[str] = field(default_factory=list)  # links to files, or dangling
    dir_links: list[str] = field(default_factory=list)  # links to directories, not searched


def _list_tree(fs, root: str, maxdepth: int | None, follow: bool) -> _Listing:
    """Everything below `root`, at most `maxdepth` levels deep (None: any), sorted."""
    if isinstance(fs, LocalFileSystem):
        return _list_local(root, maxdepth, follow)
    found = fs.find(root, maxdepth=maxdepth, detail=True)
    return _Listing(sorted(name for name, info in found.items() if info.get("type") != "directory"))


def _list_local(root: str, maxdepth: int | None, follow: bool) -> _Listing:
    """A local directory tree, lists sorted. Searched here, not with fsspec's find, which lists a linked directory
    as a file (and, in some versions, enters it with no guard against loops). Links are entered only when `follow`,
    and never into a directory that is also above them (a loop). Subdirectories that cannot be listed are left out,
    as fsspec's find does."""
    listing = _Listing()
    pending = [(root, 1, (_dir_id(root),))]
    while pending:
        folder, depth, above = pending.pop()
        try:
            with os.scandir(folder) as scan:
                entries = list(scan)
        except OSError:
            if folder == root:
                raise
            continue
        for entry in entries:
            is_link = entry.is_symlink()
            if _is_dir(entry):
                if maxdepth is not None and depth >= maxdepth:
                    continue  # nothing below this level can match
                target = _dir_id(entry.path)
                if is_link and (not follow or target in above):
                    listing.dir_links.append(entry.path)
                else:
                    pending.append((entry.path, depth + 1, (*above, target)))
            elif is_link and not (follow and os.path.exists(entry.path)):
                listing.file_links.append(entry.path)
            else:
                listing.files.append(entry.path)
    for names in (listing.files, listing.file_links, listing.dir_links):
        names.sort()
    return listing


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # through a link
    except OSError:  # a link loop (ELOOP)
        return False


def _dir_id(path: str) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino


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
