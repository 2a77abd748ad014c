from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelcycle.config import PipelineConfig, apply_override, load_config
from modelcycle.errors import ConfigError
from tests.conftest import EXAMPLES

VALID = """
name: digits-cnn
seed: 0
data:  {source: "builtin:digits", target: label, split: {valid: 0.15, test: 0.15}}
model: {arch: cnn, params: {channels: [32, 64], dropout: 0.1}}
train: {epochs: 15, batch_size: 64, optimizer: {name: adamw, lr: 0.003}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return path


def test_issue_example_loads_with_its_values(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))
    assert config.name == "digits-cnn"
    assert config.data.split.valid == 0.15
    assert config.model.params == {"channels": [32, 64], "dropout": 0.1}
    assert config.train.optimizer.lr == 0.003
    assert len(config.config_hash()) == 64


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda path: path.name)
def test_every_example_validates(example: Path) -> None:
    from modelcycle.pipeline import validate

    validate(load_config(example))


def test_unknown_key_names_dotted_path_and_suggests(tmp_path: Path) -> None:
    text = VALID.replace("lr: 0.003", "lrr: 0.003")
    with pytest.raises(ConfigError, match=r"train\.optimizer\.lrr: unknown key \(did you mean 'lr'\?\)"):
        load_config(write(tmp_path, text))


def test_all_errors_are_reported_at_once(tmp_path: Path) -> None:
    text = (
        VALID.replace("lr: 0.003", "lr: -1")
        .replace("batch_size: 64", "batch_size: 0")
        .replace("seed: 0", "sed: 0")
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    message = str(caught.value)
    assert "3 errors" in message
    assert "train.optimizer.lr" in message
    assert "train.batch_size" in message
    assert "sed: unknown key (did you mean 'seed'?)" in message


def test_yaml_syntax_error_reports_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ndata:\n  source: [unclosed\nmodel: {arch: mlp}\n")
    with pytest.raises(ConfigError, match=r"pipeline\.yaml:4:\d+: YAML syntax error"):
        load_config(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_set_nested_values_with_yaml_types(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, VALID),
        ["train.optimizer.lr=1e-3", "model.params.channels=[8, 16]", "data.split.stratify=false"],
    )
    assert config.train.optimizer.lr == pytest.approx(1e-3)
    assert config.model.params["channels"] == [8, 16]
    assert config.data.split.stratify is False


def test_override_of_unknown_key_is_refused_like_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train\.epoch: unknown key \(did you mean 'epochs'\?\)"):
        load_config(write(tmp_path, VALID), ["train.epoch=3"])


@pytest.mark.parametrize("override", ["novalue", "=3", ".a=1", "a..b=2"])
def test_malformed_override(override: str) -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_override({}, override)


def test_override_through_a_scalar_is_refused() -> None:
    with pytest.raises(ConfigError, match="'seed' is not a section"):
        apply_override({"seed": 0}, "seed.x=1")


@pytest.mark.parametrize(
    "overrides", [["data.split.valid=0.5", "data.split.test=0.45"], ["data.split.valid=0.85"]]
)
def test_split_must_leave_rows_to_train(tmp_path: Path, overrides: list[str]) -> None:
    text = VALID.replace("split: {valid: 0.15, test: 0.15}", "split: {}")
    with pytest.raises(ConfigError, match=r"data\.split: valid \+ test = [\d.]+ must leave at least 10%"):
        load_config(write(tmp_path, text), overrides)


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_seed_range(tmp_path: Path, seed: str) -> None:
    with pytest.raises(ConfigError, match=r"seed: Input should be"):
        load_config(write(tmp_path, VALID), [f"seed={seed}"])


def test_non_utf8_config_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text \(byte 9 is 0xe9\)"):
        load_config(path)


def test_override_words_that_yaml_reads_as_booleans_stay_strings() -> None:
    raw: dict = {}
    for override in ("data.target=yes", "data.split.stratify=false", "a.b=on", "a.c=True"):
        apply_override(raw, override)
    assert raw == {"data": {"target": "yes", "split": {"stratify": False}}, "a": {"b": "on", "c": True}}


def test_schema_lists_sections() -> None:
    schema = PipelineConfig.model_json_schema()
    assert {"name", "seed", "data", "model", "train"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def test_cli_validate_and_schema(cli, tmp_path: Path) -> None:
    ok = cli("config", "validate", str(write(tmp_path, VALID)), "--json")
    assert ok.exit_code == 0
    assert json.loads(ok.stdout)["config"]["model"]["arch"] == "cnn"
    schema = cli("config", "schema")
    assert schema.exit_code == 0
    assert "properties" in json.loads(schema.stdout)


def test_cli_config_error_is_one_line_without_traceback(cli, tmp_path: Path) -> None:
    result = cli("config", "validate", str(write(tmp_path, VALID.replace("arch: cnn", "arch: cnnn"))))
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr
    assert "model.arch: unknown architecture 'cnnn' (did you mean 'cnn'?)" in result.stderr


def test_cli_set_flag(cli, tmp_path: Path) -> None:
    result = cli("config", "validate", str(write(tmp_path, VALID)), "--set", "train.epochs=2", "--json")
    assert json.loads(result.stdout)["config"]["train"]["epochs"] == 2
