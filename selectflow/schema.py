"""Arrow schemas of the tables every stage reads and writes."""

import pyarrow as pa

DOCS = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),  # stable: hash of source URI + line
        pa.field("source", pa.string(), nullable=False),  # URI of the input file
        pa.field("line", pa.int64(), nullable=False),  # 1-based line (JSONL), row (Parquet) or 1 (text file)
        pa.field("domain", pa.string()),
        pa.field("text", pa.string(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),  # hash of normalized text
        pa.field("n_bytes", pa.int64(), nullable=False),  # UTF-8 bytes of text
        pa.field("record", pa.string()),  # original record as JSON (null for plain text files)
    ]
)

QUARANTINE = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("line", pa.int64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw", pa.string()),  # first bytes of the offending record, decoded with replacement
    ]
)

# One row per document per stage: why it was kept or dropped.
DECISIONS = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("decision", pa.string(), nullable=False),  # kept | dropped | selected | rejected
        pa.field("reason", pa.string(), nullable=False),  # human-readable
        pa.field("ref_doc_id", pa.string()),  # e.g. the copy a duplicate was dropped for
        pa.field("score", pa.float64()),  # e.g. Jaccard estimate
        pa.field("group", pa.string()),  # e.g. near-duplicate component
    ]
)


def decisions_table(doc_ids, stage, decision, reason, ref=None, score=None, group=None) -> pa.Table:
    """A DECISIONS table; `decision` and `reason` are one value for all rows or a list, the rest lists or None."""
    n = len(doc_ids)
    return pa.table(
        {
            "doc_id": pa.array(doc_ids, pa.string()),
            "stage": pa.array([stage] * n, pa.string()),
            "decision": pa.array(decision if isinstance(decision, list) else [decision] * n, pa.string()),
            "reason": pa.array(reason if isinstance(reason, list) else [reason] * n, pa.string()),
            "ref_doc_id": pa.array(ref if ref is not None else [None] * n, pa.string()),
            "score": pa.array(score if score is not None else [None] * n, pa.float64()),
            "group": pa.array(group if group is not None else [None] * n, pa.string()),
        },
        schema=DECISIONS,
    )
