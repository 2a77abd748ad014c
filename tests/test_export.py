"""ONNX export: parity with torch on real validation rows, dynamic batch and sequence axes, the variant it
writes, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from modelcycle.config import load_config
from modelcycle.errors import ExportError
from modelcycle.export import export_onnx
from modelcycle.inference import predict
from modelcycle.pipeline import train
from modelcycle.predictor import Predictor, model_tensors, training_split
from modelcycle.registry import Registry
from tests.conftest import EXAMPLES, TINY_GPT
from tests.test_sequence_models import keyword_reviews


def onnx_outputs(path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {item.name: inputs[item.name] for item in session.get_inputs()})[0]


@pytest.mark.slow  # measured: 14 CPU-s on its own (training and an ONNX export inside the test)
def test_cnn_export_matches_torch_and_takes_any_batch(registry: Registry, cli) -> None:
    ref = train(load_config(EXAMPLES / "digits-cnn.yaml", ["train.epochs=2"]), registry).ref
    report = json.loads(cli("export", ref, "--json").stdout)
    assert report["variant"] == "onnx-fp32"
    assert report["max_abs_diff"] <= 1e-4
    assert report["argmax_agreement"] == 1.0
    bundle = registry.open(ref)
    variant = bundle.variant("onnx-fp32")
    assert variant.manifest.runtime == "onnxruntime"
    assert variant.manifest.metrics["parity_max_abs_diff"] == report["max_abs_diff"]
    predictor = Predictor.load(bundle)
    test = model_tensors(predictor.preprocessor, predictor.encoder, training_split(bundle, "test")).inputs
    for rows in (1, 7, 200):  # batches the export never saw
        batch = {name: array[:rows] for name, array in test.items()}
        np.testing.assert_allclose(
            onnx_outputs(variant.path / "model.onnx", batch), predict(predictor.model, batch), atol=1e-4
        )
    again = cli("export", ref)
    assert again.exit_code == 9
    assert "exists already" in again.stderr


@pytest.mark.slow  # measured: 5.5 CPU-s on its own (training and an ONNX export inside the test)
def test_text_transformer_export_has_a_dynamic_sequence(registry: Registry, tmp_path: Path) -> None:
    overrides = [
        f"data.source=csv:{keyword_reviews(tmp_path / 'reviews.csv', rows=200)}",
        "data.target=label",
        "model.arch=transformer",
        "model.params={embed_dim: 16, num_heads: 2, num_layers: 1}",
        "train.epochs=1",
    ]
    bundle = registry.open(train(load_config(EXAMPLES / "breast-cancer-mlp.yaml", overrides), registry).ref)
    result = export_onnx(bundle)
    assert result.max_abs_diff <= 1e-4
    predictor = Predictor.load(bundle)
    longer = predictor.preprocessor.encode(["the movie was great and the story " * 3])  # longer than any seen
    np.testing.assert_allclose(
        onnx_outputs(result.path / "model.onnx", longer), predict(predictor.model, longer), atol=1e-4
    )


@pytest.mark.slow  # measured: 4.4 CPU-s on its own (training and an ONNX export inside the test)
def test_gpt_exports_next_token_logits(registry: Registry) -> None:
    bundle = registry.open(train(load_config(EXAMPLES / "tiny-gpt.yaml", TINY_GPT), registry).ref)
    result = export_onnx(bundle)
    assert result.max_abs_diff <= 1e-4
    assert result.argmax_agreement == 1.0


def test_a_model_without_training_data_is_refused(registry: Registry, cli) -> None:
    assert cli("import", "builtin:minilm", "--name", "minilm").exit_code == 0
    with pytest.raises(ExportError, match="no training data to check parity on"):
        export_onnx(registry.open("minilm"))


def test_an_export_failure_names_the_root_cause() -> None:
    from modelcycle.export.onnx import _root_cause

    inner = TypeError("aten::weird_op has no ONNX translation\nmore details")
    outer = RuntimeError("\x1b[96mFailed to export\x1b[0m step 1/3")
    outer.__cause__ = inner
    assert _root_cause(outer) == "aten::weird_op has no ONNX translation"
