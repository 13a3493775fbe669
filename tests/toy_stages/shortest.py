"""A toy selector, declared here only: the shortest documents of the pool, up to the run's budget."""

from typing import Literal

import numpy as np

from selectflow.config import Budget, SelectorOptions
from selectflow.fingerprint import module_fingerprint
from selectflow.stages.base import Decisions, Kind, Stage, register
from selectflow.stages.pool import Pool
from selectflow.stages.selection import Selection, SelectionContext, build_selection
from selectflow.store import ArtifactRef, ArtifactStore, ArtifactWriter


class ShortestOptions(SelectorOptions):
    method: Literal["shortest"] = "shortest"


def shortest_stage(store: ArtifactStore, pool: list[ArtifactRef], budget: Budget, options: ShortestOptions,
                   context: SelectionContext) -> ArtifactRef:
    def select(data: Pool, lengths: np.ndarray, writer: ArtifactWriter) -> Selection:
        order = np.argsort(lengths, kind="stable")
        if budget.budget_unit == "docs":
            taken = budget.budget
        else:
            taken = int(np.searchsorted(np.cumsum(lengths[order]), budget.budget)) + 1
        rank = {int(index): r for r, index in enumerate(order[:taken])}
        decisions = Decisions(SHORTEST.name)
        for index, doc in enumerate(data.docs["doc_id"].to_pylist()):
            if index in rank:
                decisions.add(doc, "selected", f"selected: #{rank[index] + 1} shortest ({lengths[index]} tokens)")
            else:
                decisions.add(doc, "rejected", f"not selected: {lengths[index]} tokens, longer than the cut")
        return Selection(order[:taken], decisions)

    return build_selection(store, SHORTEST, pool, context.semdedup(), budget.token_counter, budget.budget_fields(),
                           [], module_fingerprint(__name__), select)


SHORTEST = register(Stage("select_shortest", Kind.SELECTOR, subset="shortest", options=ShortestOptions,
                          run=f"{__name__}:shortest_stage"), before="select_random")
