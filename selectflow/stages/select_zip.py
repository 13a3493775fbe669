"""ZIP selection stage: the deduplicated pool -> the selected documents, in selection order, with a reason for each.

A killed stage resumes from its last finished ZIP round: the rounds' state is checkpointed under the writer's
`checkpoint_dir` (`<store>/checkpoints/select_zip/<key>/`), which the store removes once the artifact commits."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from selectflow.config import Budget, ZipConfig, ZipSelector
from selectflow.fingerprint import code_fingerprint
from selectflow.select.zip import ZipCheckpoint, zip_select
from selectflow.stages.base import Decisions
from selectflow.stages.pool import Pool
from selectflow.stages.registry import ZIP
from selectflow.stages.selection import Selection, SelectionContext, build_selection
from selectflow.stages.strata import select_in_strata, strata_inputs, strata_view
from selectflow.store import ArtifactRef, ArtifactStore, ArtifactWriter

_CODE = code_fingerprint(__name__)  # this module and every selectflow module it imports


def _reason(row: dict, mode: str) -> str:
    measure = {"exact": "zlib-9 ratio of the records", "zstd": "marginal zstd ratio",
               "gain": "raw bytes per compressed byte added"}[mode]
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
    """ZIP over the pool, less what the cluster stage's semantic dedup dropped; with `options.strata`, one ZIP inside
    each stratum's quota of the budget. Resumes a killed run from its last finished round (`resumed_from_round` in
    the artifact's stats; 0 when it started fresh). progress(round, info) after every round; without it, `log` gets
    a line per round."""
    cfg = options.config(budget)
    options.check_budget(budget)
    if progress is None and log is not None:
        rounds = math.ceil(cfg.budget / cfg.k3) if cfg.budget_unit == "docs" else None

        def progress(done: int, info: dict) -> None:
            log(f"zip round {done}/{rounds or '?'}: {info['n_selected']} selected, "
                f"set ratio {info['selected_ratio']:.3f}, {info['pool_left']} left in the pool")

    def select(data: Pool, lengths: np.ndarray, writer: ArtifactWriter) -> Selection:
        if options.strata == "none":
            return _zip(data.docs, cfg, progress, ZipCheckpoint(writer.checkpoint_dir))

        def zip_in(index: int, rows: np.ndarray, quota: int) -> Selection:
            local = cfg.model_copy(update={"budget": quota, "k1": min(cfg.k1, len(rows)),
                                           "k2": min(cfg.k2, len(rows)), "k3": min(cfg.k3, len(rows))})
            return _zip(data.docs.take(pa.array(rows, pa.int64())), local, progress,
                        ZipCheckpoint(writer.checkpoint_dir / f"{index}"))

        # Every round K2 candidates leave the pool and K3 of them are picked: ZIP takes about K3/K2 of a stratum.
        return select_in_strata(ZIP.name, data, lengths, budget, options, context, zip_in,
                                capacity=min(1.0, cfg.k3 / cfg.k2), running=("n_selected",))

    inputs = strata_inputs(options, context, "zip")
    config = cfg.model_dump() | ({} if options.strata == "none" else {"strata": options.strata, "quota": options.quota})
    return build_selection(store, ZIP, pool, strata_view(options.strata, context), cfg.token_counter, config, inputs,
                           _CODE, select)


def _zip(docs: pa.Table, cfg: ZipConfig, progress, checkpoint: ZipCheckpoint) -> Selection:
    result = zip_select(docs, cfg, progress=progress, checkpoint=checkpoint)
    decisions = Decisions(ZIP.name)
    for r in result.decisions.to_pylist():
        decisions.add(r["doc_id"], "selected" if r["selected"] else "rejected", _reason(r, cfg.mode),
                      score=r["ratio"], group=None if r["round"] is None else f"round {r['round']}")
    position = {doc_id: index for index, doc_id in enumerate(docs["doc_id"].to_pylist())}
    stats = {"stopped": result.stopped, "final_ratio": result.final_ratio, "seconds": result.seconds,
             "rounds": len(result.rounds), "resumed_from_round": result.resumed_from_round}
    return Selection([position[doc_id] for doc_id in result.selected], decisions, stats, rounds=result.rounds,
                     tables={"zip_decisions": result.decisions})
