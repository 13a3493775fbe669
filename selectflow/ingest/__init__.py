"""Ingest library: find the inputs, stream them, and turn records into documents (or quarantine rows).

    files = plan_inputs(cfg)            # list[InputFile], deterministic; raises IngestError at once
    for docs, quarantine in read_input(files[0], cfg):
        ...                             # DOCS / QUARANTINE Arrow tables, <= cfg.shard_rows rows each

Work units (`InputFile`):

* jsonl / parquet: one file each.
* text: a single text file named directly by an input path: one document.
* textdir: the text files of one directory (or one glob), grouped so that thousands of tiny files do not
  become thousands of tasks. `members` lists the member URIs (sorted); each member is one document with
  `source` = member URI and `line` = 1. A group holds at most TEXT_GROUP_MAX_FILES files and
  TEXT_GROUP_MAX_BYTES bytes; a bigger directory is split into parts whose `uri` is
  "<dir uri>#part-00000", "#part-00001", ... (with one part the uri is the directory URI itself).
  `fingerprint` hashes every member's URI and content hash, so renaming, adding or editing a member changes it.

Symlinks met while expanding a directory or glob are not followed unless the input sets `follow_symlinks`; the
input's first unit lists them in `skipped_links` (the ingest stage counts them in its stats).

Quarantine reasons are short and specific; `reason_kind(reason)` maps one to its kind for counting
("record too large", "not valid UTF-8", "malformed JSON", ...).

Rules for expanding paths: `selectflow.ingest.sources`. Per-format reading and the quarantine policy:
`selectflow.ingest.readers`. Field mapping, chat rendering and reasons: `selectflow.ingest.records`.
"""

from selectflow.ingest.readers import read_input
from selectflow.ingest.records import RecordConverter, RecordError, reason_kind
from selectflow.ingest.sources import (
    TEXT_GROUP_MAX_BYTES,
    TEXT_GROUP_MAX_FILES,
    IngestError,
    InputFile,
    canonical_uri,
    compression_of,
    format_of,
    plan_inputs,
)

__all__ = [
    "TEXT_GROUP_MAX_BYTES",
    "TEXT_GROUP_MAX_FILES",
    "IngestError",
    "InputFile",
    "RecordConverter",
    "RecordError",
    "canonical_uri",
    "compression_of",
    "format_of",
    "plan_inputs",
    "read_input",
    "reason_kind",
]
