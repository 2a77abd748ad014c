from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from modelcycle.config import DataConfig, SplitConfig
from modelcycle.data import Dataset, load_dataset, preprocessor_from_state, split_dataset
from modelcycle.data.imbalance import balanced_class_weights, oversample
from modelcycle.data.preprocess import (
    ImagePreprocessor,
    TabularPreprocessor,
    TargetEncoder,
    target_encoder_from_state,
)
from modelcycle.data.profile import profile_dataset
from modelcycle.data.text import TextPreprocessor
from modelcycle.testing import tiny_dataset


def test_tabular_matches_scikit_learn() -> None:
    data = tiny_dataset(rows=80)
    train, other = data.take(np.arange(60)), data.take(np.arange(60, 80))
    ours = TabularPreprocessor().fit(train)
    theirs = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), ["x1", "x2"]),
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["colour"]),
        ]
    ).fit(train.frame)
    expected = theirs.transform(other.frame)
    got = ours.transform(other)["features"]
    # sklearn orders categories alphabetically, we by frequency; compare the one-hot block as a set of columns
    np.testing.assert_allclose(got[:, :2], expected[:, :2], atol=1e-6)
    names = ours.output_names()
    for position, colour in enumerate(sorted(["red", "green", "blue"])):
        np.testing.assert_array_equal(got[:, names.index(f"colour={colour}")], expected[:, 2 + position])
    assert names[-1] == "colour=<unknown>"


def test_unknown_and_missing_categories_go_to_buckets() -> None:
    data = tiny_dataset()
    preprocessor = TabularPreprocessor(max_categories=2).fit(data)
    unseen = data.take(np.arange(3))
    unseen.frame.loc[:, "colour"] = ["purple", None, preprocessor.categories_["colour"][0]]
    one_hot = preprocessor.transform(unseen)["features"][:, 2:]
    assert one_hot.tolist() == [[0, 0, 1], [0, 0, 1], [1, 0, 0]]
    ordinal = (
        TabularPreprocessor(categorical="ordinal", max_categories=2).fit(data).transform(unseen)["features"]
    )
    assert ordinal[:, 2].tolist() == [0.0, 0.0, 1.0]


def test_statistics_come_from_the_rows_it_was_fitted_on() -> None:
    data = tiny_dataset(rows=60)
    data.frame.loc[30:, "x1"] += 100.0
    fitted = TabularPreprocessor().fit(data.take(np.arange(30)))
    assert fitted.numeric_["x1"]["mean"] == pytest.approx(data.frame["x1"][:30].mean())
    assert fitted.numeric_["x1"]["std"] == pytest.approx(data.frame["x1"][:30].std(ddof=0))


@pytest.mark.parametrize("factory", [TabularPreprocessor, lambda: TabularPreprocessor(categorical="ordinal")])
def test_state_round_trips_through_json(factory) -> None:
    data = tiny_dataset()
    fitted = factory().fit(data)
    restored = preprocessor_from_state(json.loads(json.dumps(fitted.state())))
    np.testing.assert_array_equal(restored.transform(data)["features"], fitted.transform(data)["features"])
    assert restored.input_schema() == fitted.input_schema()


@pytest.mark.parametrize("categorical", ["onehot", "ordinal"])
def test_request_rows_transform_exactly_like_the_frame(categorical: str) -> None:
    """Serving transforms a request's rows without a DataFrame: bit for bit what training's path gives."""
    data = tiny_dataset(rows=60)
    fitted = preprocessor_from_state(
        json.loads(
            json.dumps(TabularPreprocessor(categorical=categorical, max_categories=2).fit(data).state())
        )
    )
    rows = data.frame[data.features].head(8).to_dict(orient="records")
    rows[1] |= {"x1": None, "colour": None}  # imputed; the missing bucket
    rows[2] |= {"x2": 3, "colour": "purple"}  # an integer; an unknown category
    rows[3] |= {"colour": 7}  # a category given as a number
    frame = pd.DataFrame(rows).astype({"x1": np.float64, "x2": np.float64, "colour": object})
    expected = fitted.transform(Dataset("request", "tabular", None, frame, None, data.feature_types))
    got = fitted.transform_rows(rows)["features"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected["features"])
    assert not np.isnan(got).any()


def test_image_standardisation_per_channel() -> None:
    digits = load_dataset(DataConfig(source="builtin:digits"))
    fitted = ImagePreprocessor().fit(digits)
    images = fitted.transform(digits)["image"]
    assert images.shape == (1797, 1, 8, 8)
    assert abs(float(images.mean())) < 1e-4
    assert abs(float(images.std()) - 1.0) < 1e-3
    restored = preprocessor_from_state(json.loads(json.dumps(fitted.state())))
    np.testing.assert_array_equal(restored.transform(digits)["image"], images)
    assert fitted.input_schema().tensors[0].shape == [-1, 1, 8, 8]


def test_text_vocabulary_and_ids() -> None:
    frame = pd.DataFrame({"text": ["The film was great!", "the film was dull", "GREAT cast"], "y": [1, 0, 1]})
    from modelcycle.data import Dataset

    data = Dataset("t", "text", "classification", frame, "y", {"text": "text"}, label_names=["0", "1"])
    fitted = TextPreprocessor(max_length=4, min_frequency=2).fit(data)
    assert fitted.vocabulary_[:2] == ["[PAD]", "[UNK]"]
    assert set(fitted.vocabulary_[2:]) == {"the", "film", "was", "great"}
    encoded = fitted.encode(["great film, unseen words here", "the"])
    index = {token: i for i, token in enumerate(fitted.vocabulary_)}
    assert encoded["input_ids"].tolist() == [[index["great"], index["film"], 1, 1], [index["the"], 0, 0, 0]]
    assert encoded["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 0, 0, 0]]
    chars = TextPreprocessor(tokenizer="char").fit(data)
    assert chars.tokenize("ab") == ["a", "b"]
    restored = preprocessor_from_state(json.loads(json.dumps(fitted.state())))
    np.testing.assert_array_equal(restored.transform(data)["input_ids"], fitted.transform(data)["input_ids"])


def test_target_encoder_classes_and_regression_scaling() -> None:
    data = tiny_dataset()
    encoder = TargetEncoder("classification").fit(data)
    assert encoder.classes_ == ["no", "yes"]
    assert set(encoder.transform(data).tolist()) == {0, 1}
    diabetes = load_dataset(DataConfig(source="builtin:diabetes"))
    scaler = TargetEncoder("regression").fit(diabetes)
    scaled = scaler.transform(diabetes)
    assert abs(float(scaled.mean())) < 1e-5
    restored = target_encoder_from_state(json.loads(json.dumps(scaler.state())))
    np.testing.assert_allclose(restored.inverse(scaled), diabetes.y, rtol=1e-5)


def test_unseen_label_is_named() -> None:
    data = tiny_dataset()
    encoder = TargetEncoder("classification").fit(data)
    data.frame.loc[0, "label"] = "maybe"
    with pytest.raises(Exception, match=r"labels \['maybe'\] were not seen in training"):
        encoder.transform(data)


def test_stratified_split_is_deterministic_disjoint_and_balanced() -> None:
    digits = load_dataset(DataConfig(source="builtin:digits"))
    first = split_dataset(digits, SplitConfig(valid=0.15, test=0.15), seed=0)
    again = split_dataset(digits, SplitConfig(valid=0.15, test=0.15), seed=0)
    other = split_dataset(digits, SplitConfig(valid=0.15, test=0.15), seed=1)
    assert all(
        np.array_equal(a, b) for a, b in zip(first.parts().values(), again.parts().values(), strict=True)
    )
    assert not np.array_equal(first.test, other.test)
    everything = np.concatenate(list(first.parts().values()))
    assert sorted(everything.tolist()) == list(range(1797))
    assert len(first.test) == pytest.approx(0.15 * 1797, abs=2)
    shares = np.bincount(digits.y[first.test], minlength=10) / len(first.test)
    assert np.all(np.abs(shares - 0.1) < 0.02)


def test_corpus_split_is_contiguous() -> None:
    hamlet = load_dataset(DataConfig(source="builtin:hamlet"))
    split = split_dataset(hamlet, SplitConfig(valid=0.1, test=0.1), seed=3)
    assert split.train[-1] + 1 == split.valid[0]
    assert split.valid[-1] + 1 == split.test[0]
    assert split.test[-1] == len(hamlet) - 1


def test_imbalance_helpers() -> None:
    labels = np.array([0] * 8 + [1] * 2)
    weights = balanced_class_weights(labels, num_classes=3)
    assert weights == pytest.approx([10 / (2 * 8), 10 / (2 * 2), 1.0])
    rows = oversample(np.arange(10), labels, seed=0)
    assert np.bincount(labels[rows]).tolist() == [8, 8]
    assert np.array_equal(rows, oversample(np.arange(10), labels, seed=0))


def test_reference_profile_is_small_and_exact() -> None:
    cancer = load_dataset(DataConfig(source="builtin:breast_cancer"))
    profile = profile_dataset(cancer).to_json()
    assert len(json.dumps(profile)) < 100_000
    radius = profile["features"]["mean radius"]
    values = cancer.frame["mean radius"].to_numpy()
    assert radius["percentiles"][50] == pytest.approx(np.median(values), rel=1e-5)
    assert sum(radius["histogram"]["counts"]) == 569
    assert profile["target"]["frequencies"] == {"benign": 357, "malignant": 212}
    text = profile_dataset(load_dataset(DataConfig(source="builtin:rotten_tomatoes"))).to_json()
    assert text["features"]["text"]["type"] == "text"
    assert len(text["features"]["text"]["top_tokens"]) == 50
    image = profile_dataset(load_dataset(DataConfig(source="builtin:digits"))).to_json()
    assert image["features"]["image"]["shape"] == [1, 8, 8]


def test_pretrained_tokenizer_is_copied_into_the_bundle(tmp_path) -> None:
    from modelcycle.bundle import BundleBuilder
    from modelcycle.config import PreprocessConfig, TextConfig
    from modelcycle.data import make_preprocessor
    from modelcycle.testing import tiny_manifest, tiny_state_dict

    reviews = load_dataset(DataConfig(source="builtin:rotten_tomatoes")).take(np.arange(50))
    config = PreprocessConfig(text=TextConfig(tokenizer="builtin:minilm", max_length=6))
    fitted = make_preprocessor("text", config).fit(reviews)
    encoded = fitted.encode(["Hello world", "a film that was far too long to watch"])
    # all-MiniLM-L6-v2's WordPiece ids: [CLS]=101, hello=7592, world=2088, [SEP]=102, [PAD]=0
    assert encoded["input_ids"][0].tolist() == [101, 7592, 2088, 102, 0, 0]
    assert encoded["attention_mask"][0].tolist() == [1, 1, 1, 1, 0, 0]
    assert encoded["input_ids"].shape == (2, 6)
    with BundleBuilder(tmp_path) as builder:
        builder.write_weights(tiny_state_dict())
        fitted.copy_files(builder.path)
        bundle = builder.publish(tmp_path / "b", tiny_manifest())
    assert "tokenizer/tokenizer.json" in bundle.manifest.files
    restored = preprocessor_from_state(json.loads(json.dumps(fitted.state())), base_dir=bundle.path)
    np.testing.assert_array_equal(
        restored.transform(reviews)["input_ids"], fitted.transform(reviews)["input_ids"]
    )


def test_unknown_tokenizer_is_named(tmp_path) -> None:
    from modelcycle.config import PreprocessConfig, TextConfig
    from modelcycle.data import make_preprocessor
    from modelcycle.errors import ConfigError

    reviews = load_dataset(DataConfig(source="builtin:rotten_tomatoes")).take(np.arange(10))
    config = PreprocessConfig(text=TextConfig(tokenizer=str(tmp_path / "nowhere")))
    with pytest.raises(
        ConfigError, match=r"tokenizer: '.*nowhere' is neither a built-in model nor a local folder"
    ):
        make_preprocessor("text", config).fit(reviews)


def test_a_chat_template_that_refuses_the_messages_is_the_requests_error(tmp_path: Path) -> None:
    """Hugging Face templates call raise_exception (roles that do not alternate, say): a 400 naming the
    messages, not a 500 from an undefined function; the template is compiled once."""
    from tokenizers import Tokenizer, models

    from modelcycle.data.corpus import PretrainedCorpusPreprocessor
    from modelcycle.errors import RequestError

    Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")).save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "chat_template.jinja").write_text(
        "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('roles must alternate user/assistant') }}{% endif %}"
        "<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    )
    preprocessor = PretrainedCorpusPreprocessor(str(tmp_path))
    preprocessor.fit(None)  # type: ignore[arg-type]  # finds the tokenizer folder; reads no data
    good = [{"role": "user", "content": "hi"}]
    assert preprocessor.chat_prompt(good) == "<user>hi<assistant>"
    refused = r"messages: .*refused them \(roles must alternate user/assistant\)"
    with pytest.raises(RequestError, match=refused):
        preprocessor.chat_prompt([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    (tmp_path / "chat_template.jinja").write_text("changed after loading")
    assert preprocessor.chat_prompt(good) == "<user>hi<assistant>"  # compiled once
