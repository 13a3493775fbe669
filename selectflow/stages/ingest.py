"""Ingest stage: one input file (or group of text files) -> one artifact of Parquet document shards + quarantine."""

from __future__ import annotations

from selectflow.config import IngestConfig
from selectflow.fingerprint import code_fingerprint
from selectflow.ingest import InputFile, read_input
from selectflow.stages.registry import INGEST
from selectflow.store import ArtifactRef, ArtifactStore, ArtifactWriter

_CODE = code_fingerprint(__name__)  # this module and every selectflow module it imports


def ingest_key_config(file: InputFile, cfg: IngestConfig) -> dict:
    """The part of the config that decides this file's output (so editing another input reuses this one)."""
    return {
        "uri": file.uri,
        "format": file.format,
        "spec": cfg.inputs[file.spec_index].model_dump(),
        "shard_rows": cfg.shard_rows,
        "max_record_bytes": cfg.max_record_bytes,
        "min_text_chars": cfg.min_text_chars,
        "skipped_links": list(file.skipped_links),  # reported in the stats
    }


def ingest_file(store: ArtifactStore, file: InputFile, cfg: IngestConfig) -> ArtifactRef:
    def write(writer: ArtifactWriter) -> None:
        docs = quarantined = n_bytes = 0
        for doc_batch, quarantine_batch in read_input(file, cfg):
            if doc_batch.num_rows:
                writer.write("docs", doc_batch)
                docs += doc_batch.num_rows
                n_bytes += sum(doc_batch.column("n_bytes").to_pylist())
            if quarantine_batch.num_rows:
                writer.write("quarantine", quarantine_batch)
                quarantined += quarantine_batch.num_rows
        writer.stats(
            docs_in=docs + quarantined,
            docs_out=docs,
            dropped=quarantined,
            source=file.uri,
            docs=docs,
            quarantined=quarantined,
            text_bytes=n_bytes,
            input_bytes=file.size,
            skipped_links=len(file.skipped_links),
        )

    return store.build(INGEST.name, ingest_key_config(file, cfg), [file.fingerprint], _CODE, write)
