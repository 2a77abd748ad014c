"""The input-kind plugins (data/kinds) and the typed contract files (preprocess.json, reference.json): every
registered kind decodes what it gives back as instances, groups exactly its model inputs' positions, and its
state round-trips; the contract files load in every form written so far and name a field that does not fit."""

from __future__ import annotations

import json
from typing import get_args

import numpy as np
import pytest

from modelcycle.config import DataConfig, PreprocessConfig
from modelcycle.data import Dataset, load_dataset, make_preprocessor, preprocessor_from_state
from modelcycle.data.kinds import INPUT_KINDS, input_kind
from modelcycle.data.profile import profile_dataset
from modelcycle.data.reference import Reference
from modelcycle.data.state import PreprocessFile
from modelcycle.errors import BundleError, ConfigError, RequestError
from modelcycle.schema import DataKind
from modelcycle.testing import tiny_dataset

ROWS = 12


def _sample(kind: str) -> Dataset:
    """A few rows of a built-in dataset of each kind."""
    if kind == "tabular":
        return tiny_dataset(rows=40)
    source = {"image": "builtin:digits", "text": "builtin:rotten_tomatoes", "corpus": "builtin:hamlet"}[kind]
    dataset = load_dataset(DataConfig(source=source))
    return dataset.take(np.arange(200 if kind == "corpus" else 40))


def _rows(dataset: Dataset) -> Dataset:
    """The first rows (a corpus whole: its blocks need more than a few lines)."""
    return dataset if dataset.kind == "corpus" else dataset.take(np.arange(ROWS))


@pytest.fixture(scope="module", params=INPUT_KINDS.names())
def fitted(request: pytest.FixtureRequest) -> tuple[str, Dataset, object]:
    kind = str(request.param)
    dataset = _sample(kind)
    config = PreprocessConfig()
    return kind, dataset, make_preprocessor(kind, config).fit(dataset)


def test_every_data_kind_is_registered_once() -> None:
    assert INPUT_KINDS.names() == sorted(get_args(DataKind))
    state_kinds = [name for kind in INPUT_KINDS for name in input_kind(kind).state_kinds]
    assert len(state_kinds) == len(set(state_kinds)) == 6
    with pytest.raises(ConfigError, match=r"unknown input kind 'tabluar'.*did you mean 'tabular'"):
        input_kind("tabluar")


def test_instances_decode_to_the_same_tensors(fitted) -> None:
    """A dataset's rows given back as a caller's instances encode to the tensors of the dataset itself, on
    the decoded path and on the kind's own (tabular: faster) path alike."""
    name, dataset, preprocessor = fitted
    kind = input_kind(name)
    rows = _rows(dataset)
    schema = preprocessor.input_schema()
    assert schema.kind == name == kind.name
    instances = json.loads(json.dumps(kind.instances(rows)))  # what a JSON request carries
    if kind.attributed_through == "prompt":
        with pytest.raises(RequestError, match="takes prompts"):
            kind.encode(instances, schema, preprocessor, max_text_chars=10**6)
        assert not any(kind.accepts(instance, schema) for instance in instances)
        return
    assert all(kind.accepts(instance, schema) for instance in instances)
    expected = preprocessor.transform(rows)
    decoded = preprocessor.transform(kind.decode(instances, schema, preprocessor, max_text_chars=10**6))
    direct = kind.encode(instances, schema, preprocessor, max_text_chars=10**6)
    for tensors in (decoded, direct):
        assert list(tensors) == [spec.name for spec in schema.tensors]
        for key, array in expected.items():
            np.testing.assert_allclose(tensors[key], array, rtol=1e-6)


def test_feature_groups_cover_each_input_position(fitted) -> None:
    name, dataset, preprocessor = fitted
    kind = input_kind(name)
    tensors = preprocessor.transform(_rows(dataset))
    first = next(iter(tensors.values()))
    groups = kind.feature_groups(preprocessor, tuple(first.shape[1:]))
    assert groups.shape == first.shape[1:]
    assert groups.dtype == np.int64
    assert groups.min() == 0
    shaped = kind.attribution_shape(preprocessor, tensors, 0, np.ones(first.shape[1:]))
    if kind.attribution_form == "features":
        assert list(shaped) == dataset.features
        assert len(set(groups.tolist())) == len(dataset.features)
    elif kind.attribution_form == "pixels":
        assert np.asarray(shaped).shape == first.shape[-2:]
    else:
        assert len(shaped) == int((first[0] != preprocessor.pad_id()).sum())


def test_state_round_trips_through_the_contract(fitted) -> None:
    _, dataset, preprocessor = fitted
    stored = json.loads(json.dumps({"features": preprocessor.state(), "target": {"task": "classification"}}))
    contract = PreprocessFile.read(stored, "preprocess.json")
    restored = preprocessor_from_state(contract.features)
    rows = _rows(dataset)
    for key, array in preprocessor.transform(rows).items():
        np.testing.assert_array_equal(restored.transform(rows)[key], array)


def test_reference_round_trips_byte_for_byte(fitted) -> None:
    _, dataset, _ = fitted
    written = json.dumps(profile_dataset(dataset).to_json())
    assert json.dumps(Reference.read(json.loads(written), "reference.json").to_json()) == written


@pytest.mark.parametrize(
    "raw",
    [
        {"rows": 0, "features": {}},  # testing.tiny_bundle
        {"profile_version": 1, "rows": 0, "kind": "text", "features": {}},  # an imported model
    ],
)
def test_minimal_references_still_load(raw) -> None:
    assert Reference.read(raw, "reference.json").features == {}


def test_minimal_preprocess_files_still_load() -> None:
    raw = {"features": {"kind": "tabular"}, "target": {"task": "classification"}}  # testing.tiny_bundle
    contract = PreprocessFile.read(raw, "preprocess.json")
    assert contract.target.classes_ == []
    assert contract.features.params == {}


def test_a_damaged_file_names_the_file_and_the_field() -> None:
    reference = profile_dataset(tiny_dataset()).to_json()
    reference["features"]["x1"]["count"] = "many"
    with pytest.raises(BundleError, match=r"^b/reference.json: features\.x1\.numeric\.count: "):
        Reference.read(reference, "b/reference.json")
    with pytest.raises(BundleError, match=r"^b/preprocess.json: target: Field required"):
        PreprocessFile.read({"features": {"kind": "tabular"}}, "b/preprocess.json")
    with pytest.raises(BundleError, match=r"features.kind: unknown preprocessing 'audio'"):
        preprocessor_from_state({"kind": "audio"})
