"""The one generic document filter: a registered filter stage writes one function, (text, options) -> the reason to
drop the document or None, and this stage applies it to a shard and records every decision with its reason, the
kept documents and the counts (DataTrove's filter contract)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from selectflow.config import FilterOptions
from selectflow.fingerprint import code_fingerprint, module_fingerprint
from selectflow.stages.base import Decisions, filter_stage, write_decisions
from selectflow.store import ArtifactRef, ArtifactStore, ArtifactWriter, Shard

_CODE = code_fingerprint(__name__)  # this module and every selectflow module it imports


def filter_documents(store: ArtifactStore, shard: Shard, options: FilterOptions) -> ArtifactRef:
    """The shard's documents that `options.method`'s filter keeps, and a decision for each of its documents."""
    stage = filter_stage(options.method)
    drop_reason = stage.function()

    def write(writer: ArtifactWriter) -> None:
        docs = pq.read_table(shard.path)
        decisions, kept = Decisions(stage.name), []
        for index, (doc, text) in enumerate(zip(docs["doc_id"].to_pylist(), docs["text"].to_pylist())):
            if reason := drop_reason(text, options):
                decisions.add(doc, "dropped", reason)
            else:
                decisions.add(doc, "kept", f"passed the {options.method} filter")
                kept.append(index)
        write_decisions(writer, decisions, docs.take(pa.array(kept, pa.int64())))

    code = _CODE + module_fingerprint(stage.run.partition(":")[0])  # the generic filter and the filter's own code
    return store.build(stage.name, options.model_dump(), [shard.sha256], code, write)
