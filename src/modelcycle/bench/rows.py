"""The rows a benchmark feeds every variant, prepared once so that all of them run on the same bytes: real
validation rows (the test split when validation is empty), or, for a bundle without training data (an
imported model), a fixed English sample through the bundle's own tokenizer. Token inputs can be resized to a
sequence length, to measure how a text model scales with it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelcycle.bundle import Bundle
from modelcycle.data import Dataset
from modelcycle.data.corpus import CorpusBlocks
from modelcycle.data.text import TextEncoder
from modelcycle.errors import BundleError
from modelcycle.predictor import Predictor, held_out_split, model_tensors

SAMPLE_TEXTS = (
    "The quarterly report shows that revenue grew faster than expected in every region.",
    "A quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
    "Please restart the server after installing the update, then check that the logs are clean.",
    "The museum's new exhibition brings together paintings that have never been shown side by side.",
    "Heavy rain is forecast for the weekend, so the match may be moved to the indoor arena.",
    "She ordered the soup of the day and a glass of water, and read her book until it arrived.",
    "Researchers found that the treatment reduced symptoms in most patients within two weeks.",
    "The train to the airport leaves every fifteen minutes from the second platform.",
)


@dataclass(frozen=True)
class BenchRows:
    """``inputs`` in the model's argument order; ``split`` names the training split they came from (the
    one variants' metrics are measured on), or is None for the sample text (no metrics then)."""

    inputs: dict[str, np.ndarray]
    split: str | None


def is_tokens(array: np.ndarray) -> bool:
    return array.ndim == 2 and array.dtype == np.int64


def resize_sequence(inputs: dict[str, np.ndarray], length: int) -> dict[str, np.ndarray]:
    """Token inputs (2-D int64) cut or stretched to ``length`` positions, a row stretched by repeating its
    own tokens; every token input takes the same positions, so ids and attention masks stay aligned. Other
    inputs are left alone."""
    return {
        name: array[:, np.arange(length) % array.shape[1]] if is_tokens(array) else array
        for name, array in inputs.items()
    }


def bench_rows(bundle: Bundle, *, rows: int, sequence_length: int | None = None) -> BenchRows:
    """Up to ``rows`` rows of model inputs for benchmarking ``bundle`` (fewer are repeated when timing)."""
    predictor = Predictor.load(bundle)
    found = _validation(bundle)
    if found is None:
        inputs, split = _sample_inputs(predictor), None
    else:
        split, dataset = found
        inputs = model_tensors(predictor.preprocessor, predictor.encoder, dataset).inputs
    ordered = {spec.name: inputs[spec.name][:rows] for spec in bundle.manifest.inputs.tensors}
    if sequence_length is not None:
        ordered = resize_sequence(ordered, sequence_length)
    return BenchRows(ordered, split)


def _validation(bundle: Bundle) -> tuple[str, Dataset] | None:
    try:
        return held_out_split(bundle)
    except BundleError:  # no training config: an imported model
        return None


def _sample_inputs(predictor: Predictor) -> dict[str, np.ndarray]:
    """The sample text as the model sees it: one stream of tokens for a language model, one row per sentence
    for a text encoder."""
    bundle, preprocessor = predictor.bundle, predictor.preprocessor
    if isinstance(preprocessor, CorpusBlocks):
        ids = preprocessor.stream(" ".join(SAMPLE_TEXTS))[: preprocessor.max_length]
        return {"input_ids": ids[None, :]}
    if not isinstance(preprocessor, TextEncoder):
        raise BundleError(
            f"{bundle.ref}: no training data to benchmark with",
            hint="benchmark a version trained or fine-tuned by modelcycle, which records its data",
        )
    return preprocessor.encode(list(SAMPLE_TEXTS))
