"""modelcycle bench: every form of a version timed side by side in its own process, the figures stored in
variant.json and variants/bench.json, and serving's ``auto`` chosen from them by measurement alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from modelcycle.bench import bench, choose_variant
from modelcycle.bench.rows import BenchRows, resize_sequence
from modelcycle.bench.timing import MIN_LATENCY_CALLS, batch_tensors, latency_ms, throughput
from modelcycle.bundle import Bundle, VariantManifest
from modelcycle.config import load_config
from modelcycle.errors import ModelcycleError
from modelcycle.export import export_onnx
from modelcycle.optimize import quantize
from modelcycle.pipeline import train
from modelcycle.registry import Registry
from modelcycle.testing.factories import tiny_bundle
from tests.conftest import EXAMPLES, TINY_GPT, train_into

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def add_variant(bundle: Bundle, name: str, verdict: str, runtime: str = "torch") -> None:
    """A variant with a placeholder file: enough for the rules that read manifests, not loadable."""
    manifest = VariantManifest(name=name, method="test", runtime=runtime, verdict=verdict)
    with bundle.add_variant(manifest) as folder:
        (folder / "placeholder.txt").write_text("not a model\n", encoding="utf-8")


def write_bench_json(bundle: Bundle, throughputs: dict[str, dict[str, float]]) -> None:
    results = [{"variant": name, "throughput": rates} for name, rates in throughputs.items()]
    (bundle.path / "variants" / "bench.json").write_text(json.dumps({"results": results}), encoding="utf-8")


@pytest.mark.slow  # measured: 21 CPU-s on its own (training, an ONNX export and a bench inside the test)
def test_bench_measures_base_and_onnx_side_by_side(registry: Registry, cli) -> None:
    bundle = registry.open(train(load_config(EXAMPLES / "digits-cnn.yaml", ["train.epochs=1"]), registry).ref)
    export_onnx(bundle)
    result = cli("bench", bundle.ref, "--batch-sizes", "1,8", "--seconds", "0.2")
    assert result.exit_code == 0, result.stderr
    folder = bundle.path / "variants"
    report = json.loads((folder / "bench.json").read_text(encoding="utf-8"))
    assert report["ref"] == bundle.ref
    assert report["data"] == "valid split"
    assert report["batch_sizes"] == [1, 8]
    assert report["primary_metric"] == "accuracy"
    assert report["machine"]["usable_cores"] >= 1
    assert report["machine"]["torch"]
    entries = {entry["variant"]: entry for entry in report["results"]}
    assert list(entries) == ["base", "onnx-fp32"]
    assert (entries["base"]["verdict"], entries["onnx-fp32"]["verdict"]) == (None, "passed")
    assert entries["onnx-fp32"]["runtime"] == "onnxruntime"
    for entry in entries.values():
        latency = entry["latency_ms"]
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
        assert latency["calls"] >= MIN_LATENCY_CALLS
        assert set(entry["throughput"]) == {"1", "8"}
        assert all(rate > 0 for rate in entry["throughput"].values())
        assert entry["peak_rss_mb"] > 0
        assert entry["size_bytes"] > 0
        assert 0 <= entry["metrics"]["accuracy"] <= 1

    assert Path(report["chart"]) == folder / "bench.png"
    assert (folder / "bench.png").read_bytes().startswith(PNG_MAGIC)
    assert str(folder / "bench.png") in result.stdout.replace("\n", "")
    onnx = entries["onnx-fp32"]
    variant = Bundle(bundle.path).variant("onnx-fp32").manifest  # still verifies: only variant.json changed
    assert variant.latency_ms == {f"{key}_batch1": onnx["latency_ms"][key] for key in ("p50", "p95", "p99")}
    assert variant.metrics["throughput_batch1"] == onnx["throughput"]["1"]
    assert variant.metrics["throughput_batch8"] == onnx["throughput"]["8"]
    assert variant.metrics["peak_rss_mb"] == onnx["peak_rss_mb"]
    assert "parity_max_abs_diff" in variant.metrics  # merged, not replaced

    for size in ("1", "8"):
        faster = max(entries.values(), key=lambda entry: entry["throughput"][size])["variant"]
        assert choose_variant(bundle, int(size)) == faster == report["auto"][size]
    assert f"auto picks {report['auto']['1']} at batch 1" in result.stdout


def test_auto_takes_the_fastest_measured_passed_form(registry: Registry) -> None:
    bundle = tiny_bundle(registry)
    add_variant(bundle, "onnx-fp32", "passed", runtime="onnxruntime")
    add_variant(bundle, "int8", "rejected")
    add_variant(bundle, "fp16", "unchecked")
    assert choose_variant(bundle) == "base"  # nothing measured yet

    write_bench_json(
        bundle,
        {
            "base": {"1": 100.0, "8": 500.0},
            "onnx-fp32": {"1": 400.0, "8": 300.0},
            "int8": {"1": 9000.0, "8": 9000.0},
            "fp16": {"1": 8000.0, "8": 8000.0},
            "removed-since": {"1": 1e6, "8": 1e6},
        },
    )
    assert choose_variant(bundle, 1) == "onnx-fp32"
    assert choose_variant(bundle, 8) == "base"
    assert choose_variant(bundle, 32) == "base"  # that batch size was never measured

    write_bench_json(bundle, {"base": {"1": 100.0}})
    assert choose_variant(bundle) == "base"  # onnx-fp32 went unmeasured in the latest run: no assumption
    write_bench_json(bundle, {"onnx-fp32": {"1": 400.0}})
    assert choose_variant(bundle) == "base"  # without the base's own figure there is nothing to compare

    (bundle.path / "variants" / "bench.json").write_text("{not json", encoding="utf-8")
    assert choose_variant(bundle) == "base"


def test_unknown_variant_lists_the_known_ones(registry: Registry, cli) -> None:
    bundle = tiny_bundle(registry)
    add_variant(bundle, "onnx-fp32", "passed", runtime="onnxruntime")
    result = cli("bench", "tiny", "--variants", "onnx-fp32,nope")
    assert result.exit_code == 5
    assert "no variant 'nope'" in result.stderr
    assert "onnx-fp32" in result.stderr
    assert not (bundle.path / "variants" / "bench.json").exists()


def test_bad_options_are_config_errors(registry: Registry, cli) -> None:
    tiny_bundle(registry)
    assert cli("bench", "tiny", "--batch-sizes", "1,eight").exit_code == 2
    assert cli("bench", "tiny", "--batch-sizes", "0").exit_code == 2
    assert cli("bench", "tiny", "--seconds", "0").exit_code == 2


def test_a_failing_worker_names_the_variant_and_its_last_words(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tiny_bundle(registry)  # its architecture is not registered: the worker cannot load it
    rows = BenchRows({"features": np.zeros((1, 4), dtype=np.float32)}, split=None)
    monkeypatch.setattr("modelcycle.bench.run.bench_rows", lambda *args, **kwargs: rows)
    with pytest.raises(ModelcycleError, match=r"benchmarking variant 'base' failed: .*'linear'"):
        bench(bundle, batch_sizes=[1], seconds=0.01)
    assert not (bundle.path / "variants" / "bench.json").exists()


def test_latency_and_throughput_are_bounded_in_calls_and_time() -> None:
    model = nn.Linear(4, 2).eval()
    one = {"features": np.zeros((1, 4), dtype=np.float32)}
    timed = latency_ms(model, one, warmup=0, max_seconds=0.0)
    assert timed["calls"] == MIN_LATENCY_CALLS  # the floor holds even with no time at all
    assert 0 < timed["p50"] <= timed["p95"] <= timed["p99"]
    assert latency_ms(model, one, warmup=0, max_calls=5, max_seconds=10.0)["calls"] == 5

    three = {"features": np.arange(12, dtype=np.float32).reshape(3, 4)}
    (batch,) = batch_tensors(three, 8)
    assert batch.shape == (8, 4)
    assert batch[3].tolist() == batch[0].tolist()  # real rows repeated, not padding
    assert throughput(model, three, 8, max_seconds=0.01) > 0


def test_sequence_resize_cuts_or_repeats_each_rows_own_tokens() -> None:
    inputs = {
        "input_ids": np.array([[5, 6, 7], [8, 9, 0]], dtype=np.int64),
        "attention_mask": np.array([[1, 1, 1], [1, 1, 0]], dtype=np.int64),
        "features": np.ones((2, 3), dtype=np.float32),
    }
    short = resize_sequence(inputs, 2)
    assert short["input_ids"].tolist() == [[5, 6], [8, 9]]
    assert short["features"].shape == (2, 3)  # not tokens: left alone
    long = resize_sequence(inputs, 7)
    assert long["input_ids"][1].tolist() == [8, 9, 0, 8, 9, 0, 8]
    assert long["attention_mask"][1].tolist() == [1, 1, 0, 1, 1, 0, 1]  # aligned with the ids


@pytest.mark.slow
def test_an_imported_encoder_runs_on_sample_text_at_a_chosen_length(registry: Registry, cli) -> None:
    assert cli("import", "builtin:minilm", "--name", "minilm").exit_code == 0
    args = ("--batch-sizes", "1,4", "--sequence-length", "32", "--seconds", "0.05", "--json")
    result = cli("bench", "minilm", *args)
    assert result.exit_code == 0, result.stderr
    bundle = registry.open("minilm")
    report = json.loads(result.stdout)
    assert report == json.loads((bundle.path / "variants" / "bench.json").read_text(encoding="utf-8"))
    assert report["data"] == "sample text"
    assert report["sequence_length"] == 32
    (base,) = report["results"]
    assert base["metrics"] is None  # no training data to measure on
    assert base["throughput"]["4"] > 0
    assert choose_variant(bundle) == "base"


@pytest.mark.slow  # trains tiny-gpt, makes a variant and runs two bench workers
def test_a_language_models_generation_is_timed_per_variant(registry: Registry, cli) -> None:
    train_into(registry.home, ("tiny-gpt.yaml", TINY_GPT))
    bundle = registry.open("tiny-gpt")
    (made,) = quantize(bundle, "bf16")
    result = cli("bench", "tiny-gpt", "--batch-sizes", "1,4,64", "--seconds", "0.2")
    assert result.exit_code == 0, result.stderr
    assert "generation in tokens/s" in result.stdout
    report = json.loads((bundle.path / "variants" / "bench.json").read_text(encoding="utf-8"))
    speeds = {entry["variant"]: entry["tokens_per_second"] for entry in report["results"]}
    assert set(speeds) == {"base", made.variant}
    for speed in speeds.values():  # up to 32 sequences decoding together
        assert sorted(speed) == ["1", "4"]
        assert min(speed.values()) > 0
    assert "tokens_per_second_batch4" in bundle.variant(made.variant).manifest.metrics


def test_auto_compares_a_language_models_generated_tokens_not_rows(registry: Registry) -> None:
    train_into(registry.home, ("tiny-gpt.yaml", TINY_GPT))
    bundle = registry.open("tiny-gpt")
    add_variant(bundle, "bf16", "passed")
    results = [
        {"variant": "base", "throughput": {"1": 100.0}, "tokens_per_second": {"1": 10.0}},
        {"variant": "bf16", "throughput": {"1": 50.0}, "tokens_per_second": {"1": 20.0}},
    ]
    (bundle.path / "variants" / "bench.json").write_text(json.dumps({"results": results}), encoding="utf-8")
    assert choose_variant(bundle) == "bf16"  # slower per forward pass, faster at generating
