#!/usr/bin/env python3
"""Build selectflow's embedded sample corpus from real text shipped by Debian packages.

Nothing in the corpus is written by us: every document is cut out of a file that a
Debian 12 ("bookworm") package installs. The script only splits, lightly cleans and
labels that text, then writes zstandard-compressed JSONL.

Debian packages it reads (install them first; the script never calls apt itself):

    apt-get install -y python3.11-doc perl-doc fortunes fortunes-min dict-jargon dict-devil

  python3.11-doc          /usr/share/doc/python3.11/html/_sources   prose + Python FAQ  (PSF-2.0)
  libpython3.11-minimal,  /usr/lib/python3.11/**.py                 code                (PSF-2.0)
  libpython3.11-stdlib    (already present wherever python3.11 is installed)
  perl-doc                /usr/share/perl/5.36.0/pod/perlfaq[1-9].pod  Q&A     (Artistic-1.0-Perl OR GPL-1.0-or-later)
  fortunes, fortunes-min  /usr/share/games/fortunes/*               short texts         (BSD-3-Clause)
  dict-jargon, dict-devil /usr/share/dictd/{jargon,devil}.dict.dz   dictionary entries  (public domain)
  base-files + installed Priority required/important packages + the packages above and
  their installed direct dependencies
                          /usr/share/common-licenses/*, /usr/share/doc/PKG/copyright  licence notices

Python packages: zstandard (writing), numpy + scipy (duplicate statistics in the README).

Output (default selectflow/data/sample/):
  prose, code, dictionary, fortunes, licenses, qa, reference  .jsonl.zst
  MANIFEST.json (record counts, sha256, package versions), README.md (generated).

The output is byte-for-byte deterministic for a given --seed and set of installed
package versions: inputs are sorted, sampling is hash based, there are no timestamps.

Rebuild:  python3 scripts/build_sample_corpus.py --out selectflow/data/sample --seed 0
"""

from __future__ import annotations

import argparse
import ast
import glob
import gzip
import hashlib
import itertools
import json
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

# --------------------------------------------------------------------------- paths

PY_DOC_SOURCES = Path("/usr/share/doc/python3.11/html/_sources")
PY_STDLIB = Path("/usr/lib/python3.11")
PERL_POD_GLOB = "/usr/share/perl/5.*/pod/perlfaq[1-9].pod"
FORTUNE_DIR = Path("/usr/share/games/fortunes")
DICTD_DIR = Path("/usr/share/dictd")
COMMON_LICENSES = Path("/usr/share/common-licenses")
DOC_DIR = Path("/usr/share/doc")
DPKG_INFO = Path("/var/lib/dpkg/info")

# package -> a path that proves it is installed
REQUIRED_PACKAGES = {
    "python3.11-doc": PY_DOC_SOURCES / "library" / "os.rst.txt",
    "libpython3.11-minimal": PY_STDLIB / "os.py",
    "libpython3.11-stdlib": PY_STDLIB / "json" / "__init__.py",
    "perl-doc": Path("/usr/share/perl/5.36.0/pod/perlfaq4.pod"),
    "fortunes-min": FORTUNE_DIR / "fortunes",
    "fortunes": FORTUNE_DIR / "computers",
    "dict-jargon": DICTD_DIR / "jargon.dict.dz",
    "dict-devil": DICTD_DIR / "devil.dict.dz",
    "base-files": COMMON_LICENSES / "GPL-2",
}

LICENSES = {
    "python-doc": "PSF-2.0",
    "python-stdlib": "PSF-2.0",
    "perlfaq": "Artistic-1.0-Perl OR GPL-1.0-or-later",
    "fortunes": "BSD-3-Clause",
    "jargon": "LicenseRef-Public-Domain",
    "devil": "LicenseRef-Public-Domain",
    "license-notice": "LicenseRef-Verbatim-License-Notice",
}

# Fortune sets left out: excerpts of identifiable copyrighted works (songs-poems = lyrics,
# startrek, zippy, tao, pratchett), non-prose (ascii-art, translate-me), and sets that are
# mostly jokes about ethnic groups / the sexes (ethnic, men-women). fortunes-off is never read.
FORTUNE_SKIP = {
    "ascii-art",
    "translate-me",
    "songs-poems",
    "startrek",
    "zippy",
    "tao",
    "pratchett",
    "ethnic",
    "men-women",
}
FORTUNE_KEEP_RATE = 0.45  # hash-sampled share of fortunes kept (identical texts share a fate)

# Python stdlib parts that are not hand-written library code, or are tests / data.
STDLIB_SKIP_PARTS = {
    "test",
    "tests",
    "idle_test",
    "pydoc_data",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "config-3.11-x86_64-linux-gnu",
}
STDLIB_SKIP_PREFIX = ("_sysconfigdata",)
STDLIB_KEEP_RATE = 0.5  # hash-sampled share of stdlib modules kept (whole modules)

# Python doc files routed elsewhere: faq/ becomes Q&A, license/copyright become licence notices.
PY_DOC_LICENSE_FILES = {"license.rst", "copyright.rst"}

# Held-out reference set: documents per domain (whole source units are taken out of the pool).
REFERENCE_QUOTA = {"prose": 65, "qa": 45, "code": 20, "dictionary": 15, "fortune": 10}
# Never held out: the generated codec modules are near-copies of one another, so holding one
# out would force its siblings out of the pool too.
REFERENCE_NEVER = ("python-stdlib:encodings/",)

OUTPUT_FILES = {  # output file -> domains it holds
    "prose.jsonl.zst": ("prose",),
    "code.jsonl.zst": ("code",),
    "dictionary.jsonl.zst": ("dictionary",),
    "fortunes.jsonl.zst": ("fortune",),
    "licenses.jsonl.zst": ("license",),
    "qa.jsonl.zst": ("qa",),
}
REFERENCE_FILE = "reference.jsonl.zst"
ZSTD_LEVEL = 19
MIN_CHARS = 50
SHINGLE = 5
DECONTAM_JACCARD = 0.5


# --------------------------------------------------------------------------- helpers


def die(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def package_versions(packages) -> dict[str, str]:
    """Installed version of each package (dpkg-query); missing ones are reported."""
    out = {}
    for pkg in sorted(packages):
        res = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}\t${db:Status-Abbrev}", pkg], check=False, capture_output=True, text=True
        )
        version, _, status = res.stdout.partition("\t")
        if res.returncode == 0 and status.startswith("ii"):
            out[pkg] = version
    return out


def check_packages() -> dict[str, str]:
    if not Path("/var/lib/dpkg/status").exists():
        die("this script needs a Debian system (dpkg database not found)")
    versions = package_versions(REQUIRED_PACKAGES)
    missing = [p for p, path in REQUIRED_PACKAGES.items() if p not in versions or not path.exists()]
    if missing:
        die(
            "missing Debian package(s): "
            + " ".join(missing)
            + "\n  install with: apt-get install -y "
            + " ".join(missing)
        )
    return versions


def dpkg_owners(packages) -> dict[str, str]:
    """Map every file path shipped by `packages` to its package, from /var/lib/dpkg/info/*.list."""
    owners = {}
    for pkg in sorted(packages):
        for lst in sorted(DPKG_INFO.glob(f"{pkg}.list")) + sorted(DPKG_INFO.glob(f"{pkg}:*.list")):
            for line in lst.read_text(encoding="utf-8").splitlines():
                owners.setdefault(line, pkg)
    return owners


def clean_text(text: str) -> str:
    """Valid UTF-8 text: drop NULs/overstrikes/control chars, strip trailing spaces per line."""
    text = re.sub(r".\x08", "", text)
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text.replace("\r\n", "\n").replace("\r", "\n"))
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def read_text(path: Path) -> str:
    return clean_text(path.read_bytes().decode("utf-8", errors="replace"))


def split_long(block: str, hi: int) -> list[str]:
    """Cut an over-long block at line boundaries into pieces of at most `hi` chars."""
    pieces, cur = [], []
    size = 0
    for line in block.split("\n"):
        while len(line) > hi:  # a single monster line
            if cur:
                pieces.append("\n".join(cur))
                cur, size = [], 0
            pieces.append(line[:hi])
            line = line[hi:]
        if cur and size + 1 + len(line) > hi:
            pieces.append("\n".join(cur))
            cur, size = [], 0
        cur.append(line)
        size += len(line) + 1
    if cur:
        pieces.append("\n".join(cur))
    return [p for p in pieces if p.strip()]


def pack(blocks: list[str], lo: int, hi: int, sep: str = "\n\n") -> list[str]:
    """Greedily join consecutive blocks: a chunk is closed once it reaches `lo` chars
    (lo=hi means fill up to hi); no chunk exceeds `hi`. A short tail joins its predecessor."""
    chunks: list[str] = []
    cur = ""
    for block in blocks:
        for piece in [block] if len(block) <= hi else split_long(block, hi):
            if cur and (len(cur) >= lo or len(cur) + len(sep) + len(piece) > hi):
                chunks.append(cur)
                cur = ""
            cur = cur + sep + piece if cur else piece
    if cur:
        if chunks and len(cur) < lo and len(chunks[-1]) + len(sep) + len(cur) <= hi:
            chunks[-1] += sep + cur
        else:
            chunks.append(cur)
    return [c.strip("\n") for c in chunks if len(c.strip()) >= MIN_CHARS]


def paragraphs(text: str) -> list[str]:
    return [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()]


def record(rid, text, domain, source, license_, unit, **extra) -> dict:
    rec = {"id": rid, "text": text, "domain": domain, "source": source, "license": license_, "_unit": unit}
    rec.update(extra)
    return rec


# --------------------------------------------------------------------------- reST (python docs)

_UNDERLINE = re.compile(r"^([=\-~^*#\"'+`:.])\1{2,}$")
_DROP_DIRECTIVES = re.compile(
    r"^\.\. (index|highlight|sectionauthor|moduleauthor|toctree|module|currentmodule|"
    r"contents|tabularcolumns|raw|only|include|literalinclude|audit-event-table|_[^:]+):"
)
_ROLE = re.compile(r":(?:[a-z]+:)?([a-z]+):`~?!?([^`]+)`")


def _render_role(m: re.Match) -> str:
    role, body = m.group(1), m.group(2)
    label = re.sub(r"\s*<[^>]*>$", "", body) if body.endswith(">") else body
    if role in ("ref", "doc", "term", "abbr", "dfn", "keyword", "source"):
        return label
    if role in ("pep", "rfc"):
        return f"{role.upper()} {label}"
    if role in ("issue", "gh"):
        return f"{'bpo' if role == 'issue' else 'gh'}-{label}"
    return f"``{label}``"


def clean_rst(text: str) -> str:
    """Trivial reST clean-up: drop index/label/toctree-like directive blocks, render roles."""
    out, skipping = [], False
    for line in text.split("\n"):
        if skipping and (not line.strip() or line[:1].isspace()):
            continue
        skipping = bool(_DROP_DIRECTIVES.match(line))
        if not skipping and not line.startswith(":tocdepth:"):
            out.append(_ROLE.sub(_render_role, line))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip("\n")


def rst_sections(text: str) -> list[tuple[str, str]]:
    """Split reST into (title, body-with-title) sections at every heading."""
    lines = text.split("\n")
    starts = [0]
    for i in range(len(lines) - 1):
        title, under = lines[i], lines[i + 1]
        if (
            title.strip()
            and not title[:1].isspace()
            and _UNDERLINE.match(under)
            and len(under) >= len(title.rstrip())
            and not _UNDERLINE.match(title)
        ):
            start = i - 1 if i > 0 and _UNDERLINE.match(lines[i - 1]) else i
            if start > starts[-1]:
                starts.append(start)
    starts.append(len(lines))
    sections = []
    for a, b in itertools.pairwise(starts):
        body = "\n".join(lines[a:b]).strip("\n")
        heading = next((ln for ln in lines[a:b] if ln.strip() and not _UNDERLINE.match(ln)), "")
        if body.strip():
            sections.append((heading.strip(), body))
    return sections


def section_chunks(sections: list[str], lo: int, hi: int) -> list[str]:
    """Whole sections, small ones merged forward; over-long ones cut at paragraphs."""
    blocks: list[str] = []
    for sec in sections:
        blocks.extend([sec] if len(sec) <= hi else pack(paragraphs(sec), hi, hi))
    return pack(blocks, lo, hi)


def python_doc_files() -> list[Path]:
    return sorted(PY_DOC_SOURCES.rglob("*.rst.txt"))


def doc_rel(path: Path) -> str:
    return str(path.relative_to(PY_DOC_SOURCES))[: -len(".txt")]


def load_python_docs(owners) -> list[dict]:
    """Python documentation (reST sources) -> section-sized prose documents."""
    recs = []
    for path in python_doc_files():
        rel = doc_rel(path)
        if rel.startswith("faq/") or rel in PY_DOC_LICENSE_FILES:
            continue
        text = clean_rst(read_text(path))
        chunks = section_chunks([body for _, body in rst_sections(text)], 500, 6000)
        src = f"{owners.get(str(path), 'python3.11-doc')}:{path}"
        for n, chunk in enumerate(chunks):
            recs.append(
                record(f"python-doc:{rel}#{n}", chunk, "prose", src, LICENSES["python-doc"], f"python-doc:{rel}")
            )
    return recs


def load_python_faq(owners) -> list[dict]:
    """Python FAQ: every heading that is a question, with the section under it as answer."""
    recs = []
    for path in python_doc_files():
        rel = doc_rel(path)
        if not rel.startswith("faq/"):
            continue
        src = f"{owners.get(str(path), 'python3.11-doc')}:{path}"
        for n, (title, body) in enumerate(rst_sections(clean_rst(read_text(path)))):
            answer = "\n".join(body.split("\n")[2:]).strip("\n")  # drop title + underline
            if title.endswith("?") and len(answer) >= MIN_CHARS:
                recs.append(
                    record(
                        f"python-doc:{rel}#q{n}",
                        None,
                        "qa",
                        src,
                        LICENSES["python-doc"],
                        f"python-doc:{rel}",
                        question=title,
                        answer=answer,
                    )
                )
    return recs


# --------------------------------------------------------------------------- python stdlib


def stdlib_files() -> list[Path]:
    files = []
    for path in sorted(PY_STDLIB.rglob("*.py")):
        rel = path.relative_to(PY_STDLIB)
        if set(rel.parts[:-1]) & STDLIB_SKIP_PARTS or rel.name.startswith(STDLIB_SKIP_PREFIX):
            continue
        if path.is_file() and not path.is_symlink():
            files.append(path)
    return files


def _node_start(node: ast.AST) -> int:
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno] + [d.lineno for d in decorators])


def class_pieces(lines: list[str], node: ast.ClassDef, start: int, end: int) -> list[str]:
    """An over-long class: header + each method, cut at method boundaries."""
    sub = lines[start:end]
    offset = start
    cuts = [0]
    for child in node.body:
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            s = _node_start(child) - 1 - offset
            while s > 0 and sub[s - 1].lstrip().startswith("#"):
                s -= 1
            if s > cuts[-1]:
                cuts.append(s)
    cuts.append(len(sub))
    return ["\n".join(sub[a:b]).strip("\n") for a, b in itertools.pairwise(cuts) if "\n".join(sub[a:b]).strip()]


def module_pieces(source: str, hi: int) -> list[str]:
    """Top-level statements grouped per def/class; big classes split per method."""
    tree = ast.parse(source)
    lines = source.split("\n")
    cuts, kinds = [0], {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            s = _node_start(node) - 1
            while s > 0 and lines[s - 1].lstrip().startswith("#"):
                s -= 1
            if s > cuts[-1]:
                cuts.append(s)
            kinds[s] = node
    cuts.append(len(lines))
    pieces = []
    for a, b in itertools.pairwise(cuts):
        text = "\n".join(lines[a:b]).strip("\n")
        node = kinds.get(a)
        if len(text) > hi and isinstance(node, ast.ClassDef):
            pieces.extend(class_pieces(lines, node, a, b))
        elif text.strip():
            pieces.append(text)
    return pieces


def load_stdlib(owners, seed: int) -> list[dict]:
    """Python standard library source -> function/class-sized code documents."""
    recs = []
    for path in stdlib_files():
        rel = str(path.relative_to(PY_STDLIB))
        if not keep_by_hash(rel, seed, STDLIB_KEEP_RATE):
            continue
        source = read_text(path)
        try:
            pieces = module_pieces(source, 8000)
        except SyntaxError:
            continue
        src = f"{owners.get(str(path), 'libpython3.11-stdlib')}:{path}"
        for n, chunk in enumerate(pack(pieces, 500, 8000)):
            recs.append(
                record(
                    f"python-stdlib:{rel}#{n}", chunk, "code", src, LICENSES["python-stdlib"], f"python-stdlib:{rel}"
                )
            )
    return recs


# --------------------------------------------------------------------------- perlfaq (POD)


def pod_inline(text: str) -> str:
    """Render POD formatting codes as plain text: C<x> -> x, L<text|target> -> text, E<gt> -> >."""
    text = re.sub(r"[A-Z]<{2,}\s+(.*?)\s+>{2,}", lambda m: m.group(1), text, flags=re.DOTALL)
    entities = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/", "quot": '"', "amp": "&"}
    for _ in range(5):
        text = re.sub(r"X<[^<>]*>", "", text)
        text = re.sub(r"E<(\w+)>", lambda m: entities.get(m.group(1), m.group(0)), text)
        text = re.sub(r"L<([^<>|]*)\|[^<>]*>", r"\1", text)
        text = re.sub(r"L<\"?([^<>\"]*)\"?>", r"\1", text)
        text = re.sub(r"[BCFISZ]<([^<>]*)>", r"\1", text)
    return text


def pod_to_text(pod: str) -> str:
    """Plain text from a POD fragment: verbatim blocks kept, commands turned into text."""
    out = []
    for para in paragraphs(pod):
        if para.startswith("=item"):
            out.append("* " + pod_inline(para[5:].strip()))
        elif para.startswith(("=head3", "=head4")):
            out.append(pod_inline(para[6:].strip()))
        elif para.startswith("="):
            continue  # =over/=back/=begin/=end/=for/=pod/=cut
        elif para[:1].isspace():
            out.append(para)  # verbatim code
        else:
            out.append(pod_inline(para))
    return "\n\n".join(out)


def perlfaq_files() -> list[Path]:
    return sorted({Path(os.path.realpath(p)) for p in glob.glob(PERL_POD_GLOB)})


def load_perlfaq(owners) -> list[dict]:
    """perlfaq1-9: each =head2 question with its answer."""
    recs = []
    for path in perlfaq_files():
        parts = re.split(r"^(=head[12] .*)$", read_text(path), flags=re.MULTILINE)
        src = f"{owners.get(str(path), 'perl-doc')}:{path}"
        n = 0
        for head, body in zip(parts[1::2], parts[2::2]):
            if not head.startswith("=head2"):
                continue
            question = pod_inline(head[6:].strip())
            answer = pod_to_text(body).strip()
            if len(answer) >= MIN_CHARS:
                recs.append(
                    record(
                        f"perlfaq:{path.stem}#{n}",
                        None,
                        "qa",
                        src,
                        LICENSES["perlfaq"],
                        f"perlfaq:{path.stem}",
                        question=question,
                        answer=answer,
                    )
                )
            n += 1
    return recs


# --------------------------------------------------------------------------- fortunes


def keep_by_hash(text: str, seed: int, rate: float) -> bool:
    digest = hashlib.sha256(f"{seed}\0{normalize(text)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < rate * 2**64


def load_fortunes(owners, seed: int) -> list[dict]:
    """BSD fortune files: one document per %-separated fortune, hash-sampled."""
    recs = []
    for path in sorted(FORTUNE_DIR.iterdir()):
        if "." in path.name or path.name in FORTUNE_SKIP or not path.is_file():
            continue
        src = f"{owners.get(str(path), 'fortunes')}:{path}"
        for n, text in enumerate(re.split(r"^%$", read_text(path), flags=re.MULTILINE)):
            text = text.strip("\n")
            if len(text) >= MIN_CHARS and keep_by_hash(text, seed, FORTUNE_KEEP_RATE):
                recs.append(
                    record(
                        f"fortunes:{path.name}#{n}", text, "fortune", src, LICENSES["fortunes"], f"fortunes:{path.name}"
                    )
                )
    return recs


# --------------------------------------------------------------------------- dictd dictionaries

_DICTD_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def dictd_int(s: str) -> int:
    value = 0
    for ch in s:
        value = value * 64 + _DICTD_B64.index(ch)
    return value


def dictd_entries(name: str) -> list[tuple[str, str]]:
    """(headword, entry text) for each distinct entry of a dictd database (aliases merged)."""
    data = gzip.decompress((DICTD_DIR / f"{name}.dict.dz").read_bytes())
    seen, entries = set(), []
    for line in (DICTD_DIR / f"{name}.index").read_text(encoding="utf-8").splitlines():
        head, off, length = line.split("\t")[:3]
        span = (dictd_int(off), dictd_int(length))
        if head.startswith("00") or span in seen:
            continue
        seen.add(span)
        entries.append((head, data[span[0] : span[0] + span[1]].decode("utf-8", "replace")))
    return sorted(entries, key=lambda e: (e[0].casefold(), e[0]))


def load_dictionary(owners, name: str) -> list[dict]:
    """Jargon File / Devil's Dictionary: one document per entry."""
    path = DICTD_DIR / f"{name}.dict.dz"
    src = f"{owners.get(str(path), 'dict-' + name)}:{path}"
    recs, used = [], Counter()
    for head, text in dictd_entries(name):
        text = clean_text(text)
        if len(text) < MIN_CHARS:
            continue
        used[head] += 1
        rid = f"{name}:{head}" + (f"#{used[head]}" if used[head] > 1 else "")
        letter = head[:1].lower() if head[:1].isalpha() else "#"
        recs.append(record(rid, text, "dictionary", src, LICENSES[name], f"{name}:{letter}"))
    return recs


# --------------------------------------------------------------------------- licence notices


def licence_packages() -> list[str]:
    """Installed packages of Priority required/important, the packages this script reads,
    and their installed direct dependencies."""
    res = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package}\t${Priority}\t${db:Status-Abbrev}\t${Depends}\n"],
        capture_output=True,
        text=True,
        check=True,
    )
    installed, depends, pkgs = set(), {}, set(REQUIRED_PACKAGES)
    for line in res.stdout.splitlines():
        name, prio, status, deps = (line.split("\t") + ["", "", ""])[:4]
        if not status.startswith("ii"):
            continue
        installed.add(name)
        depends[name] = re.findall(r"(?:^|[,|])\s*([a-z0-9][a-z0-9.+-]+)", deps)
        if prio in ("required", "important"):
            pkgs.add(name)
    for pkg in REQUIRED_PACKAGES:
        pkgs.update(d for d in depends.get(pkg, []) if d in installed)
    return sorted(pkgs)


def licence_files(packages) -> list[tuple[str, Path]]:
    """(package, path) of common-licenses texts and each package's copyright file (by real path)."""
    files, seen = [], set()
    candidates = [("base-files", p) for p in sorted(COMMON_LICENSES.iterdir())]
    candidates += [(pkg, DOC_DIR / pkg / "copyright") for pkg in packages]
    for pkg, path in candidates:
        real = os.path.realpath(path)
        if path.is_file() and real not in seen:
            seen.add(real)
            files.append((pkg, path))
    return files


def load_licences(packages) -> list[dict]:
    """Licence texts and Debian copyright files, cut at paragraph / DEP-5 stanza boundaries."""
    recs = []
    for pkg, path in licence_files(packages):
        lo = 1500 if path.parent == COMMON_LICENSES else 200
        for n, chunk in enumerate(pack(paragraphs(read_text(path)), lo, 6000)):
            recs.append(
                record(
                    f"license:{pkg}:{path.name}#{n}",
                    chunk,
                    "license",
                    f"{pkg}:{path}",
                    LICENSES["license-notice"],
                    f"license:{pkg}",
                )
            )
    return recs


def load_python_doc_licence(owners) -> list[dict]:
    recs = []
    for name in sorted(PY_DOC_LICENSE_FILES):
        path = PY_DOC_SOURCES / f"{name}.txt"
        src = f"{owners.get(str(path), 'python3.11-doc')}:{path}"
        sections = [body for _, body in rst_sections(clean_rst(read_text(path)))]
        for n, chunk in enumerate(section_chunks(sections, 500, 6000)):
            recs.append(
                record(
                    f"python-doc:{name}#{n}", chunk, "license", src, LICENSES["license-notice"], f"python-doc:{name}"
                )
            )
    return recs


# --------------------------------------------------------------------------- text views, shingles


def doc_text(rec: dict) -> str:
    if "conversations" in rec:
        return "\n\n".join(turn["value"] for turn in rec["conversations"])
    if rec.get("text") is None:
        return rec["question"] + "\n\n" + rec["answer"]
    return rec["text"]


def normalize(text: str) -> str:
    return " ".join(text.lower().split())


def shingles(text: str) -> set[int]:
    """Word 5-gram shingles (lower-cased \\w+ tokens), as stable 64-bit hashes."""
    toks = re.findall(r"\w+", text.lower())
    grams = {" ".join(toks[i : i + SHINGLE]) for i in range(max(1, len(toks) - SHINGLE + 1))}
    return {int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little") >> 1 for g in grams if g}


# --------------------------------------------------------------------------- reference split


def pick_reference(recs: list[dict], seed: int) -> set[str]:
    """Whole units (files, dictionary letters) chosen at random until each domain's quota is met."""
    rng = random.Random(seed)
    chosen: set[str] = set()
    by_domain: dict[str, dict[str, int]] = defaultdict(Counter)
    for rec in recs:
        by_domain[rec["domain"]][rec["_unit"]] += 1
    for domain, quota in sorted(REFERENCE_QUOTA.items()):
        units = sorted(by_domain[domain].items())
        rng.shuffle(units)
        total = 0
        for unit, count in units:
            if total >= quota:
                break
            if unit.startswith(REFERENCE_NEVER):
                continue
            if count <= max(quota - total, 3) + 5:
                chosen.add(unit)
                total += count
    return chosen


def decontaminate(pool: list[dict], reference: list[dict]) -> tuple[list[dict], int]:
    """Drop pool documents that equal, or nearly equal (Jaccard >= 0.5), a reference document."""
    ref_norm = {normalize(doc_text(r)) for r in reference}
    ref_sh = [shingles(doc_text(r)) for r in reference]
    index = defaultdict(list)
    for i, sh in enumerate(ref_sh):
        for s in sh:
            index[s].append(i)
    kept, dropped = [], 0
    for rec in pool:
        text = doc_text(rec)
        sh = shingles(text)
        hits = Counter(i for s in sh if s in index for i in index[s])
        near = any(c / (len(sh) + len(ref_sh[i]) - c) >= DECONTAM_JACCARD for i, c in hits.items())
        if near or normalize(text) in ref_norm:
            dropped += 1
        else:
            kept.append(rec)
    return kept, dropped


# --------------------------------------------------------------------------- output records


def finalize(rec: dict, as_reference: bool = False) -> dict:
    base = {"id": rec["id"]}
    if rec["domain"] == "qa" and not as_reference:
        base["conversations"] = [{"from": "human", "value": rec["question"]}, {"from": "gpt", "value": rec["answer"]}]
    else:
        base["text"] = doc_text(rec)
    base.update(domain=rec["domain"], source=rec["source"], license=rec["license"])
    return base


def write_jsonl_zst(path: Path, records: list[dict]) -> dict:
    import zstandard

    raw = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    data = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(raw)
    path.write_bytes(data)
    return {
        "records": len(records),
        "sha256": hashlib.sha256(data).hexdigest(),
        "compressed_bytes": len(data),
        "jsonl_bytes": len(raw),
        "text_chars": sum(len(doc_text(r)) for r in records),
    }


# --------------------------------------------------------------------------- duplicate statistics

BANDS = [(0.5, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 0.95), (0.95, 1.0001)]


def duplicate_stats(records: list[dict]) -> dict:
    """Exact duplicate groups and exact all-pairs 5-gram Jaccard near-duplicate counts."""
    import numpy as np
    from scipy import sparse

    texts = [doc_text(r) for r in records]
    stats = {"documents": len(texts)}
    for name, key in (("exact", lambda t: t), ("normalized", normalize)):
        groups = Counter(key(t) for t in texts)
        dup = [c for c in groups.values() if c > 1]
        stats[f"{name}_groups"] = len(dup)
        stats[f"{name}_docs_in_groups"] = sum(dup)
        stats[f"{name}_redundant_docs"] = sum(dup) - len(dup)
    norm = [normalize(t) for t in texts]
    rows, cols = [], []
    for i, t in enumerate(texts):
        sh = shingles(t)
        rows.extend([i] * len(sh))
        cols.extend(sh)
    _, col_idx = np.unique(np.array(cols, dtype=np.int64), return_inverse=True)
    x = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (np.array(rows), col_idx)), shape=(len(texts), int(col_idx.max()) + 1)
    )
    size = np.asarray(x.sum(axis=1)).ravel()
    xt = x.T.tocsr()
    bands = Counter()
    domains = Counter()
    for start in range(0, len(texts), 1000):
        inter = (x[start : start + 1000] @ xt).tocoo()
        i, j = inter.row + start, inter.col
        keep = j > i
        i, j, c = i[keep], j[keep], inter.data[keep]
        jac = c / (size[i] + size[j] - c)
        sel = jac >= BANDS[0][0]
        for a, b, v in zip(i[sel], j[sel], jac[sel]):
            if norm[a] == norm[b]:
                continue
            for lo, hi in BANDS:
                if lo <= v < hi:
                    bands[f"{lo:.2f}-{min(hi, 1.0):.2f}"] += 1
            pair = "/".join(sorted((records[a]["domain"], records[b]["domain"])))
            domains[pair if v >= 0.7 else "_"] += 1
    stats["near_pairs_by_jaccard"] = dict(sorted(bands.items()))
    stats["near_pairs_ge_0.7"] = sum(v for k, v in bands.items() if float(k[:4]) >= 0.7)
    stats["near_pairs_ge_0.7_by_domain"] = {k: v for k, v in sorted(domains.items()) if k != "_"}
    return stats


def reference_overlap(pool: list[dict], reference: list[dict]) -> float:
    """Highest 5-gram Jaccard between any reference document and any pool document."""
    index = defaultdict(list)
    ref_sh = [shingles(doc_text(r)) for r in reference]
    for i, sh in enumerate(ref_sh):
        for s in sh:
            index[s].append(i)
    best = 0.0
    for rec in pool:
        sh = shingles(doc_text(rec))
        for i, c in Counter(i for s in sh if s in index for i in index[s]).items():
            best = max(best, c / (len(sh) + len(ref_sh[i]) - c))
    return round(best, 4)


# --------------------------------------------------------------------------- README

SOURCE_TABLE = [
    # (id prefix, file, domain, debian packages, upstream origin, licence)
    (
        "python-doc",
        "prose, qa (faq/*), licenses (license.rst, copyright.rst)",
        "python3.11-doc",
        "Python 3.11 documentation reST sources, https://docs.python.org/3.11/",
        "PSF-2.0",
    ),
    (
        "python-stdlib",
        "code",
        "libpython3.11-minimal, libpython3.11-stdlib",
        "CPython 3.11 Lib/, https://github.com/python/cpython",
        "PSF-2.0",
    ),
    (
        "perlfaq",
        "qa",
        "perl-doc",
        "perlfaq 5.20210520 (perlfaq1-9.pod), https://metacpan.org/dist/perlfaq",
        "Artistic-1.0-Perl OR GPL-1.0-or-later (code examples public domain)",
    ),
    (
        "fortunes",
        "fortunes",
        "fortunes, fortunes-min",
        "BSD fortune-mod 1.99.1 data files",
        "BSD-3-Clause (per Debian copyright; short quotations of mixed origin)",
    ),
    ("jargon", "dictionary", "dict-jargon", "The Jargon File 4.4.7, http://catb.org/jargon/", "public domain"),
    (
        "devil",
        "dictionary",
        "dict-devil",
        "Ambrose Bierce, The Devil's Dictionary (1911), Internet Wiretap edition",
        "public domain",
    ),
    (
        "license",
        "licenses",
        "base-files + each listed package",
        "/usr/share/common-licenses/* and /usr/share/doc/PKG/copyright of the packages in MANIFEST.json",
        "licence texts / notices, redistributable verbatim",
    ),
]


def prefix_counts(files: dict[str, list[dict]]) -> dict[str, Counter]:
    counts: dict[str, Counter] = defaultdict(Counter)
    for name, recs in files.items():
        for r in recs:
            counts[r["id"].split(":", 1)[0]][name.split(".")[0]] += 1
    return counts


def render_readme(manifest: dict, files: dict[str, list[dict]], stats: dict) -> str:
    counts = prefix_counts(files)
    lines = [
        "# selectflow sample corpus",
        "",
        "A small, real, multi-domain corpus for exercising the selectflow pipeline end to end",
        "(ingest -> exact + near dedup -> clustering -> influence scoring -> selection -> probe).",
        "Every document is text shipped by a Debian 12 package; nothing here was written by the",
        "selectflow authors, and no duplicate was fabricated: the exact and near duplicates below",
        "occur naturally in the sources (licence notices shared by many packages, fortunes that",
        "appear in several fortune files, codec modules generated from one template, Python",
        "docs that repeat themselves across versions' \"What's New\" pages, and so on).",
        "",
        "**Generated file - do not edit by hand.** Rebuild with:",
        "",
        "```",
        manifest["build"]["command"],
        "```",
        "",
        "## Files",
        "",
        "| file | records | text chars | compressed bytes |",
        "|---|---:|---:|---:|",
    ]
    for name, meta in manifest["files"].items():
        lines.append(f"| `{name}` | {meta['records']} | {meta['text_chars']} | {meta['compressed_bytes']} |")
    pool = {k: v for k, v in manifest["files"].items() if k != REFERENCE_FILE}
    lines += [
        (
            f"| **pool total** (all but reference) | {sum(m['records'] for m in pool.values())} | "
            f"{sum(m['text_chars'] for m in pool.values())} | {sum(m['compressed_bytes'] for m in pool.values())} |"
        ),
        "",
        "Record formats (JSON Lines, zstandard level 19):",
        "",
        '* `prose`, `code`, `dictionary`, `fortunes`, `licenses`, `reference`: `{"id", "text", "domain", "source", "license"}`',
        (
            '* `qa`: ShareGPT chat records `{"id", "conversations": [{"from": "human", "value": question}, '
            '{"from": "gpt", "value": answer}], "domain": "qa", "source", "license"}`'
        ),
        "",
        "`domain` is one of `prose`, `code`, `dictionary`, `fortune`, `license`, `qa`. `source` is",
        "`<debian package>:<absolute path of the file the text came from>`; `id` is",
        "`<source prefix>:<path or headword>#<chunk number>` and is stable across rebuilds.",
        "In `reference.jsonl.zst` Q&A records are flattened to `text` = question + blank line + answer.",
        "",
        "## Sources",
        "",
        "| id prefix | files | Debian package(s) | upstream origin | licence | documents per file |",
        "|---|---|---|---|---|---|",
    ]
    for prefix, where, pkgs, origin, lic in SOURCE_TABLE:
        per_file = ", ".join(f"{k}: {v}" for k, v in sorted(counts.get(prefix, {}).items()))
        lines.append(f"| `{prefix}` | {where} | {pkgs} | {origin} | {lic} | {per_file} |")
    lines += [
        "",
        "The `license` field of each record carries an SPDX(-ish) identifier: `PSF-2.0`,",
        "`Artistic-1.0-Perl OR GPL-1.0-or-later`, `BSD-3-Clause`, `LicenseRef-Public-Domain`,",
        "`LicenseRef-Verbatim-License-Notice` (licence texts and copyright notices, whose own terms",
        "permit verbatim copies). The licences were read from `/usr/share/doc/PKG/copyright`.",
        "",
        "## How the documents were cut",
        "",
        "* **prose** - `/usr/share/doc/python3.11/html/_sources/**/*.rst.txt` except `faq/`,",
        "  `license.rst`, `copyright.rst`. Split at reST headings; sections under 500 chars are",
        "  merged with the next, sections over 6000 chars are cut at paragraph breaks. Trivial",
        "  markup clean-up only: index/label/toctree/module directives dropped, roles such as",
        "  ``:func:`open` `` rendered as ``` ``open`` ```.",
        "* **code** - `/usr/lib/python3.11/**/*.py` without `test/`, `tests/`, `pydoc_data/`,",
        "  `_sysconfigdata*`. Cut before each top-level `def`/`class` (with its decorators and the",
        "  comments just above); classes over 8000 chars are cut per method; pieces are merged",
        "  forward to at least 500 chars and never exceed 8000. The `encodings/` codecs are kept:",
        "  they are generated from one template and are a natural source of (near) duplicates.",
        f"  Whole modules are hash-sampled (share {STDLIB_KEEP_RATE}, seeded by `--seed`) to bound the size.",
        "* **qa** - `perlfaq1-9.pod`: each `=head2` question with the POD under it as the answer",
        "  (formatting codes rendered as plain text, verbatim code blocks kept); Python",
        "  `faq/*.rst`: each heading that ends in `?` with its section as the answer.",
        "* **dictionary** - dictd databases, one document per distinct entry (aliases that share",
        "  an entry are merged), read through the `.index` offsets.",
        "* **fortunes** - every `%`-separated fortune of the `fortunes` and `fortunes-min` data",
        f"  files except the sets {', '.join(sorted(FORTUNE_SKIP))} (lyrics / TV or comic",
        "  excerpts / non-prose / jokes about groups); `fortunes-off` is never read. A fortune is",
        f"  kept when a seeded hash of its normalised text falls below {FORTUNE_KEEP_RATE}, so every copy",
        "  of a repeated fortune is kept or dropped together.",
        "* **licenses** - `/usr/share/common-licenses/*` (cut at paragraphs, >= 1500 chars each),",
        "  the `/usr/share/doc/PKG/copyright` file (one per distinct real path) of every installed",
        "  Priority required/important package, of the packages above and of their installed direct",
        "  dependencies (cut at DEP-5 stanzas / paragraphs, short ones merged to >= 200 chars), and",
        "  the Python docs' licence pages. Binary packages built from one source ship the same",
        "  copyright file, hence many of the exact duplicates.",
        "* Everywhere: text decoded as UTF-8 (the rare invalid byte becomes U+FFFD), NULs /",
        "  control characters / overstrikes removed,",
        f"  trailing spaces stripped, documents shorter than {MIN_CHARS} characters dropped.",
        "",
        "## Reference set",
        "",
        "`reference.jsonl.zst` is a held-out target set drawn from the same sources. Whole",
        "source units are taken out of the pool: whole reST files, whole perlfaq / Python FAQ",
        "files, whole stdlib modules, whole fortune files, and whole initial letters of the",
        "dictionaries (never the generated `encodings/` codecs, which are near-copies of each",
        "other), chosen with the seeded RNG until the per-domain quota",
        f"`{json.dumps(REFERENCE_QUOTA)}` is met. Pool documents whose normalised text equals a",
        f"reference document, or whose 5-gram Jaccard with one is >= {DECONTAM_JACCARD}, are then dropped from",
        f"the pool ({manifest['reference']['pool_documents_dropped']} dropped). Highest 5-gram Jaccard between",
        f"any reference and any pool document after that: {manifest['reference']['max_jaccard_to_pool']}.",
        "",
        "Reference units: " + ", ".join(f"`{u}`" for u in manifest["reference"]["units"]) + ".",
        "",
        "## Duplicates in the pool",
        "",
        "Computed over the pool files (not the reference set) on each document's text (Q&A:",
        "question + blank line + answer). Near duplicates: exact all-pairs Jaccard similarity of",
        "the sets of word 5-grams (lower-cased `\\w+` tokens) via a sparse document x shingle",
        "matrix, counting pairs whose normalised texts differ.",
        "",
        f"* documents: {stats['documents']}",
        (
            f"* byte-identical duplicate groups: {stats['exact_groups']} "
            f"({stats['exact_docs_in_groups']} documents, {stats['exact_redundant_docs']} redundant copies = "
            f"{100 * stats['exact_redundant_docs'] / stats['documents']:.1f}% of the pool)"
        ),
        (
            f"* duplicate groups after lower-casing and collapsing whitespace: {stats['normalized_groups']} "
            f"({stats['normalized_docs_in_groups']} documents, {stats['normalized_redundant_docs']} redundant copies = "
            f"{100 * stats['normalized_redundant_docs'] / stats['documents']:.1f}%)"
        ),
        f"* near-duplicate pairs with Jaccard >= 0.7: {stats['near_pairs_ge_0.7']}",
        "",
        "| Jaccard band | pairs |",
        "|---|---:|",
    ]
    lines += [f"| {band} | {n} |" for band, n in stats["near_pairs_by_jaccard"].items()]
    lines += ["", "Pairs with Jaccard >= 0.7 by domain pair:", "", "| domains | pairs |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in stats["near_pairs_ge_0.7_by_domain"].items()]
    lines += [
        "",
        "## Inputs",
        "",
        "Package versions the files were built from (also in `MANIFEST.json`):",
        "",
    ]
    lines += [f"* {p} {v}" for p, v in manifest["packages"].items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def load_all(owners, packages, seed: int) -> list[dict]:
    steps = [
        ("python docs", lambda: load_python_docs(owners)),
        ("python faq", lambda: load_python_faq(owners)),
        ("perlfaq", lambda: load_perlfaq(owners)),
        ("python stdlib", lambda: load_stdlib(owners, seed)),
        ("jargon", lambda: load_dictionary(owners, "jargon")),
        ("devil", lambda: load_dictionary(owners, "devil")),
        ("fortunes", lambda: load_fortunes(owners, seed)),
        ("licences", lambda: load_licences(packages) + load_python_doc_licence(owners)),
    ]
    recs = []
    for name, step in steps:
        t0 = time.time()
        got = step()
        print(f"  {name:14s} {len(got):6d} docs  {time.time() - t0:5.1f}s", file=sys.stderr)
        recs.extend(got)
    ids = Counter(r["id"] for r in recs)
    dupes = [i for i, c in ids.items() if c > 1]
    if dupes:
        die(f"duplicate ids: {dupes[:5]}")
    return recs


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Debian packages needed: apt-get install -y " + " ".join(sorted(REQUIRED_PACKAGES)),
    )
    ap.add_argument("--out", default="selectflow/data/sample", help="output directory (default: %(default)s)")
    ap.add_argument(
        "--seed", type=int, default=0, help="seed for sampling and the reference split (default: %(default)s)"
    )
    ap.add_argument(
        "--no-stats",
        action="store_true",
        help="skip the duplicate statistics and README.md (data files and MANIFEST.json are still written)",
    )
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import zstandard  # noqa: F401
    except ImportError:
        die("the Python package 'zstandard' is required: pip install zstandard")
    versions = check_packages()
    packages = licence_packages()
    owners = dpkg_owners(packages)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    print("reading sources:", file=sys.stderr)
    recs = load_all(owners, packages, args.seed)
    ref_units = pick_reference(recs, args.seed)
    reference = [r for r in recs if r["_unit"] in ref_units]
    pool, dropped = decontaminate([r for r in recs if r["_unit"] not in ref_units], reference)

    files = {name: [finalize(r) for r in pool if r["domain"] in domains] for name, domains in OUTPUT_FILES.items()}
    files[REFERENCE_FILE] = [finalize(r, as_reference=True) for r in reference]
    manifest = {"files": {}, "reference": {}, "build": {}, "packages": {}}
    for name, records in files.items():
        manifest["files"][name] = write_jsonl_zst(out / name, records)
    pool_records = [r for name, rs in files.items() if name != REFERENCE_FILE for r in rs]
    manifest["reference"] = {
        "units": sorted(ref_units),
        "pool_documents_dropped": dropped,
        "max_jaccard_to_pool": reference_overlap(pool_records, files[REFERENCE_FILE]),
    }
    manifest["build"] = {
        "command": f"python3 scripts/build_sample_corpus.py --out {args.out} --seed {args.seed}",
        "seed": args.seed,
        "zstd_level": ZSTD_LEVEL,
    }
    manifest["packages"] = package_versions(packages)
    manifest["packages"].update(versions)
    manifest["packages"] = dict(sorted(manifest["packages"].items()))
    if not args.no_stats:
        print("duplicate statistics...", file=sys.stderr)
        manifest["duplicates"] = duplicate_stats(pool_records)
        (out / "README.md").write_text(render_readme(manifest, files, manifest["duplicates"]), encoding="utf-8")
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    for name, meta in manifest["files"].items():
        print(
            f"  {name:22s} {meta['records']:6d} records  {meta['text_chars']:9d} chars  "
            f"{meta['compressed_bytes']:8d} bytes",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
