"""Probe throughput: the byte-level probe vs the SmolLM2-tokenizer probe at equal width and depth.

Both models are built by `selectflow.probe.model.build_model` from one `ProbeModelConfig` (only the vocabulary
differs: 257 byte symbols vs SmolLM2's 49,152 tokens) and trained with the probe's own loss (`train._summed_loss`)
and AdamW on real text from the sample corpus. Steps of the two run alternately in one process, on one thread,
so that the shared machine's load hits both alike; the medians of seconds per step give tokens/s and bytes/s.

    .venv/bin/python bench/probe/speed.py [--steps 40] [--hidden 64 --layers 2]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import zstandard

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from selectflow.config import ProbeConfig, ProbeModelConfig
from selectflow.probe import pack_train
from selectflow.probe.model import build_model
from selectflow.probe.tokenizer import load_tokenizer
from selectflow.probe.train import _summed_loss


def sample_texts(name: str = "prose") -> list[str]:
    raw = zstandard.ZstdDecompressor().stream_reader(open(REPO / f"selectflow/data/sample/{name}.jsonl.zst", "rb"))
    return [json.loads(line)["text"] for line in io.TextIOWrapper(raw, encoding="utf-8") if line.strip()]


class Side:
    """One probe variant: its tokenizer, model, optimizer and training blocks."""

    def __init__(self, label: str, kind: str, model_cfg: ProbeModelConfig, batch: int, steps: int, texts):
        self.label, self.batch = label, batch
        self.tokenizer = load_tokenizer(kind)
        self.blocks = pack_train(texts, self.tokenizer, steps * batch * model_cfg.seq_len, model_cfg.seq_len, batch,
                                 seed=0, short_subset="error", name=label).blocks
        torch.manual_seed(0)
        self.model = build_model(model_cfg, self.tokenizer.vocab_size, 0, None)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=5e-3, betas=(0.9, 0.95))
        self.seconds: list[float] = []
        self.bytes: list[int] = []
        self.params = sum(p.numel() for p in self.model.parameters())

    def step(self, index: int) -> None:
        batch_np = self.blocks[index * self.batch:(index + 1) * self.batch]
        batch = torch.from_numpy(batch_np)
        tick = time.perf_counter()
        loss = _summed_loss(self.model, batch, torch.device("cpu")) / batch_np[:, 1:].size
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.seconds.append(time.perf_counter() - tick)
        self.bytes.append(int(self.tokenizer.token_bytes[batch_np].sum()))

    def row(self, warmup: int) -> dict:
        seconds = statistics.median(self.seconds[warmup:])
        tokens = self.blocks.shape[1] * self.batch
        return {"probe": self.label, "vocab": self.tokenizer.vocab_size, "params": self.params,
                "seq_len": int(self.blocks.shape[1]), "s_per_step": seconds, "tokens_per_s": tokens / seconds,
                "bytes_per_s": statistics.median(self.bytes[warmup:]) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per side (after --warmup)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench/probe/results.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    texts = sample_texts()
    defaults = ProbeConfig()
    shape = {"hidden": args.hidden, "layers": args.layers, "heads": defaults.model.heads,
             "intermediate": 4 * args.hidden}
    total = args.steps + args.warmup
    sides = [
        # the previous default: SmolLM2's tokenizer, 128-token blocks
        Side("smollm2 tokens (previous default)", "hf", ProbeModelConfig(**shape, seq_len=128), 8, total, texts),
        Side("bytes (new default)", "bytes", ProbeModelConfig(**shape, seq_len=256), 8, total, texts),
        Side("bytes, 128-byte blocks", "bytes", ProbeModelConfig(**shape, seq_len=128), 8, total, texts),
    ]
    for index in range(total):
        for side in sides:
            side.step(index)
    rows = [side.row(args.warmup) for side in sides]
    base = rows[0]
    print("| probe | vocab | params | seq | s/step | tokens/s | bytes/s | tokens/s vs previous | bytes/s vs previous |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['probe']} | {row['vocab']} | {row['params']:,} | {row['seq_len']} | {row['s_per_step']:.3f} | "
              f"{row['tokens_per_s']:,.0f} | {row['bytes_per_s']:,.0f} | {row['tokens_per_s'] / base['tokens_per_s']:.1f}x"
              f" | {row['bytes_per_s'] / base['bytes_per_s']:.1f}x |")
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                    "load": list(__import__("os").getloadavg())}, indent=2))


if __name__ == "__main__":
    main()
