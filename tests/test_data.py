from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from modelcycle.config import DataConfig
from modelcycle.data import fingerprint, load_dataset, summarize
from modelcycle.errors import ConfigError, DataError


def table(tmp_path: Path, frame: pd.DataFrame, suffix: str = "csv") -> Path:
    path = tmp_path / f"data.{suffix}"
    if suffix == "csv":
        frame.to_csv(path, index=False)
    elif suffix == "parquet":
        frame.to_parquet(path)
    else:
        frame.to_json(path, orient="records", lines=True)
    return path


FRAME = pd.DataFrame(
    {
        "age": [31, 45, 22, 60, 38, 27],
        "city": ["Paris", "Lyon", "Paris", None, "Nice", "Lyon"],
        "income": [3.1, None, 2.2, 5.0, 4.4, 2.9],
        "bought": ["yes", "no", "yes", "no", "yes", "no"],
    }
)


@pytest.mark.parametrize("suffix", ["csv", "parquet", "jsonl"])
def test_table_sources_load_with_types(tmp_path: Path, suffix: str) -> None:
    path = table(tmp_path, FRAME, suffix)
    dataset = load_dataset(DataConfig(source=f"{suffix}:{path}", target="bought"))
    assert len(dataset) == 6
    assert dataset.kind == "tabular"
    assert dataset.task == "classification"
    assert dataset.feature_types == {"age": "numeric", "city": "categorical", "income": "numeric"}
    assert dataset.label_names == ["no", "yes"]


def test_bare_path_gets_scheme_from_suffix(tmp_path: Path) -> None:
    path = table(tmp_path, FRAME)
    assert len(load_dataset(DataConfig(source=str(path), target="bought"))) == 6


def test_regression_target_is_inferred(tmp_path: Path) -> None:
    frame = FRAME.assign(price=[10.5, 20.25, 13.0, 40.75, 11.5, 17.0])
    dataset = load_dataset(DataConfig(source=f"csv:{table(tmp_path, frame)}", target="price"))
    assert dataset.task == "regression"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nothing\.csv: no such file"):
        load_dataset(DataConfig(source=f"csv:{tmp_path / 'nothing.csv'}", target="y"))


def test_absent_target_column_is_named_with_suggestion(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"target column 'boughtt' not found \(did you mean 'bought'\?\)"):
        load_dataset(DataConfig(source=f"csv:{table(tmp_path, FRAME)}", target="boughtt"))


def test_text_in_numeric_column_names_row_and_value(tmp_path: Path) -> None:
    frame = FRAME.astype({"age": object})
    frame.loc[3, "age"] = "sixty"
    with pytest.raises(DataError, match=r"column 'age' is numeric but row 4 holds 'sixty'"):
        load_dataset(DataConfig(source=f"csv:{table(tmp_path, frame)}", target="bought"))


def test_declared_numeric_column_is_checked(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"column 'city' is numeric but row 1 holds 'Paris'"):
        load_dataset(
            DataConfig(
                source=f"csv:{table(tmp_path, FRAME)}", target="bought", column_types={"city": "numeric"}
            )
        )


@pytest.mark.parametrize("content", ["", "a,b,label\n"])
def test_empty_dataset(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(content)
    with pytest.raises(DataError, match="the dataset is empty"):
        load_dataset(DataConfig(source=f"csv:{path}", target="label"))


def test_single_class_target(tmp_path: Path) -> None:
    frame = FRAME.assign(bought="yes")
    with pytest.raises(DataError, match=r"target 'bought' has a single class \('yes'\)"):
        load_dataset(DataConfig(source=f"csv:{table(tmp_path, frame)}", target="bought"))


def test_bad_jsonl_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1, "y": 0}\n{"a": 2, "y": \n')
    with pytest.raises(DataError, match=r"rows\.jsonl:2: invalid JSON"):
        load_dataset(DataConfig(source=f"jsonl:{path}", target="y"))


def test_unknown_scheme_and_builtin(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown scheme 'ftp'"):
        load_dataset(DataConfig(source="ftp:x", target="y"))
    with pytest.raises(ConfigError, match=r"unknown built-in dataset 'digit' \(did you mean 'digits'\?\)"):
        load_dataset(DataConfig(source="builtin:digit"))


def test_free_text_column_makes_a_text_dataset(tmp_path: Path) -> None:
    reviews = [f"review number {i} was {'great fun' if i % 2 else 'a dull slog'} overall" for i in range(20)]
    frame = pd.DataFrame({"review": reviews, "label": ["pos" if i % 2 else "neg" for i in range(20)]})
    dataset = load_dataset(DataConfig(source=f"csv:{table(tmp_path, frame)}", target="label"))
    assert dataset.kind == "text"
    assert dataset.feature_types == {"review": "text"}


def test_image_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for index in range(3):
            pixels = rng.integers(0, 255, size=(6, 5, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "imgs" / label / f"{index}.png")
    (tmp_path / "imgs" / "dog" / "notes.txt").write_text("ignored")
    dataset = load_dataset(DataConfig(source=f"images:{tmp_path / 'imgs'}"))
    assert dataset.kind == "image"
    assert dataset.images.shape == (6, 3, 6, 5)
    assert dataset.label_names == ["cat", "dog"]
    gray = load_dataset(
        DataConfig.model_validate(
            {
                "source": f"images:{tmp_path / 'imgs'}",
                "preprocess": {"image": {"size": [4, 4], "grayscale": True}},
            }
        )
    )
    assert gray.images.shape == (6, 1, 4, 4)


def test_broken_image_is_named(tmp_path: Path) -> None:
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    (tmp_path / "imgs" / "a" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"x\.png: not a readable image"):
        load_dataset(DataConfig(source=f"images:{tmp_path / 'imgs'}"))


@pytest.mark.parametrize(
    ("name", "rows", "kind", "task"),
    [
        ("digits", 1797, "image", "classification"),
        ("breast_cancer", 569, "tabular", "classification"),
        ("wine", 178, "tabular", "classification"),
        ("iris", 150, "tabular", "classification"),
        ("diabetes", 442, "tabular", "regression"),
        ("rotten_tomatoes", 12808, "text", "classification"),
        ("hamlet", 5382, "corpus", "language_modeling"),
    ],
)
def test_builtins_load_offline(name: str, rows: int, kind: str, task: str) -> None:
    dataset = load_dataset(DataConfig(source=f"builtin:{name}"))
    assert (len(dataset), dataset.kind, dataset.task) == (rows, kind, task)


def test_builtin_with_wrong_target_is_refused() -> None:
    with pytest.raises(DataError, match="builtin:iris has target 'target', not 'species'"):
        load_dataset(DataConfig(source="builtin:iris", target="species"))


def test_max_rows_keeps_the_first_rows() -> None:
    assert len(load_dataset(DataConfig(source="builtin:iris", max_rows=120))) == 120


def test_inspect_digits_cli(cli) -> None:
    result = cli("data", "inspect", "builtin:digits", "--json")
    assert result.exit_code == 0
    summary = json.loads(result.stdout)
    assert summary["rows"] == 1797
    assert len(summary["class_counts"]) == 10
    assert summary["balanced"] is True
    assert sum(summary["class_counts"].values()) == 1797


def test_inspect_reports_missing_counts(cli, tmp_path: Path) -> None:
    result = cli("data", "inspect", f"csv:{table(tmp_path, FRAME)}", "--target", "bought", "--json")
    columns = {column["name"]: column for column in json.loads(result.stdout)["columns"]}
    assert columns["city"]["missing"] == 1
    assert columns["income"]["missing"] == 1
    assert columns["income"]["type"] == "numeric"


def test_inspect_error_is_one_line(cli, tmp_path: Path) -> None:
    result = cli("data", "inspect", f"csv:{tmp_path / 'gone.csv'}")
    assert result.exit_code == 3
    assert "gone.csv: no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_summary_of_regression_target() -> None:
    summary = summarize(load_dataset(DataConfig(source="builtin:diabetes")))
    assert summary.target_stats["min"] == 25.0
    assert summary.class_counts == {}


def test_fingerprint_depends_on_content_only(tmp_path: Path) -> None:
    a = load_dataset(DataConfig(source=f"csv:{table(tmp_path, FRAME)}", target="bought"))
    (tmp_path / "copy").mkdir()
    b = load_dataset(DataConfig(source=f"csv:{table(tmp_path / 'copy', FRAME)}", target="bought"))
    changed = FRAME.copy()
    changed.loc[0, "income"] = 3.2
    c = load_dataset(DataConfig(source=f"csv:{table(tmp_path, changed)}", target="bought"))
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(c)


def test_target_cannot_be_a_feature(tmp_path: Path) -> None:
    config = DataConfig(source=f"csv:{table(tmp_path, FRAME)}", target="bought", features=["age", "bought"])
    with pytest.raises(DataError, match="the target 'bought' cannot also be a feature"):
        load_dataset(config)


def test_table_with_only_the_target(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no feature columns besides the target 'bought'"):
        load_dataset(DataConfig(source=f"csv:{table(tmp_path, FRAME[['bought']])}", target="bought"))


def test_nested_jsonl_values_are_named(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1, "y": 0}\n{"a": {"deep": 2}, "y": 1}\n')
    with pytest.raises(DataError, match=r"column 'a' holds a nested value in row 2 \(dict\)"):
        load_dataset(DataConfig(source=f"jsonl:{path}", target="y"))


def test_numeric_error_names_the_row_in_the_file_after_dropped_targets(tmp_path: Path, cli) -> None:
    frame = pd.DataFrame({"x": ["1", "2", "3", "4", "oops", "6"], "y": [None, "a", None, "b", "a", "b"]})
    path = table(tmp_path, frame)
    with pytest.raises(DataError, match=r"column 'x' is numeric but row 5 holds 'oops'"):
        load_dataset(DataConfig(source=f"csv:{path}", target="y"))
    frame.loc[4, "x"] = "5"
    dataset = load_dataset(DataConfig(source=f"csv:{table(tmp_path, frame)}", target="y"))
    assert (len(dataset), dataset.dropped_rows) == (4, 2)
    summary = json.loads(
        cli("data", "inspect", f"csv:{tmp_path / 'data.csv'}", "--target", "y", "--json").stdout
    )
    assert summary["dropped_rows"] == 2


def test_labels_compare_by_text(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(f'{{"x": {i}, "y": {label}}}\n' for i, label in enumerate([1, '"1"', 2, 2, 1])))
    assert load_dataset(DataConfig(source=f"jsonl:{path}", target="y")).label_names == ["1", "2"]


def test_max_rows_samples_and_keeps_only_present_labels(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": range(90), "y": ["a"] * 40 + ["b"] * 40 + ["c"] * 10})
    path = table(tmp_path, frame)
    sample = load_dataset(DataConfig(source=f"csv:{path}", target="y", max_rows=30), seed=1)
    assert len(sample) == 30
    assert sample.frame["x"].is_monotonic_increasing
    assert sample.frame["x"].max() > 30, "a random sample, not the first rows"
    assert sample.label_names == sorted(set(sample.frame["y"]))
    again = load_dataset(DataConfig(source=f"csv:{path}", target="y", max_rows=30), seed=1)
    assert sample.frame.equals(again.frame)
    first = load_dataset(DataConfig(source=f"csv:{path}", target="y", max_rows=20, features=["x"]), seed=3)
    assert set(first.label_names) == set(first.frame["y"])


def test_empty_class_folder_is_no_class(tmp_path: Path) -> None:
    for label in ("cat", "dog", "empty"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
    for label in ("cat", "dog"):
        Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "imgs" / label / "0.png")
    assert load_dataset(DataConfig(source=f"images:{tmp_path / 'imgs'}")).label_names == ["cat", "dog"]


def test_builtin_features_are_selected_and_types_fixed() -> None:
    iris = load_dataset(DataConfig(source="builtin:iris", features=["petal length (cm)"]))
    assert iris.features == ["petal length (cm)"]
    assert list(iris.frame.columns) == ["petal length (cm)", "target"]
    with pytest.raises(DataError, match=r"has no column 'petal'"):
        load_dataset(DataConfig(source="builtin:iris", features=["petal"]))
    with pytest.raises(DataError, match="have fixed types"):
        load_dataset(DataConfig(source="builtin:iris", column_types={"petal length (cm)": "categorical"}))


def test_unknown_suffix_asks_for_a_scheme(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="cannot tell the format from the name") as caught:
        load_dataset(DataConfig(source=str(tmp_path / "notes.txt"), target="y"))
    assert "csv:" in caught.value.hint


def test_markup_like_names_are_printed_as_text(cli, tmp_path: Path) -> None:
    frame = pd.DataFrame({"[/x]": [1, 2, 3, 4], "[bold]y": ["a", "b", "a", "b"]})
    result = cli("data", "inspect", f"csv:{table(tmp_path, frame)}", "--target", "[bold]y")
    assert result.exit_code == 0, result.stderr
    assert "[/x]" in result.stdout


@pytest.mark.parametrize(("written", "shown"), [("inf", "inf"), ("-inf", "-inf"), ("1e400", "inf")])
def test_an_infinite_number_is_a_data_error_naming_its_column_and_row(tmp_path, written, shown):
    lines = ["size,weight,bought", "1,2.5,yes", "2,3.5,", f"3,{written},yes", "4,1.0,no", ",2.0,yes"]
    path = tmp_path / "shop.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"column 'weight', data row 3: {shown} is not a finite number"):
        load_dataset(DataConfig(source=f"csv:{path}", target="bought"))
    path.write_text("\n".join(lines).replace(written, "9", 1) + "\n")  # and the empty cell is fine
    assert len(load_dataset(DataConfig(source=f"csv:{path}", target="bought"))) == 4  # row 2 has no target
