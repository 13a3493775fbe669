"""ZIP selection stage: the deduplicated pool -> the selected documents, in selection order, with a reason for each.

A killed stage resumes from its last finished ZIP round: the rounds' state is checkpointed under the writer's
`checkpoint_dir` (`<store>/checkpoints/select_zip/<key>/`), which the store removes once the artifact commits."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from selectflow.config import Budget, ZipSelector
from selectflow.fingerprint import code_fingerprint
from selectflow.select.zip import ZipCheckpoint, zip_select
from selectflow.stages.base import Decisions
from selectflow.stages.pool import Pool
from selectflow.stages.registry import ZIP
from selectflow.stages.selection import Selection, SelectionContext, build_selection
from selectflow.store import ArtifactRef, ArtifactStore, ArtifactWriter

_CODE = code_fingerprint(__name__)  # this module and every selectflow module it imports


def _reason(row: dict, mode: str) -> str:
    measure = "zlib-9 ratio of the records" if mode == "exact" else "marginal zstd ratio"
    if row["selected"]:
        return (f"selected in round {row['round']} as #{row['order'] + 1} at {measure} {row['ratio']:.3f} "
                f"(+{row['marginal_bytes']} compressed bytes; own ratio {row['own_ratio']:.3f})")
    where = {"global": "never among the lowest-ratio candidates",
             "coarse": f"reached the coarse stage in round {row['round']}",
             "fine": f"reached the fine stage in round {row['round']} but was not picked"}[row["stage_reached"]]
    return f"not selected: {where}; ratio at rejection {row['ratio']:.3f} (own ratio {row['own_ratio']:.3f})"


def zip_stage(
    store: ArtifactStore,
    pool: list[ArtifactRef],
    budget: Budget,
    options: ZipSelector,
    context: SelectionContext,
    progress: Callable[[int, dict], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> ArtifactRef:
    """ZIP over the pool, less what the cluster stage's semantic dedup dropped. Resumes a killed run from its last
    finished round (`resumed_from_round` in the artifact's stats; 0 when it started fresh). progress(round, info)
    after every round; without it, `log` gets a line per round."""
    cfg = options.config(budget)
    if progress is None and log is not None:
        rounds = math.ceil(cfg.budget / cfg.k3) if cfg.budget_unit == "docs" else None

        def progress(done: int, info: dict) -> None:
            log(f"zip round {done}/{rounds or '?'}: {info['n_selected']} selected, "
                f"set ratio {info['selected_ratio']:.3f}, {info['pool_left']} left in the pool")

    def select(data: Pool, lengths: np.ndarray, writer: ArtifactWriter) -> Selection:
        result = zip_select(data.docs, cfg, progress=progress, checkpoint=ZipCheckpoint(writer.checkpoint_dir))
        decisions = Decisions(ZIP.name)
        for r in result.decisions.to_pylist():
            decisions.add(r["doc_id"], "selected" if r["selected"] else "rejected", _reason(r, cfg.mode),
                          score=r["ratio"], group=None if r["round"] is None else f"round {r['round']}")
        position = {doc_id: index for index, doc_id in enumerate(data.docs["doc_id"].to_pylist())}
        stats = {"stopped": result.stopped, "final_ratio": result.final_ratio, "seconds": result.seconds,
                 "rounds": len(result.rounds), "resumed_from_round": result.resumed_from_round}
        return Selection([position[doc_id] for doc_id in result.selected], decisions, stats, rounds=result.rounds,
                         tables={"zip_decisions": result.decisions})

    return build_selection(store, ZIP, pool, context.semdedup(), cfg.token_counter, cfg.model_dump(), [], _CODE,
                           select)
