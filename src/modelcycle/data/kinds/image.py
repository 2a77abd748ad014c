"""Images: one float tensor (channels, height, width) per instance, sent as nested lists of pixels;
explained per pixel (channels summed), drift through mean intensity and the model's embeddings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modelcycle.config import PreprocessConfig
from modelcycle.data.dataset import Dataset
from modelcycle.data.kinds.base import INPUT_KINDS, AttributedThrough, AttributionForm, Decoded, Tensors
from modelcycle.data.preprocess import ImagePreprocessor, Preprocessor
from modelcycle.data.reference import FeatureProfile, image_profile
from modelcycle.errors import DataError, RequestError
from modelcycle.schema import InputSchema

PATCHES_PER_SIDE = 8  # occlusion switches square patches of an eighth of the shorter side


class ImageKind(Decoded):
    name = "image"
    embedded = True
    attributed_through: AttributedThrough = "inputs"
    attribution_form: AttributionForm = "pixels"
    state_kinds: Mapping[str, type[Preprocessor]] = {"image": ImagePreprocessor}

    def preprocessor(self, config: PreprocessConfig) -> Preprocessor:
        return ImagePreprocessor()

    def decode(
        self, instances: list[Any], schema: InputSchema, preprocessor: Preprocessor, *, max_text_chars: int
    ) -> Dataset:
        """Nested lists of the schema's (channels, height, width); a single-channel image may drop the
        channel axis."""
        shape = schema.tensors[0].shape[1:]
        images = []
        for index, instance in enumerate(instances):
            try:
                pixels = np.asarray(instance, dtype=np.float32)
            except (TypeError, ValueError):
                raise RequestError(f"instances[{index}]: nested lists of numbers are required") from None
            if pixels.ndim == 2 and shape[0] == 1:
                pixels = pixels[None]
            if list(pixels.shape) != shape:
                raise RequestError(f"instances[{index}]: shape {list(pixels.shape)}, the model takes {shape}")
            if not np.isfinite(pixels).all():
                raise RequestError(f"instances[{index}]: NaN or Inf is not a valid pixel")
            images.append(pixels)
        frame = pd.DataFrame({"image": [f"request[{index}]" for index in range(len(images))]})
        return Dataset("request", "image", None, frame, None, {"image": "image"}, images=np.stack(images))

    def accepts(self, instance: Any, schema: InputSchema) -> bool:
        return isinstance(instance, list)

    def instances(self, dataset: Dataset) -> list[Any]:
        return [image.tolist() for image in _images(dataset)]

    def profile(self, dataset: Dataset) -> dict[str, FeatureProfile]:
        return {name: image_profile(dataset.images) for name in dataset.features}

    def drift_columns(self, dataset: Dataset) -> dict[str, Sequence[Any]]:
        images = list(dataset.images) if dataset.images is not None else []
        return {name: images for name in dataset.features}

    def attribution_shape(
        self, preprocessor: Preprocessor, inputs: Tensors, row: int, values: np.ndarray
    ) -> Any:
        """Rows × columns, the channels summed."""
        return values.sum(axis=0).tolist()

    def feature_groups(self, preprocessor: Preprocessor, shape: tuple[int, ...]) -> np.ndarray:
        """Square patches, the same in every channel."""
        height, width = shape[-2:]
        patch = max(1, min(height, width) // PATCHES_PER_SIDE)
        rows = np.arange(height) // patch
        columns = np.arange(width) // patch
        grid = rows[:, None] * ((width + patch - 1) // patch) + columns[None, :]
        return np.broadcast_to(grid, shape).astype(np.int64)


def _images(dataset: Dataset) -> np.ndarray:
    if dataset.images is None:
        raise DataError(f"{dataset.source}: expected image data")
    return dataset.images


INPUT_KINDS.register("image")(ImageKind())
