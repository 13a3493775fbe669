"""Cutting a subset to an exact token budget, and fixed held-out evaluation blocks.

How a subset is cut to the budget (the same rule for every compared subset):
1. its documents are shuffled with the seed (document order inside an artifact carries no meaning for training);
2. each document is tokenized without special tokens and followed by the end-of-text token, and the token stream is
   built in that order only until it covers the budget (so a large pool is never tokenized whole);
3. the stream is cut into `seq_len` blocks; the budget is `steps * batch_size` blocks with
   `steps = tokens // (batch_size * seq_len)`, i.e. `tokens` rounded down to whole batches;
4. the unique blocks (epoch 1) are the first ones of the stream, in stream order shuffled with the seed. When a
   subset is too small (fewer unique blocks than the budget), `short_subset="repeat"` appends further epochs of the
   same blocks, each reshuffled, until the budget is met ("error" and "shrink" raise instead: with "shrink" the flow
   has already lowered every probe's budget to the smallest subset, see `common_budget`). The last, partial block
   of a stream is dropped.

A curriculum (`reorder`) keeps step 2's documents, those the seeded shuffle brings within the budget, and only
changes their order: the stream is rebuilt in the curriculum's order and its blocks are trained in stream order.
The budget still ends at the same token, so the curriculum's last documents lose what the shuffled order's last
one overshot (less than one document).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from selectflow.probe.tokenizer import ProbeTokenizer

_ENCODE_BATCH = 64


@dataclass(frozen=True)
class TrainBlocks:
    """Training blocks in the order they are trained on."""

    blocks: np.ndarray  # int64 [steps * batch_size, seq_len]
    unique_blocks: int  # blocks of epoch 1 (= len(blocks) unless the subset was repeated)
    epochs: float  # len(blocks) / unique_blocks
    doc_indices: list[int]  # indices (into the given texts) of the documents in epoch 1, in stream order
    texts_used: list[str]  # those documents' text as trained (the last one cut where the budget ends)

    @property
    def docs_used(self) -> int:
        return len(self.doc_indices)

    @property
    def tokens(self) -> int:
        return int(self.blocks.size)


def _token_stream(
    texts: list[str], tokenizer: ProbeTokenizer, order: np.ndarray, limit: int | None
) -> tuple[list[int], list[int]]:
    """Tokens of the documents in `order`, each followed by the separator, until `limit` tokens; and doc lengths."""
    stream: list[int] = []
    lengths: list[int] = []
    for start in range(0, len(order), _ENCODE_BATCH):
        batch = [texts[i] for i in order[start:start + _ENCODE_BATCH]]
        for ids in tokenizer.encode_batch(batch):
            stream.extend(ids)
            stream.append(tokenizer.separator_id)
            lengths.append(len(ids) + 1)
            if limit is not None and len(stream) >= limit:
                return stream, lengths
    return stream, lengths


def budget_blocks(tokens: int, batch_size: int, seq_len: int) -> int:
    """Blocks trained on for a budget of `tokens` (rounded down to whole batches)."""
    steps = tokens // (batch_size * seq_len)
    if steps < 1:
        raise ValueError(
            f"probe: tokens ({tokens}) is less than one batch (batch_size {batch_size} x seq_len {seq_len} = "
            f"{batch_size * seq_len}); raise probe.tokens or lower batch_size / model.seq_len"
        )
    return steps * batch_size


def stream_tokens(texts: list[str], tokenizer: ProbeTokenizer) -> int:
    """Tokens of a subset's whole packed stream (each document + its separator)."""
    if tokenizer.name == "bytes":  # no need to materialize the ids
        return sum(len(text.encode("utf-8")) + 1 for text in texts)
    return sum(len(ids) + 1 for start in range(0, len(texts), _ENCODE_BATCH)
               for ids in tokenizer.encode_batch(texts[start:start + _ENCODE_BATCH]))


def common_budget(tokens: int, subset_tokens: dict[str, int], batch_size: int, seq_len: int) -> tuple[int, str]:
    """The budget every probe of a run trains on with short_subset 'shrink': `tokens`, or the smallest subset's
    whole batches when that is less, so that every subset trains one epoch on equal tokens; and a note saying so."""
    wanted = budget_blocks(tokens, batch_size, seq_len) * seq_len
    name, smallest = min(subset_tokens.items(), key=lambda item: item[1])
    fits = (smallest // seq_len) // batch_size * batch_size * seq_len
    if fits >= wanted:
        return wanted, ""
    if fits == 0:
        raise ValueError(f"probe: subset {name!r} holds {smallest} tokens, less than one batch of {batch_size} x "
                         f"{seq_len}; select more (selection budgets) or lower probe.batch_size / model.seq_len")
    return fits, (f"probe budget lowered from {wanted} to {fits} tokens for every subset: {name!r} holds only "
                  f"{smallest}, and subsets are compared on equal tokens, one epoch each (probe.short_subset)")


def pack_train(
    texts: list[str],
    tokenizer: ProbeTokenizer,
    tokens: int,
    seq_len: int,
    batch_size: int,
    seed: int,
    short_subset: str = "repeat",
    name: str = "subset",
    reorder: Callable[[np.ndarray], np.ndarray] | None = None,
) -> TrainBlocks:
    """The subset's training blocks for an exact budget (see the module docstring for the rule); `reorder` maps the
    budget's documents (indices, in shuffled order) to the order a curriculum trains them in."""
    if not any(texts):
        raise ValueError(f"probe: subset {name!r} has no documents with text; nothing to train on")
    wanted = budget_blocks(tokens, batch_size, seq_len)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts))
    stream, lengths = _token_stream(texts, tokenizer, order, wanted * seq_len)
    if reorder is not None:
        chosen = order[: len(lengths)]
        order = np.asarray(reorder(chosen), dtype=np.int64)
        if sorted(order.tolist()) != sorted(chosen.tolist()):
            raise ValueError(f"probe: the curriculum of subset {name!r} must reorder the budget's documents, not "
                             "change them")
        stream, lengths = _token_stream(texts, tokenizer, order, wanted * seq_len)
    unique = min(len(stream) // seq_len, wanted)
    if unique == 0:
        raise ValueError(
            f"probe: subset {name!r} holds {len(stream)} tokens, less than one block of seq_len {seq_len}; "
            "add documents or lower probe.model.seq_len"
        )
    if unique < wanted and short_subset != "repeat":
        raise ValueError(
            f"probe: subset {name!r} holds {unique * seq_len} tokens in whole blocks, less than the budget "
            f"{wanted * seq_len}; lower probe.tokens, select more, or set probe.short_subset='repeat'"
        )
    used = unique * seq_len
    epoch = np.asarray(stream[:used], dtype=np.int64).reshape(unique, seq_len)
    if reorder is None:
        epoch = epoch[rng.permutation(unique)]
    parts = [epoch]
    while sum(len(part) for part in parts) < wanted:
        parts.append(epoch[rng.permutation(unique)])
    blocks = np.concatenate(parts)[:wanted]

    doc_indices: list[int] = []
    texts_used: list[str] = []
    consumed = 0
    for position, length in enumerate(lengths):
        doc_indices.append(int(order[position]))
        if consumed + length > used:  # the document where the budget ends: keep the trained part only
            texts_used.append(tokenizer.decode(stream[consumed:used]))
            break
        texts_used.append(texts[order[position]])
        consumed += length
        if consumed == used:
            break
    return TrainBlocks(blocks, unique, wanted / unique, doc_indices, texts_used)


def sample_to_tokens(texts: list[str], tokenizer: ProbeTokenizer, tokens: int, seed: int) -> list[int]:
    """Indices of a seeded uniform sample of documents whose tokens (with separators) first reach `tokens`."""
    order = np.random.default_rng(seed).permutation(len(texts))
    _, lengths = _token_stream(texts, tokenizer, order, tokens)
    return [int(i) for i in order[: len(lengths)]]


def pack_eval(texts: list[str], tokenizer: ProbeTokenizer, max_tokens: int, seq_len: int, name: str) -> np.ndarray:
    """Fixed held-out blocks: documents in their given order, packed, at most `max_tokens` (whole blocks)."""
    texts = [text for text in texts if text]
    if not texts:
        raise ValueError(f"probe: held-out set {name!r} is empty; give it documents or leave it out")
    limit = max(max_tokens // seq_len, 1) * seq_len
    stream, _ = _token_stream(texts, tokenizer, np.arange(len(texts)), limit)
    n_blocks = min(len(stream) // seq_len, limit // seq_len)
    if n_blocks == 0:
        raise ValueError(f"probe: held-out set {name!r} has fewer than seq_len ({seq_len}) tokens")
    return np.asarray(stream[: n_blocks * seq_len], dtype=np.int64).reshape(n_blocks, seq_len)
