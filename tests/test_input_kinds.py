"""The input-kind plugins (data/kinds) and the typed contract files (preprocess.json, reference.json): every
registered kind passes the contract checks of ``modelcycle.testing`` on a few rows of its own; the contract
files load in every form written so far and name a field that does not fit."""

from __future__ import annotations

import numpy as np
import pytest

from modelcycle.config import DataConfig
from modelcycle.data import Dataset, load_dataset, preprocessor_from_state
from modelcycle.data.kinds import INPUT_KINDS, input_kind
from modelcycle.data.profile import profile_dataset
from modelcycle.data.reference import Reference
from modelcycle.data.state import PreprocessFile
from modelcycle.errors import BundleError, ConfigError
from modelcycle.testing import check_input_kind, tiny_dataset

SOURCES = {"image": "builtin:digits", "text": "builtin:rotten_tomatoes", "corpus": "builtin:hamlet"}


def _sample(kind: str) -> Dataset:
    """A few rows of each kind (a corpus more: its blocks need more than a few lines)."""
    if kind == "tabular":
        return tiny_dataset(rows=12)
    dataset = load_dataset(DataConfig(source=SOURCES[kind]))
    return dataset.take(np.arange(200 if kind == "corpus" else 12))


def test_the_four_kinds_are_registered_and_restore_six_preprocessors() -> None:
    assert INPUT_KINDS.names() == ["corpus", "image", "tabular", "text"]
    state_kinds = [name for kind in INPUT_KINDS for name in input_kind(kind).state_kinds]
    assert len(state_kinds) == len(set(state_kinds)) == 6
    with pytest.raises(ConfigError, match=r"unknown input kind 'tabluar'.*did you mean 'tabular'"):
        input_kind("tabluar")


@pytest.mark.parametrize("kind", INPUT_KINDS.names())
def test_every_kind_passes_the_contract_checks(kind: str) -> None:
    preprocessor = check_input_kind(_sample(kind))
    assert preprocessor.input_schema().kind == kind


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
