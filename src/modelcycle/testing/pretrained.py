"""A built-in causal language model as a Hugging Face checkpoint folder (de-quantized safetensors weights,
config and tokenizer), for tests and benchmarks that start many processes: each loads the folder in a
second or two, where parsing the shipped GGUF takes far longer."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from modelcycle.data.text import resolve_tokenizer_dir
from modelcycle.models.causal_lm import CausalLMParams, build
from modelcycle.schema import InputSchema


def causal_lm_folder(source: str, target: Path) -> Path:
    """Write ``source`` (``builtin:smollm2`` or a GGUF file) into the folder ``target`` and return it; a
    config naming it as ``model.params.checkpoint`` and ``data.preprocess.text.tokenizer`` fine-tunes it."""
    model = build(InputSchema(kind="corpus", tensors=[]), 0, CausalLMParams(checkpoint=source))
    network: Any = model.network
    network.save_pretrained(target)  # de-quantized on load: plain float weights
    for file in resolve_tokenizer_dir(source).iterdir():
        if file.is_file():
            shutil.copy(file, target / file.name)
    return target
