"""Text normalization and hashing shared by ingest and dedup."""

import hashlib
import unicodedata


def normalize(text: str) -> str:
    """NFKC, case-folded, whitespace runs collapsed: the form exact dedup compares."""
    # str.split() and the regex \s split on the same (Unicode) whitespace; split/join is ~3x faster
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def content_hash(text: str) -> str:
    return hashlib.blake2b(normalize(text).encode("utf-8"), digest_size=16).hexdigest()


def doc_id(source: str, line: int) -> str:
    """Stable id of the record at `line` of `source`: the same input gives the same id on every run."""
    return hashlib.blake2b(f"{source}#{line}".encode(), digest_size=10).hexdigest()
