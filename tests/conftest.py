import json
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

SAMPLE = Path(__file__).parents[1] / "selectflow" / "data" / "sample"
# One MLflow store for the whole session: creating a fresh SQLite store costs ~6 s of migrations.
SHARED_MLFLOW = f"sqlite:///{tempfile.gettempdir()}/selectflow-tests-{os.getpid()}/mlflow.db"


def sample_records(name: str, limit: int | None = None) -> list[dict]:
    import zstandard

    with zstandard.open(SAMPLE / name, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    return records[:limit]


def docs_table(texts: list[str], domains: list[str], prefix: str):
    """A pool shard's "docs" table (DOCS schema) of these texts, ids prefix0000, prefix0001, ..."""
    import pyarrow as pa

    from selectflow.schema import DOCS

    n = len(texts)
    return pa.table({"doc_id": [f"{prefix}{i:04d}" for i in range(n)], "source": ["memory://toy.jsonl"] * n,
                     "line": list(range(1, n + 1)), "domain": domains, "text": texts,
                     "content_hash": [f"{prefix}h{i}" for i in range(n)], "n_bytes": [len(t) for t in texts],
                     "record": [None] * n}, schema=DOCS)


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; torch sees none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """A dozen JSONL files cut from the sample corpus (real text, real duplicates) plus one file of bad records."""
    return write_small_corpus(tmp_path_factory.mktemp("corpus"), files=12)


@pytest.fixture(scope="session")
def pinned_small_corpus() -> Path:
    """The small corpus at one fixed path on every run: document ids hash their file's path, so only there do a
    run's ids and decisions come out the same from one test session (or commit) to the next."""
    root = Path(tempfile.gettempdir()) / "selectflow-tests" / "small-corpus"
    root.mkdir(parents=True, exist_ok=True)
    return write_small_corpus(root, files=12)


def write_small_corpus(root: Path, files: int) -> Path:
    """1,200 sample records (prose, dictionary, licenses) dealt over `files` JSONL files, and bad.jsonl. Each file
    is written under a temporary name and renamed, so sessions writing the same folder never see half a file."""
    records = [r for name in ("prose.jsonl.zst", "dictionary.jsonl.zst", "licenses.jsonl.zst")
               for r in sample_records(name, 400)]
    for index in range(files):
        lines = "".join(json.dumps(record) + "\n" for record in records[index::files])
        _write_whole(root / f"part-{index:02d}.jsonl", lines.encode("utf-8"))
    _write_whole(root / "bad.jsonl", (
        b'{"text": "a fine record about compilers and their passes"}\n'
        b'{"text": "unterminated\n'
        b'{"text": 42}\n'
        b'{"body": "no text field"}\n'
        b'{"text": "\xff\xfe not utf-8"}\n'
    ))
    return root


def _write_whole(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_bytes(data)
    os.replace(partial, path)


def write_config(path: Path, inputs: list[dict], workspace: Path, **extra) -> Path:
    import yaml

    config = {"workspace": str(workspace), "ingest": {"inputs": inputs, "shard_rows": 200},
              "dask": {"n_workers": 2, "processes": False}, "retry_delay_seconds": 0.1,
              "tracking": {"tracking_uri": SHARED_MLFLOW},
              "selection": {"budget": 150, "selectors": [{"method": "zip", "k1": 400, "k2": 50, "k3": 25},
                                                        {"method": "random"}]},
              "cluster": {"k": 8, "embedding": {"method": "tfidf", "dim": 32}},
              "probe": {"enabled": False}}
    Path(SHARED_MLFLOW.removeprefix("sqlite:///")).parent.mkdir(exist_ok=True)
    for key, value in extra.items():
        config[key] = value
    path.write_text(yaml.safe_dump(config))
    return path


def build_tiny_lm(folder: Path) -> Path:
    """A tiny Llama checkpoint with a small byte-level BPE trained on sample text, saved under `folder` (also used by
    bench/chaos)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([r["text"] for r in sample_records("prose.jsonl.zst", 300)], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=bpe.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    """A fast influence model and probe tokenizer for flow tests (SmolLM2's 49k-token vocabulary makes even a tiny
    model's output layer the whole cost)."""
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


def fitted_mixture(store, weights: dict[str, float]):
    """A stand-in for the mixture search's fit: its components and weights, what quota 'mixture' reads."""
    return store.build("mixture_fit", weights, ["toy"], "test",
                       lambda w: w.stats(components=sorted(weights), weights=[weights[c] for c in sorted(weights)]))
