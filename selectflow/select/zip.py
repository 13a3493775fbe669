"""ZIP data selection (Entropy Law, Yin et al. 2024): greedily pick the documents that compress worst together.

Modes
-----
``exact`` reproduces the published algorithm (USTC-StarTeam/ZIP, ``ZIP.py``) decision for decision:

- A document is serialized as its original record: ``json.loads(record)`` (key order preserved), or
  ``{"text": text}`` when the document has no record (plain text inputs). A set of documents is scored as
  ``r = len(s) / len(zlib.compress(s, 9))`` with ``s = str(list_of_records).encode("utf-8")`` (Python's repr of the
  list: single quotes, escaped newlines, ``", "`` separators, brackets). Lower r = less redundant = preferred.
- π starts as every document's own ratio (``str([record])``). Each round:
  1. global: the K1 unused documents with the lowest π;
  2. coarse: for each of them the ratio of ``selected + [x]`` (``selected`` in selection order) is written back
     into π; the K2 lowest are taken and ALL K2 leave the pool (π = +inf), even those stage 3 will not pick;
  3. fine: K3 times, pick among the K2 the document whose ratio together with the documents already picked in
     THIS round (empty anchor, not the global selected set) is lowest;
  4. the K3 picks are appended to ``selected``.
- Stop when ``len(selected) >= budget`` (docs: the output has ceil(budget/K3)*K3 documents) or when the selected
  tokens reach the budget (tokens).

``gain`` (beyond the paper) is ``zstd`` made length-neutral. A longer document repeats itself more, so its ratio
is higher (Spearman(own ratio, bytes) = 0.84 on the sample's documents) and plain ZIP fills its budget with short,
odd documents. Here every ratio is the raw bytes per compressed byte a candidate adds net of the fixed cost of a
zstd frame (compressing nothing with the same context), divided by ``bytes ** b``, where ``b`` is the slope of
log(own ratio) on log(bytes) over the pool: candidates compete on redundancy against documents of their length.

``zstd`` (beyond the paper) runs the same three stages on the documents' ``text``, but a candidate's score is its
*marginal* ratio ``len(x) / len(zstd(x | context))``, the context used as a raw-content zstd dictionary. In stage 2
the context is the WHOLE selected set (texts joined by a blank line), so repetition anywhere in it counts (zlib's
window is 32 KB; past zstd's window of ``2**zstd_window_log`` bytes, the most recent window of selected text is the
context). It is built once per round. In stage 3 the context is this round's picks, as the paper's anchor: the K2
candidates already are the least redundant against the selected set, and a context of at most K3 documents is
cheap to rebuild after every pick (rebuilding the selected set's, megabytes, after every pick made this mode ~30x
slower). π starts as the own ratio ``len(x) / len(zstd(x))``.

Ties (exact and zstd): always broken by pool position (row order of the input table), lower first: stage 1 sorts
by (π, position), stage 2 by (ratio, position), stage 3 takes the lowest (ratio, position). The reference uses
``torch.topk`` whose order among equal values is unspecified (stage 3 there scans the K2 in stage-2 ratio order),
so on exact ties the reference may pick a different document; ratios tie only when two candidates compress to
exactly the same sizes (e.g. exact duplicates), where either choice gives the same scores.

Where this differs from the reference on purpose
------------------------------------------------
- Pool smaller than K1 (or K2): clamped to the unused documents left. The reference's ``torch.topk`` raises when
  K1 > pool, and once fewer than K1 documents are unused it re-scores used ones (π = 1e6) and can select a
  document twice; here stage 1 only ever sees unused documents.
- Budget the pool cannot meet: every round removes K2 documents, so a docs budget needs
  ``pool >= (rounds - 1) * K2 + K3``; this is checked up front (``ZipError``). A tokens budget is checked against
  the pool's total tokens; if the pool still runs out (fewer than K3 unused documents), selection stops early with
  ``ZipResult.stopped == "pool_exhausted"``.

Speed
-----
The reference recompresses the whole selected list for every candidate. Here a zlib stream is fed the shared
prefix ``[r1, ..., rn`` once (and grown incrementally as documents are appended) and each candidate costs a
``compressobj.copy()`` + its suffix ``, rx]`` + flush: bit-identical sizes, work proportional to the candidate.
Candidates are evaluated on ``workers`` threads (zlib and zstd release the GIL) or processes.

Resume
------
The granularity is one round: with a ``ZipCheckpoint``, the run's ``ZipState`` (selection so far, the cached π,
the per-document bookkeeping, the rounds' records) is saved after every finished round, and a run killed mid-way
resumes from its last saved round, with the same picks, decisions and rounds as an uninterrupted run (the work
since is redone). On pools of ~10^6 documents a save writes ~50 MB; there saves are spaced so that they cost at
most ~5% of the run (``ZipCheckpoint.save_throttled``). A checkpoint of another pool or config, or an unreadable
one, is ignored with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from selectflow.compression import (
    SEPARATOR,
    ZSTD_LEVEL,
    ReprListPrefix,
    ZstdContext,
    compression_ratio,
    join_texts,
    set_ratio,
)
from selectflow.config import ZipConfig

STAGES = ("global", "coarse", "fine")
STATE_VERSION = 1  # bump when ZipState's content or meaning changes: older checkpoints are then ignored

logger = logging.getLogger(__name__)

DECISIONS_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("selected", pa.bool_(), nullable=False),
        pa.field("order", pa.int64()),  # 0-based position in the selection (null if not selected)
        pa.field("round", pa.int64()),  # round picked, or last round it reached stage 2/3 (null: never left stage 1)
        pa.field("stage_reached", pa.string(), nullable=False),  # global | coarse | fine
        pa.field("own_ratio", pa.float64(), nullable=False),  # initial π
        # selected: the stage-3 ratio when picked; others: the last ratio computed for it (stage 3 score if it
        # reached stage 3, else its last π)
        pa.field("ratio", pa.float64(), nullable=False),
        # selected only: compressed bytes it added when picked (exact: growth of zlib(str(round picks)); zstd:
        # its marginal zstd size against the round's earlier picks)
        pa.field("marginal_bytes", pa.int64()),
    ]
)


class ZipError(ValueError):
    """A ZIP configuration that cannot run on this pool; the message says what to change."""


@dataclass
class ZipResult:
    selected: list[str]  # doc_ids in selection order
    decisions: pa.Table  # DECISIONS_SCHEMA, one row per pool document, in pool order
    rounds: list[dict]  # per round: seconds per stage, sizes, ratio of the selected set so far
    final_ratio: dict  # ratios of the final set (see _final_ratio)
    stopped: str = "budget"  # "budget" | "pool_exhausted" (tokens budget only)
    seconds: dict = field(default_factory=dict)  # init (own ratios), rounds, final, total
    resumed_from_round: int = 0  # rounds restored from a checkpoint (0: started fresh)


# ----------------------------------------------------------------------------------------------- resume


@dataclass
class ZipState:
    """Where a run stands after its last finished round: everything a resumed run needs to continue exactly."""

    fingerprint: str  # of the pool, the config and STATE_VERSION (see _fingerprint)
    own: np.ndarray  # float64, each document's own ratio (the initial π)
    pi: np.ndarray  # float64, the cached ratios stage 1 ranks by; stale values decide later rounds
    last_score: np.ndarray  # float64, the last ratio computed for each document
    stage_reached: np.ndarray  # int8, index into STAGES
    last_round: np.ndarray  # int64, last round it reached stage 2/3 (-1: never)
    order: np.ndarray  # int64, position in the selection (-1: not selected)
    marginal: np.ndarray  # int64, compressed bytes it added when picked (-1: not selected)
    used: np.ndarray  # bool, left the pool
    selected: list[int] = field(default_factory=list)  # pool positions in selection order
    rounds: list[dict] = field(default_factory=list)  # ZipResult.rounds so far

    _ARRAYS = ("own", "pi", "last_score", "stage_reached", "last_round", "order", "marginal", "used")

    @classmethod
    def fresh(cls, own: np.ndarray, fingerprint: str) -> ZipState:
        n = len(own)
        return cls(fingerprint, own, own.copy(), own.copy(), np.zeros(n, np.int8), np.full(n, -1, np.int64),
                   np.full(n, -1, np.int64), np.full(n, -1, np.int64), np.zeros(n, bool))

    def to_arrays(self) -> dict[str, np.ndarray]:
        meta = {"version": STATE_VERSION, "fingerprint": self.fingerprint, "rounds": self.rounds}
        arrays = {name: getattr(self, name) for name in self._ARRAYS}
        return arrays | {"selected": np.asarray(self.selected, np.int64), "meta": np.array(json.dumps(meta))}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ZipState:
        meta = json.loads(str(arrays["meta"]))
        if meta["version"] != STATE_VERSION:
            raise ValueError(f"state version {meta['version']}, expected {STATE_VERSION}")
        selected = [int(i) for i in arrays["selected"]]
        return cls(meta["fingerprint"], *(arrays[name] for name in cls._ARRAYS), selected, meta["rounds"])

    def fits(self, n: int) -> bool:
        """Whether the arrays are whole for a pool of n documents (guards against a damaged but readable file)."""
        return (all(getattr(self, name).shape == (n,) for name in self._ARRAYS)
                and all(0 <= i < n for i in self.selected))


class ZipCheckpoint:
    """The latest ZipState of one run, kept as `<folder>/zip_state.npz` (numpy arrays + JSON, no pickle).

    Each save replaces the file atomically, so a kill leaves either the previous round's state or the new one."""

    FILE = "zip_state.npz"
    CHEAP_SAVE_S = 0.05
    OVERHEAD_FACTOR = 20

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / self.FILE
        self._last_save_s = 0.0
        self._last_saved_at = 0.0

    def load(self) -> ZipState | None:
        """The saved state, or None when there is none or it cannot be read (logged, never raised)."""
        if not self.path.is_file():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as archive:
                return ZipState.from_arrays({name: archive[name] for name in archive.files})
        except Exception as exc:  # any damage to the file means: start over, never fail the run
            logger.warning("zip: ignoring unreadable checkpoint %s (%s: %s); starting from round 1",
                           self.path, type(exc).__name__, exc)
            return None

    def save_throttled(self, state: ZipState) -> None:
        """Save after a round unless that would make checkpointing a noticeable share of the run: a save taking
        more than CHEAP_SAVE_S (a pool of ~10^6 documents writes ~50 MB) waits until OVERHEAD_FACTOR times its
        duration has passed since the last one, so a kill redoes at most a few seconds of rounds."""
        since = time.perf_counter() - self._last_saved_at
        if self._last_save_s > self.CHEAP_SAVE_S and since < self.OVERHEAD_FACTOR * self._last_save_s:
            return
        start = time.perf_counter()
        self.save(state)
        self._last_saved_at = time.perf_counter()
        self._last_save_s = self._last_saved_at - start

    def save(self, state: ZipState) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{self.FILE}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, **state.to_arrays())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(self.folder)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fingerprint(cfg: ZipConfig, doc_ids: list[str], items: list[bytes], tokens: np.ndarray | None) -> str:
    """Identity of a run's inputs: the pool as scored, the token counts and the config fields that change picks."""
    digest = hashlib.blake2b(digest_size=16)
    settings = cfg.model_dump(exclude={"workers", "parallel"})  # these change speed, not picks
    digest.update(json.dumps([STATE_VERSION, settings], sort_keys=True).encode())
    for doc_id, item in zip(doc_ids, items):
        digest.update(len(doc_id).to_bytes(8, "little") + doc_id.encode() + len(item).to_bytes(8, "little") + item)
    if tokens is not None:
        digest.update(tokens.tobytes())
    return digest.hexdigest()


def _resume(checkpoint: ZipCheckpoint | None, fingerprint: str, n: int) -> ZipState | None:
    state = checkpoint.load() if checkpoint is not None else None
    if state is None:
        return None
    if state.fingerprint != fingerprint or not state.fits(n):
        logger.warning("zip: ignoring checkpoint %s: it was saved for another pool or config; starting from round 1",
                       checkpoint.path)
        return None
    return state


# ----------------------------------------------------------------------------------------------- serialization


def record_repr(record: str | None, text: str) -> bytes:
    """Exact mode's serialization of one document: repr of its original record (or of {"text": text})."""
    obj = json.loads(record) if record is not None else {"text": text}
    return repr(obj).encode("utf-8")


def token_counter(name: str) -> Callable[[str], int]:
    if name == "whitespace":
        return lambda text: len(text.split())
    if name == "bytes":
        return lambda text: len(text.encode("utf-8"))
    return lambda text: -(-len(text.encode("utf-8")) // 4)


# ----------------------------------------------------------------------------------------------- scorers
# A scorer returns, for candidate pool positions, (ratios float64, compressed sizes int64) of:
#   own:    the document alone
#   coarse: the document against the selected set
#   fine:   the document against this round's picks

_ITEMS: list[bytes] = []  # worker processes: the serialized pool (inherited on fork / sent by the initializer)
_STREAMS: dict[str, tuple[list[int], ReprListPrefix]] = {}


def _init_worker(items: list[bytes]) -> None:
    global _ITEMS
    _ITEMS = items
    _STREAMS.clear()


def _stream_for(slot: str, prefix_ids: list[int], items: Sequence[bytes]) -> ReprListPrefix:
    """A cached prefix stream holding exactly prefix_ids, grown incrementally when prefix_ids extends it."""
    fed, stream = _STREAMS.get(slot, (None, None))
    if fed is None or len(fed) > len(prefix_ids) or fed != prefix_ids[: len(fed)]:
        fed, stream = [], ReprListPrefix()
    for i in prefix_ids[len(fed):]:
        stream.append(items[i])
    _STREAMS[slot] = (list(prefix_ids), stream)
    return stream


def _proc_eval(slot: str, prefix_ids: list[int], cand: list[int]) -> list[tuple[int, int]]:
    stream = _stream_for(slot, prefix_ids, _ITEMS)
    return [stream.size_with_item(_ITEMS[i]) for i in cand]


def _chunks(seq: Sequence[int], n: int) -> list[list[int]]:
    n = max(1, min(n, len(seq)))
    size = -(-len(seq) // n)
    return [list(seq[i : i + size]) for i in range(0, len(seq), size)]


class _ExactScorer:
    def __init__(self, items: list[bytes], workers: int, parallel: str) -> None:
        self.items = items
        self.workers = workers
        self.pool: Executor | None = None
        if workers > 1 and parallel == "processes":
            import multiprocessing as mp

            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
            self.pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(items,))
            self.kind = "processes"
        elif workers > 1:
            self.pool = ThreadPoolExecutor(workers)
            self.kind = "threads"
        self.selected = ReprListPrefix()  # grown as documents are selected (main process)
        self.n_selected = 0
        self.fine_stream = ReprListPrefix()
        self.fine_ids: list[int] = []

    def _eval(self, slot: str, stream: ReprListPrefix, prefix_ids: list[int], cand: Sequence[int]):
        cand = list(cand)
        if self.pool is None or len(cand) < 2:
            pairs = [stream.size_with_item(self.items[i]) for i in cand]
        elif isinstance(self.pool, ProcessPoolExecutor):
            futures = [self.pool.submit(_proc_eval, slot, prefix_ids, ch) for ch in _chunks(cand, self.workers)]
            pairs = [p for f in futures for p in f.result()]
        else:
            items = self.items
            parts = self.pool.map(lambda ch: [stream.size_with_item(items[i]) for i in ch], _chunks(cand, self.workers))
            pairs = [p for part in parts for p in part]
        raw = np.fromiter((p[0] for p in pairs), np.int64, len(pairs))
        comp = np.fromiter((p[1] for p in pairs), np.int64, len(pairs))
        return raw / comp, comp

    def own(self, n: int):
        return self._eval("own", ReprListPrefix(), [], range(n))

    def coarse(self, selected: list[int], cand: Sequence[int]):
        for i in selected[self.n_selected:]:
            self.selected.append(self.items[i])
        self.n_selected = len(selected)
        return self._eval("global", self.selected, selected, cand)

    def fine(self, selected: list[int], picked: list[int], cand: Sequence[int]):
        if len(picked) < len(self.fine_ids) or picked[: len(self.fine_ids)] != self.fine_ids:
            self.fine_stream, self.fine_ids = ReprListPrefix(), []
        for i in picked[len(self.fine_ids):]:
            self.fine_stream.append(self.items[i])
        self.fine_ids = list(picked)
        return self._eval("fine", self.fine_stream, picked, cand)

    def fine_set_size(self, picked: list[int]) -> int:
        """Compressed bytes of str(picked) (call right after fine() with the same picks)."""
        return self.fine_stream.size_closed()[1] if picked else 0

    def selected_ratio(self, selected: list[int]) -> float:
        for i in selected[self.n_selected:]:
            self.selected.append(self.items[i])
        self.n_selected = len(selected)
        raw, comp = self.selected.size_closed()
        return raw / comp

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


class _ZstdScorer:
    def __init__(self, items: list[bytes], workers: int, level: int, window_log: int, net: bool = False) -> None:
        self.items = items
        self.net = net  # 'gain': net of the frame, and corrected for the pool's trend of ratio with length
        self.slope = 0.0  # of log(own ratio) on log(bytes) over the pool, fit by own()
        self.workers = workers
        self.level = level
        self.window_log = window_log
        self.pool = ThreadPoolExecutor(workers) if workers > 1 else None
        self.sep = SEPARATOR.encode()
        self._ctx_key: tuple | None = None
        self._ctx: ZstdContext | None = None

    def _context(self, ids: list[int]) -> ZstdContext:
        key = tuple(ids)
        if self._ctx is None or key != self._ctx_key:
            self._ctx = ZstdContext(self._recent_text(ids), self.level, self.window_log)
            self._ctx_key = key
        return self._ctx

    def _recent_text(self, ids: list[int]) -> bytes:
        """The last window's worth of the documents' texts joined by the separator. zstd cannot match further back
        than its window, so once the selected text outgrows it the most recent window is the context (no ceiling,
        and only the tail is ever joined)."""
        limit = (1 << self.window_log) - 1
        tail, size = [], 0
        for i in reversed(ids):
            tail.append(self.items[i])
            size += len(self.items[i]) + len(self.sep)
            if size >= limit + len(self.sep):
                break
        return self.sep.join(reversed(tail))[-limit:]

    def _eval(self, ids: list[int], cand: Sequence[int]):
        ctx = self._context(ids)
        cand = list(cand)
        items = self.items

        def run(ch):
            return [ctx.marginal(items[i]) for i in ch]

        if self.pool is None or len(cand) < 2:
            comp_list = run(cand)
        else:
            comp_list = [c for part in self.pool.map(run, _chunks(cand, self.workers)) for c in part]
        comp = np.asarray(comp_list, dtype=np.int64)
        raw = np.fromiter((len(items[i]) for i in cand), np.int64, len(cand))
        if self.net:
            ratio = raw / np.maximum(comp - ctx.marginal(b""), 1)
            return ratio / np.maximum(raw, 1) ** self.slope, comp
        return raw / comp, comp

    def own(self, n: int):
        ratio, comp = self._eval([], range(n))
        if self.net and n > 1:
            log_bytes = np.log(np.maximum([len(item) for item in self.items[:n]], 1))
            if np.ptp(log_bytes) > 0:
                self.slope = float(np.polyfit(log_bytes, np.log(ratio), 1)[0])
                ratio = ratio / np.exp(log_bytes) ** self.slope
        return ratio, comp

    def coarse(self, selected: list[int], cand: Sequence[int]):
        return self._eval(list(selected), cand)

    def fine(self, selected: list[int], picked: list[int], cand: Sequence[int]):
        return self._eval(list(picked), cand)

    def fine_set_size(self, picked: list[int]) -> int:
        return 0  # zstd mode reports the candidate's own marginal size

    def selected_ratio(self, selected: list[int]) -> float:
        return set_ratio((self.items[i] for i in selected), "zstd", self.level, self.window_log)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


# ----------------------------------------------------------------------------------------------- the algorithm


def check_pool_size(cfg: ZipConfig, n: int, tokens: np.ndarray | None) -> None:
    """Raise ZipError unless a pool of `n` documents (with `tokens` each, for a tokens budget) can meet the budget."""
    if n == 0:
        raise ZipError("zip: the pool is empty: nothing to select from (check the upstream stages' output)")
    if cfg.budget_unit == "docs":
        rounds = math.ceil(cfg.budget / cfg.k3)
        need = (rounds - 1) * cfg.k2 + cfg.k3
        if n < need:
            raise ZipError(
                f"zip: a budget of {cfg.budget} docs needs {rounds} rounds of k3={cfg.k3} picks, and every round "
                f"removes k2={cfg.k2} documents from the pool, so the pool needs at least {need} documents but "
                f"has {n}: lower budget or k2 (max budget here: "
                f"{(max(0, n - cfg.k3) // cfg.k2 + 1) * cfg.k3 if n >= cfg.k3 else 0}), or give a larger pool"
            )
    else:
        total = int(tokens.sum()) if tokens is not None else 0
        if total < cfg.budget:
            raise ZipError(
                f"zip: a budget of {cfg.budget} tokens exceeds the whole pool ({n} documents, {total} tokens): "
                "lower budget or give a larger pool"
            )
        if n < cfg.k3:
            raise ZipError(f"zip: the pool has {n} documents, fewer than k3={cfg.k3} picked per round: lower k3")


def zip_select(
    docs: pa.Table,
    cfg: ZipConfig,
    progress: Callable[[int, dict], None] | None = None,
    token_count: Callable[[str], int] | None = None,
    checkpoint: ZipCheckpoint | None = None,
) -> ZipResult:
    """Select from `docs` (DOCS schema: doc_id, text, record used) with ZIP; see the module docstring.

    `progress(round_number, info)` is called after each round run here (not for rounds restored from the
    checkpoint). With `checkpoint`, the state is saved after finished rounds and a killed run resumes from
    its last saved round (same result as an uninterrupted run); the checkpoint is left in place afterwards."""
    t_start = time.perf_counter()
    n = docs.num_rows
    doc_ids = docs.column("doc_id").to_pylist() if n else []
    texts = docs.column("text").to_pylist() if n else []
    tokens = None
    if cfg.budget_unit == "tokens":
        count = token_count or token_counter(cfg.token_counter)
        tokens = np.fromiter((count(t) for t in texts), np.int64, n)
    check_pool_size(cfg, n, tokens)

    if cfg.mode == "exact":
        records = (
            docs.column("record").to_pylist() if "record" in docs.column_names else [None] * n
        )
        items = [record_repr(r, t) for r, t in zip(records, texts)]
        scorer = _ExactScorer(items, cfg.workers, cfg.parallel)
    else:
        items = [t.encode("utf-8") for t in texts]
        scorer = _ZstdScorer(items, cfg.workers, cfg.zstd_level, cfg.zstd_window_log, net=cfg.mode == "gain")

    fingerprint = _fingerprint(cfg, doc_ids, items, tokens) if checkpoint is not None else ""
    state = _resume(checkpoint, fingerprint, n)
    resumed_from_round = len(state.rounds) if state is not None else 0
    stopped = "budget"
    try:
        t0 = time.perf_counter()
        if state is None:
            state = ZipState.fresh(scorer.own(n)[0], fingerprint)
        seconds_init = time.perf_counter() - t0

        def done() -> bool:
            if cfg.budget_unit == "docs":
                return len(state.selected) >= cfg.budget
            return int(tokens[state.selected].sum()) >= cfg.budget

        while not done():
            if n - int(state.used.sum()) < cfg.k3:
                stopped = "pool_exhausted"
                break
            info = _run_round(scorer, state, cfg)
            if tokens is not None:
                info["tokens_selected"] = int(tokens[state.selected].sum())
            state.rounds.append(info)
            if checkpoint is not None:
                checkpoint.save_throttled(state)
            if progress is not None:
                progress(info["round"] + 1, dict(info))
    finally:
        scorer.close()

    t_final = time.perf_counter()
    selected = state.selected
    final = _final_ratio([texts[i] for i in selected], [items[i] for i in selected] if cfg.mode == "exact" else None,
                         cfg.zstd_window_log)
    now = time.perf_counter()
    return ZipResult(
        selected=[doc_ids[i] for i in selected],
        decisions=_decisions(doc_ids, state),
        rounds=state.rounds,
        final_ratio=final,
        stopped=stopped,
        seconds={
            "init": seconds_init,
            "rounds": t_final - t_start - seconds_init,
            "final": now - t_final,
            "total": now - t_start,
        },
        resumed_from_round=resumed_from_round,
    )


def _run_round(scorer: _ExactScorer | _ZstdScorer, state: ZipState, cfg: ZipConfig) -> dict:
    """One round of the three stages, applied to `state` in place; returns the round's record."""
    n = len(state.pi)
    selected, used = state.selected, state.used
    available = n - int(used.sum())
    rnd = len(state.rounds)
    k1, k2 = min(cfg.k1, available), min(cfg.k2, available)
    # stage 1 (global): K1 lowest stale π among unused documents, ties by position
    t1 = time.perf_counter()
    cand1 = lowest_unused(state.pi, used, k1)
    # stage 2 (coarse): ratio of selected + [x]; written back into π
    t2 = time.perf_counter()
    ratios, _ = scorer.coarse(selected, cand1)
    state.pi[cand1] = ratios
    state.last_score[cand1] = ratios
    state.stage_reached[cand1] = np.maximum(state.stage_reached[cand1], 1)
    state.last_round[cand1] = rnd
    cand2 = cand1[np.lexsort((cand1, ratios))[:k2]]
    used[cand2] = True
    state.stage_reached[cand2] = 2
    # stage 3 (fine): greedy over the K2
    t3 = time.perf_counter()
    remaining = sorted(int(i) for i in cand2)  # position order: ties go to the lowest position
    picked: list[int] = []
    for _ in range(cfg.k3):
        scores, comp = scorer.fine(selected, picked, remaining)
        state.last_score[remaining] = scores
        best = int(np.argmin(scores))  # first minimum = lowest position among ties
        doc = remaining.pop(best)
        before = scorer.fine_set_size(picked)
        state.marginal[doc] = int(comp[best]) - before
        state.order[doc] = len(selected) + len(picked)
        picked.append(doc)
    selected.extend(picked)
    t4 = time.perf_counter()
    return {
        "round": rnd,
        "k1": k1,
        "k2": k2,
        "seconds_global": t2 - t1,
        "seconds_coarse": t3 - t2,
        "seconds_fine": t4 - t3,
        "n_selected": len(selected),
        "pool_left": n - int(used.sum()),
        "selected_ratio": scorer.selected_ratio(selected),
    }


def lowest_unused(pi: np.ndarray, used: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k lowest π among unused documents, ordered by (π, position): what a stable argsort of the
    masked π gives, in O(pool) instead of a sort of the whole pool every round (k <= the unused documents)."""
    masked = np.where(used, np.inf, pi)
    if k >= len(masked):
        return np.argsort(masked, kind="stable")[:k]
    kth = np.partition(masked, k - 1)[k - 1]
    below = np.flatnonzero(masked < kth)
    cand = np.concatenate([below, np.flatnonzero(masked == kth)[: k - len(below)]])
    return cand[np.lexsort((cand, masked[cand]))]


def _decisions(doc_ids: list[str], state: ZipState) -> pa.Table:
    is_sel = state.order >= 0
    return pa.table(
        {
            "doc_id": pa.array(doc_ids, pa.string()),
            "selected": pa.array(is_sel),
            "order": pa.array(state.order, pa.int64(), mask=~is_sel),
            "round": pa.array(state.last_round, pa.int64(), mask=state.last_round < 0),
            "stage_reached": pa.array([STAGES[s] for s in state.stage_reached], pa.string()),
            "own_ratio": pa.array(state.own, pa.float64()),
            "ratio": pa.array(state.last_score, pa.float64()),
            "marginal_bytes": pa.array(state.marginal, pa.int64(), mask=~is_sel),
        },
        schema=DECISIONS_SCHEMA,
    )


def _final_ratio(texts: list[str], reprs: list[bytes] | None, window_log: int) -> dict:
    """Ratios of the selected set: texts joined by a blank line with zlib-9 and zstd (level 19, long window,
    long-distance matching), and (exact mode) the reference's measure zlib-9 of str(records)."""
    if not texts:
        return {"zlib9": 0.0, "zstd": 0.0}
    joined = join_texts(texts)
    out = {
        "zlib9": compression_ratio(joined, "zlib", 9),
        "zstd": compression_ratio(joined, "zstd", ZSTD_LEVEL, window_log),
        "bytes": len(joined),
    }
    if reprs is not None:
        out["records_zlib9"] = compression_ratio(b"[" + b", ".join(reprs) + b"]", "zlib", 9)
    return out


__all__ = [
    "DECISIONS_SCHEMA",
    "ZipCheckpoint",
    "ZipConfig",
    "ZipError",
    "ZipResult",
    "ZipState",
    "record_repr",
    "zip_select",
]

