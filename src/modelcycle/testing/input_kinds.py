"""Contract checks for an input kind (``modelcycle.data.kinds``), run over every registered one and by the
author of a new one: given a few rows of that kind, its tensors fit the schema it declares, fitting is
deterministic, one instance alone encodes as it does within a request, the rows given back as a caller's
instances decode and encode to the dataset's own tensors, stored instances are recognised, occlusion groups
and attribution shapes fit the model's inputs, and the fitted state and reference profile round-trip through
their contract files."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from modelcycle.config import PreprocessConfig
from modelcycle.data import Dataset, make_preprocessor, preprocessor_from_state
from modelcycle.data.kinds import input_kind
from modelcycle.data.preprocess import Preprocessor
from modelcycle.data.profile import profile_dataset
from modelcycle.data.reference import Reference
from modelcycle.data.state import PreprocessFile
from modelcycle.errors import RequestError

UNLIMITED_CHARACTERS = 10**6


def check_input_kind(dataset: Dataset, config: PreprocessConfig | None = None) -> Preprocessor:
    """Every check of ``dataset.kind`` on ``dataset`` (a few rows: a corpus needs enough text for a block);
    returns the preprocessor fitted on it. An AssertionError names the check that failed."""
    preprocessor = make_preprocessor(dataset.kind, config or PreprocessConfig()).fit(dataset)
    check_tensors_fit_schema(dataset, preprocessor)
    check_fit_is_deterministic(dataset, preprocessor, config or PreprocessConfig())
    check_row_alone_encodes_as_in_a_batch(dataset, preprocessor)
    check_instances_round_trip(dataset, preprocessor)
    check_feature_groups(dataset, preprocessor)
    check_state_round_trip(dataset, preprocessor)
    check_reference_round_trip(dataset)
    return preprocessor


def check_tensors_fit_schema(dataset: Dataset, preprocessor: Preprocessor) -> None:
    """The tensors come in the schema's order, with its dtypes and fixed sizes, one batch size for all."""
    schema = preprocessor.input_schema()
    tensors = preprocessor.transform(dataset)
    assert list(tensors) == [spec.name for spec in schema.tensors], f"tensors {list(tensors)} for {schema}"
    for spec in schema.tensors:
        array = tensors[spec.name]
        assert str(array.dtype) == spec.dtype, f"{spec.name}: {array.dtype}, the schema says {spec.dtype}"
        assert array.ndim == len(spec.shape), f"{spec.name}: shape {array.shape}, the schema {spec.shape}"
        for axis, (size, declared) in enumerate(zip(array.shape, spec.shape, strict=True)):
            assert declared in (-1, size), f"{spec.name}: axis {axis} is {size}, the schema {spec.shape}"
    assert len({array.shape[0] for array in tensors.values()}) == 1, "tensors of different batch sizes"


def check_fit_is_deterministic(
    dataset: Dataset, preprocessor: Preprocessor, config: PreprocessConfig
) -> None:
    """Fitted again on the same rows, the preprocessing learns the same state (no unseeded randomness)."""
    again = make_preprocessor(dataset.kind, config).fit(dataset)
    assert json.dumps(again.state(), sort_keys=True) == json.dumps(preprocessor.state(), sort_keys=True), (
        f"{dataset.kind}: two fits on the same rows learned different states"
    )


def check_row_alone_encodes_as_in_a_batch(dataset: Dataset, preprocessor: Preprocessor) -> None:
    """A request of one instance gets the tensors that instance gets within a request of all; a batch may
    pad a row further (with zeros: the pad id and the mask's off value), nothing else."""
    kind = input_kind(dataset.kind)
    if kind.attributed_through == "prompt":  # asked with prompts, not instances
        return
    schema = preprocessor.input_schema()
    instances: list[Any] = json.loads(json.dumps(kind.instances(dataset)))
    together = kind.encode(instances, schema, preprocessor, max_text_chars=UNLIMITED_CHARACTERS)
    for row, instance in enumerate(instances):
        alone = kind.encode([instance], schema, preprocessor, max_text_chars=UNLIMITED_CHARACTERS)
        for name, array in alone.items():
            within = together[name][row]
            head = tuple(slice(0, size) for size in array.shape[1:])
            np.testing.assert_allclose(array[0], within[head], rtol=1e-6, err_msg=f"{name} of row {row}")
            rest = within.copy()
            rest[head] = 0
            assert not rest.any(), f"{name} of row {row}: the batch adds more than zero padding"


def check_instances_round_trip(dataset: Dataset, preprocessor: Preprocessor) -> None:
    """The dataset's rows as a JSON request carries them encode to the tensors of the dataset itself, on the
    decoded path and on the kind's own (maybe faster) path alike; a kind asked with prompts refuses them."""
    kind = input_kind(dataset.kind)
    schema = preprocessor.input_schema()
    assert schema.kind == dataset.kind == kind.name, f"a {schema.kind} schema for {dataset.kind} data"
    instances: list[Any] = json.loads(json.dumps(kind.instances(dataset)))
    if kind.attributed_through == "prompt":
        try:
            kind.encode(instances, schema, preprocessor, max_text_chars=UNLIMITED_CHARACTERS)
        except RequestError:
            pass
        else:
            raise AssertionError(f"{kind.name}: instances were accepted by a kind asked with prompts")
        assert not any(kind.accepts(item, schema) for item in instances), "stored prompts taken as instances"
        return
    assert all(kind.accepts(item, schema) for item in instances), "its own instances are not recognised"
    expected = preprocessor.transform(dataset)
    decoded = kind.decode(instances, schema, preprocessor, max_text_chars=UNLIMITED_CHARACTERS)
    direct = kind.encode(instances, schema, preprocessor, max_text_chars=UNLIMITED_CHARACTERS)
    for tensors in (preprocessor.transform(decoded), direct):
        assert list(tensors) == [spec.name for spec in schema.tensors], f"tensors {list(tensors)}"
        for name, array in expected.items():
            np.testing.assert_allclose(tensors[name], array, rtol=1e-6, err_msg=name)


def check_feature_groups(dataset: Dataset, preprocessor: Preprocessor) -> None:
    """Occlusion groups are int64 ids shaped as one row of the first input; a row's attributions come back
    in the kind's form: one value per feature, rows × columns of pixels, or one pair per real token."""
    kind = input_kind(dataset.kind)
    first = next(iter(preprocessor.transform(dataset).values()))
    groups = kind.feature_groups(preprocessor, tuple(first.shape[1:]))
    assert groups.shape == first.shape[1:], f"groups {groups.shape} for rows {first.shape[1:]}"
    assert groups.dtype == np.int64, f"groups of {groups.dtype}"
    assert groups.min() == 0, "group ids start at 0"
    tensors = preprocessor.transform(dataset)
    shaped = kind.attribution_shape(preprocessor, tensors, 0, np.ones(first.shape[1:]))
    if kind.attribution_form == "features":
        assert list(shaped) == dataset.features, f"attributed {list(shaped)}"
        assert len(set(groups.tolist())) == len(dataset.features), "one group per feature"
    elif kind.attribution_form == "pixels":
        assert np.asarray(shaped).shape == first.shape[-2:], "one value per pixel"
    else:
        pad = getattr(preprocessor, "pad_id", lambda: 0)()
        assert len(shaped) == int((first[0] != pad).sum()), "one pair per real token"


def check_state_round_trip(dataset: Dataset, preprocessor: Preprocessor) -> None:
    """The fitted state, through preprocess.json's contract and back, preprocesses bit for bit the same."""
    stored = json.loads(json.dumps({"features": preprocessor.state(), "target": {"task": "classification"}}))
    restored = preprocessor_from_state(PreprocessFile.read(stored, "preprocess.json").features)
    again = restored.transform(dataset)
    for name, array in preprocessor.transform(dataset).items():
        np.testing.assert_array_equal(again[name], array, err_msg=name)


def check_reference_round_trip(dataset: Dataset) -> None:
    """The kind's reference profile is written and read back through reference.json's contract unchanged."""
    written = json.dumps(profile_dataset(dataset).to_json())
    assert json.dumps(Reference.read(json.loads(written), "reference.json").to_json()) == written
