"""``import_model(source)``: a pretrained causal language model (``builtin:smollm2``, a GGUF file, or a local
Hugging Face checkpoint folder), or a pretrained encoder (``builtin:minilm``, as sentence embeddings),
registered as a bundle without training — de-quantized weights as
safetensors, its tokenizer copied, schema and task declared — so that a model trained elsewhere enters the
same loop (evaluate, optimize, serve, monitor, explain, update)."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from modelcycle.bundle import Architecture, Bundle, BundleManifest, Lineage, OutputSchema
from modelcycle.bundle.manifest import code_version
from modelcycle.data.corpus import PretrainedCorpusPreprocessor
from modelcycle.data.reference import Reference
from modelcycle.data.state import PreprocessFile
from modelcycle.data.text import PretrainedTextPreprocessor
from modelcycle.errors import ConfigError
from modelcycle.models import ARCHITECTURES
from modelcycle.models.causal_lm import CausalLMParams
from modelcycle.models.hf import HFParams
from modelcycle.packages import BUILTIN_MODELS
from modelcycle.registry import Registry
from modelcycle.tasks import TASKS

CAUSAL_LM, ENCODER = "hf_causal_lm", "hf"


def import_model(
    source: str, name: str, registry: Registry, *, task: str | None = None, context_length: int = 512
) -> Bundle:
    """Register ``source`` as the next version of ``name``: an encoder as an ``embedding`` model, a causal LM
    as a ``language_modeling`` one (``task``, when given, must be that one). ``context_length`` is the block
    size used when the bundle is later evaluated or fine-tuned on a corpus."""
    detected = "embedding" if is_encoder(source) else "language_modeling"
    if task is not None and task != detected:
        raise ConfigError(
            f"{source} imports for {detected}, not {task}",
            hint="fine-tune it for other tasks with a training config (model.arch: hf)",
            parameter="task",
        )
    if detected == "embedding":
        return _import_encoder(source, name, registry, max_length=context_length)
    entry = ARCHITECTURES.get(CAUSAL_LM)
    params = CausalLMParams(checkpoint=source)
    tokenizer = PretrainedCorpusPreprocessor(source, context_length)
    tokenizer.locate()
    inputs = tokenizer.input_schema()
    model, final = entry.for_bundle(entry.build(inputs, 0, params), params)
    vocabulary = int(final.model_dump()["network_config"]["vocab_size"])
    manifest = BundleManifest(
        name=name,
        task="language_modeling",
        architecture=Architecture(name=CAUSAL_LM, params=final.model_dump(mode="json")),
        inputs=inputs,
        outputs=OutputSchema(tensors=TASKS.get("language_modeling")().output_tensors(vocabulary)),
        lineage=Lineage(data_source=source, code_version=code_version()),
    )
    return _register(registry, name, source, manifest, model, tokenizer, task="language_modeling")


def _register(
    registry: Registry,
    name: str,
    source: str,
    manifest: BundleManifest,
    model: nn.Module,
    tokenizer: PretrainedTextPreprocessor | PretrainedCorpusPreprocessor,
    *,
    task: str,
) -> Bundle:
    with registry.builder(name) as builder:
        builder.write_weights(model.state_dict())
        tokenizer.copy_files(builder.path)
        preprocess = PreprocessFile.model_validate({"features": tokenizer.state(), "target": {"task": task}})
        builder.write_json("preprocess.json", preprocess.to_json())
        builder.write_json("reference.json", Reference(rows=0, kind=manifest.inputs.kind).to_json())
        return registry.register(builder, manifest, reason=f"imported from {source}")


def is_encoder(source: str) -> bool:
    """A built-in encoder, or a checkpoint folder whose config names no causal-LM architecture."""
    if source in BUILTIN_MODELS:
        return True
    config = Path(source).expanduser() / "config.json"
    if not config.is_file():
        return False
    architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    return not any(name.endswith("ForCausalLM") for name in architectures)


def _import_encoder(source: str, name: str, registry: Registry, *, max_length: int) -> Bundle:
    """An encoder becomes an ``embedding`` bundle: its pooled, L2-normalised sentence vectors."""
    entry = ARCHITECTURES.get(ENCODER)
    params = HFParams(checkpoint=source, output="embedding")
    tokenizer = PretrainedTextPreprocessor(source, max_length)
    tokenizer.locate()
    inputs = tokenizer.input_schema()
    model, final = entry.for_bundle(entry.build(inputs, 0, params), params)
    width = int(final.model_dump()["encoder_config"]["hidden_size"])
    manifest = BundleManifest(
        name=name,
        task="embedding",
        architecture=Architecture(name=ENCODER, params=final.model_dump(mode="json")),
        inputs=inputs,
        outputs=OutputSchema(tensors=TASKS.get("embedding")().output_tensors(width)),
        lineage=Lineage(data_source=source, code_version=code_version()),
    )
    return _register(registry, name, source, manifest, model, tokenizer, task="embedding")
