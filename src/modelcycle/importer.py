"""``import_model(source)``: a pretrained causal language model (``builtin:smollm2``, a GGUF file, or a local
Hugging Face checkpoint folder) registered as a bundle without training — de-quantized weights as
safetensors, its tokenizer copied, schema and task declared — so that a model trained elsewhere enters the
same loop (evaluate, optimize, serve, monitor, explain, update)."""

from __future__ import annotations

from modelcycle.bundle import Architecture, Bundle, BundleManifest, Lineage, OutputSchema
from modelcycle.bundle.manifest import code_version
from modelcycle.data import target_encoder_from_state
from modelcycle.data.corpus import PretrainedCorpusPreprocessor
from modelcycle.errors import ConfigError
from modelcycle.models import ARCHITECTURES
from modelcycle.models.causal_lm import CausalLMParams
from modelcycle.packages import BUILTIN_MODELS
from modelcycle.registry import Registry
from modelcycle.tasks import TASKS

CAUSAL_LM = "hf_causal_lm"
NO_TARGET = {"task": "language_modeling", "classes_": [], "mean_": 0.0, "std_": 1.0}


def import_model(source: str, name: str, registry: Registry, *, context_length: int = 512) -> Bundle:
    """Register ``source`` as the next version of ``name``. ``context_length`` is the block size used when
    the bundle is later evaluated or fine-tuned on a corpus."""
    if source in BUILTIN_MODELS:
        raise ConfigError(
            f"import: {source} is an encoder without a task head; fine-tune it with "
            "model.arch: hf (examples/text-minilm.yaml)"
        )
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
    with registry.builder(name) as builder:
        builder.write_weights(model.state_dict())
        tokenizer.copy_files(builder.path)
        builder.write_json(
            "preprocess.json",
            {"features": tokenizer.state(), "target": target_encoder_from_state(NO_TARGET).state()},
        )
        builder.write_json(
            "reference.json", {"profile_version": 1, "rows": 0, "kind": "corpus", "features": {}}
        )
        return registry.register(builder, manifest, reason=f"imported from {source}")
