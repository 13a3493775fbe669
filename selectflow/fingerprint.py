"""Code fingerprints for the artifact cache, derived from the imports instead of kept by hand.

A stage's fingerprint hashes its own module plus every selectflow module it imports, transitively: the import
statements are read from the source (those inside functions too, which a look at `sys.modules` after import would
miss), and the packages on the way (`selectflow/__init__.py`, `selectflow/dedup/__init__.py`, ...) count because
they run on import. Editing any module of that closure rebuilds the stage's artifacts; editing one outside it
leaves them cached. Imports by computed name (`importlib.import_module(name)`) are not seen: import by name.
The stage registry's own source is left out (`DECLARATIONS`; what it imports counts): it declares stages' names,
kinds and table rows, and a name is part of every artifact key already, so declaring another stage rebuilds nothing.

Models and tokenizers are keyed the same way, by content (`files_fingerprint`): the same weights under another
path reuse the artifacts, new weights under the same path rebuild them.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import threading
from pathlib import Path

from selectflow.store import file_sha256, source_version

PACKAGE_ROOT = Path(__file__).resolve().parent
PACKAGE = PACKAGE_ROOT.name
DECLARATIONS = frozenset({f"{PACKAGE}.stages.registry"})  # modules that change no artifact (see above)


def module_file(name: str, root: Path = PACKAGE_ROOT) -> Path | None:
    """The source file of module `name` of the package at `root`; None for other packages and non-modules."""
    parts = name.split(".")
    if parts[0] != root.name:
        return None
    base = root.parent.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path, name: str) -> set[str]:
    """Every module name the source at `path` (module `name`) imports, or may import: for `from m import x` both m
    and m.x (x may be a submodule)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(anchor + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return found


def import_closure(module: str, root: Path = PACKAGE_ROOT) -> dict[str, Path]:
    """Module name -> source file for `module` and every module of its package it imports, transitively, with
    the packages that contain them."""
    closure: dict[str, Path] = {}
    seen: set[str] = set()
    pending = [module]
    while pending:
        parts = pending.pop().split(".")
        for depth in range(1, len(parts) + 1):
            name = ".".join(parts[:depth])
            if name in seen or (path := module_file(name, root)) is None:
                continue
            seen.add(name)
            if name not in DECLARATIONS:  # not hashed, but what it imports is
                closure[name] = path
            pending.extend(imported_names(path, name))
    return closure


def closure_fingerprint(module: str, root: Path = PACKAGE_ROOT) -> str:
    """The package version plus a hash of `module`'s import closure (file contents in module-name order)."""
    closure = import_closure(module, root)
    if module not in closure:
        raise ValueError(f"code fingerprint: {module!r} is not a module of the package at {root}")
    return source_version(closure[name] for name in sorted(closure))


@functools.cache
def code_fingerprint(module: str) -> str:
    """The code version a stage module keys its artifacts on (computed once per process)."""
    return closure_fingerprint(module)


def module_fingerprint(module: str) -> str:
    """`code_fingerprint` for any importable module: one outside this package (a stage registered by a user's
    module) counts its own source and the closure of the selectflow modules it imports. Safe from task threads."""
    with _PARSING:  # Python 3.11's ast.parse is not safe in concurrent threads
        return _module_fingerprint(module)


_PARSING = threading.Lock()


@functools.cache
def _module_fingerprint(module: str) -> str:
    if module.split(".")[0] == PACKAGE:
        return code_fingerprint(module)
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise ValueError(f"code fingerprint: {module!r} is not an importable Python source module")
    path = Path(spec.origin)
    closure = {file for name in imported_names(path, module) for file in import_closure(name).values()}
    return source_version([path, *sorted(closure)])


def files_fingerprint(path: str | Path) -> str:
    """sha256 of a file's contents, or over the names and contents of a folder's visible files (not subfolders)."""
    path = Path(path).expanduser().resolve()
    if path.is_file():
        return _sha256_of(str(path), *_signature(path))
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}\0{_sha256_of(str(file), *_signature(file))}\0".encode())
    return digest.hexdigest()


def _signature(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=256)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:  # size and mtime in the key: a rewritten file is re-read
    return file_sha256(Path(path))
