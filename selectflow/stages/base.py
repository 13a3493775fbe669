"""The stage contract.

A stage is declared once, as a `Stage` (name, kind, ...) given to `register`: the built-in stages in
`selectflow.stages.registry`, any other from its own module. What a run reports follows from the declarations, in
registration order: lineage walks the filters, then the selectors and baselines; the run's stage table has a row
per declared stage; probes and the entropy-law check cover the selectors' subsets.

A stage that decides about documents (source, filter, selector, baseline) adds one decision per document to a
`Decisions` and writes it with `write_decisions`, which also writes the stats every such stage reports:
docs_in, docs_out, dropped.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import pyarrow as pa

from selectflow.schema import decisions_table
from selectflow.store import ArtifactRef, ArtifactWriter


class Kind(StrEnum):
    SOURCE = "source"  # reads the inputs; what it cannot read is quarantined
    FILTER = "filter"  # drops documents from the pool for good
    SELECTOR = "selector"  # picks a subset of the pool: the run's result, probed and risk-checked
    BASELINE = "baseline"  # a comparison subset under the selectors' budget
    AUXILIARY = "auxiliary"  # artifacts other stages use (signatures, embeddings, influence, probes)


DECIDING = (Kind.SOURCE, Kind.FILTER, Kind.SELECTOR, Kind.BASELINE)
KEPT = ("kept", "selected")  # decisions that leave a document in the stage's output


@dataclass(frozen=True)
class Stage:
    name: str  # the artifact stage and the run record's key
    kind: Kind
    subset: str | None = None  # selectors and baselines: the short name of their subset (probes, risk, report)
    row: bool = True  # a row of the run's stage table
    work_of: tuple[str, ...] = ()  # auxiliary stages whose work time counts in this stage's row
    per_subset: bool = False  # recorded once per subset, as '<name>_<subset>' (probes)
    # A stage the config turns on declares its options model (whose `method` default names it in the config) and its
    # function, "module:function". Selectors and baselines (options: `selectflow.config.SelectorOptions`, method =
    # subset): function(store, pool, budget, options, context[, log]) -> ArtifactRef, see
    # `selectflow.stages.selection`. Document filters (options: `selectflow.config.FilterOptions`):
    # function(text, options) -> the reason to drop the document, or None to keep it, see
    # `selectflow.stages.filters`. Named, not imported: the registry imports no stage module.
    options: type | None = None
    run: str | None = None

    def __post_init__(self) -> None:
        selecting = self.kind in (Kind.SELECTOR, Kind.BASELINE)
        if (self.subset is None) == selecting:
            raise ValueError(f"stage {self.name!r}: selectors and baselines name their subset, other kinds do not")
        if (self.options is None) != (self.run is None):
            raise ValueError(f"stage {self.name!r}: a stage run from the config declares both options and run")
        if selecting and self.options is not None and self.method != self.subset:
            raise ValueError(f"stage {self.name!r}: its options' method ({self.method!r}) must be its subset "
                             f"({self.subset!r})")

    @property
    def method(self) -> str | None:
        """What a config entry names this stage by: its options' default `method`."""
        return None if self.options is None else self.options.model_fields["method"].default

    def function(self) -> Callable:
        """The stage function named by `run`."""
        module, _, name = (self.run or "").partition(":")
        if not name:
            raise ValueError(f"stage {self.name!r} declares no function to run (run='module:function')")
        return getattr(importlib.import_module(module), name)

    def refs(self, run) -> list[ArtifactRef]:
        """This stage's artifacts in a run record (`selectflow.runs.RunRecord`)."""
        if self.per_subset:
            return [ref for refs in self.by_subset(run).values() for ref in refs]
        return run.refs(self.name)

    def record(self, subset: str) -> str:
        """A per-subset stage's run-record key for `subset`."""
        return f"{self.name}_{subset}"

    def by_subset(self, run) -> dict[str, list[ArtifactRef]]:
        """A per-subset stage's artifacts in a run record, by subset."""
        prefix = self.record("")
        return {name.removeprefix(prefix): run.refs(name) for name in run.stages
                if name.startswith(prefix) and run.refs(name)}


_REGISTRY: dict[str, Stage] = {}


def register(stage: Stage, before: str | None = None) -> Stage:
    """Declare a stage (again: only with the same declaration), at the end of the DAG order or `before` a registered
    stage. Returns it, to be kept as the module's constant."""
    _builtins()  # declared first: a stage registered elsewhere comes after them unless placed `before` one
    known = _REGISTRY.get(stage.name)
    if known is not None:
        if known != stage:
            raise ValueError(f"stage {stage.name!r} is already registered as {known}; give the new stage another name")
        return stage
    if stage.method is not None and any(other.method == stage.method for other in _REGISTRY.values()):
        raise ValueError(f"stage {stage.name!r}: another stage is configured as method {stage.method!r}")
    _REGISTRY[stage.name] = stage
    if before is not None:
        order = list(_REGISTRY)
        order.insert(order.index(before), order.pop())
        for name in order:
            _REGISTRY[name] = _REGISTRY.pop(name)
    return stage


def stages(*kinds: Kind) -> list[Stage]:
    """The registered stages of these kinds (all without kinds), in registration order."""
    _builtins()
    return [stage for stage in _REGISTRY.values() if not kinds or stage.kind in kinds]


def stage_of_name(name: str) -> Stage:
    _builtins()
    if name not in _REGISTRY:
        raise KeyError(f"no stage {name!r} is registered (known: {', '.join(_REGISTRY)})")
    return _REGISTRY[name]


def selector_stage(method: str) -> Stage:
    """The selector or baseline stage whose subset is `method`."""
    return _configurable("selector", method, Kind.SELECTOR, Kind.BASELINE)


def filter_stage(method: str) -> Stage:
    """The document filter stage whose options' method is `method`."""
    return _configurable("filter", method, Kind.FILTER)


def selector_options(item: dict):
    """A `selection.selectors` entry as its selector's options model (built-in or registered elsewhere)."""
    return selector_stage(_method(item, "selector")).options.model_validate(item)


def filter_options(item: dict):
    """A `filters` entry as its filter's options model."""
    return filter_stage(_method(item, "filter")).options.model_validate(item)


def _method(item: dict, what: str) -> str:
    if not isinstance(method := item.get("method"), str):
        raise ValueError(f"every {what} needs a method, e.g. {{method: NAME}}")
    return method


def _configurable(what: str, method: str, *kinds: Kind) -> Stage:
    found = {stage.method: stage for stage in stages(*kinds) if stage.options is not None}
    if method not in found:
        raise ValueError(f"no {what} {method!r} is registered (known: {', '.join(found) or 'none'}); import the "
                         "module that registers it first (see README, 'Adding a stage')")
    return found[method]


def _builtins() -> None:
    import selectflow.stages.registry  # noqa: F401  (registers the built-in stages on import)


class Decisions:
    """One decision per document, added as the stage makes them; `table()` is its DECISIONS table."""

    def __init__(self, stage: str):
        self.stage = stage
        self._columns: dict[str, list] = {name: [] for name in ("doc_id", "decision", "reason", "ref", "score",
                                                                 "group")}

    def add(self, doc_id: str, decision: str, reason: str, ref: str | None = None, score: float | None = None,
            group: str | None = None) -> None:
        for name, value in zip(self._columns, (doc_id, decision, reason, ref, score, group)):
            self._columns[name].append(value)

    def __len__(self) -> int:
        return len(self._columns["doc_id"])

    def kept(self) -> int:
        return sum(decision in KEPT for decision in self._columns["decision"])

    def counts(self) -> dict[str, int]:
        kept = self.kept()
        return {"docs_in": len(self), "docs_out": kept, "dropped": len(self) - kept}

    def table(self) -> pa.Table:
        c = self._columns
        return decisions_table(c["doc_id"], self.stage, c["decision"], c["reason"], c["ref"], c["score"], c["group"])


def read_docs(source: pa.Table | list[ArtifactRef], columns: list[str] | None = None) -> pa.Table:
    """The documents of a table, or of artifacts' "docs" tables (what flows pass a stage, so that workers read them)."""
    if isinstance(source, pa.Table):
        return source.select(columns) if columns else source
    if not source:
        return pa.table({"doc_id": pa.array([], pa.string()), "text": pa.array([], pa.string())})
    return pa.concat_tables([ref.read("docs", columns=columns) for ref in source])


def write_decisions(writer: ArtifactWriter, decisions: Decisions, docs: pa.Table | None = None, **stats) -> None:
    """The stage's decisions, its output documents when it has them, and its stats with docs_in / docs_out /
    dropped counted from the decisions."""
    if docs is not None and docs.num_rows != decisions.kept():
        raise ValueError(f"stage {decisions.stage}: {docs.num_rows} output documents but {decisions.kept()} "
                         "decided kept or selected")
    writer.write("decisions", decisions.table())
    if docs is not None:
        writer.write("docs", docs)
    writer.stats(**decisions.counts(), **stats)
