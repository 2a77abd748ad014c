"""Optimization: quantization (torch and ONNX Runtime, dynamic and static, fp16 / bf16), pruning,
distillation, the shared gate, and the refusals. Each variant is loaded back and must compute what was
measured."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from sklearn.datasets import load_breast_cancer

from modelcycle.bundle import Bundle
from modelcycle.config import load_config
from modelcycle.inference import predict
from modelcycle.optimize import Gate, PruneSpec, prune_model, quantize
from modelcycle.optimize.distill import Distilled
from modelcycle.pipeline import train
from modelcycle.predictor import Predictor, model_tensors, training_split
from modelcycle.registry import Registry
from modelcycle.runtime import cpu, load_model, load_predictor
from modelcycle.runtime.cpu import cpu_features, int8_scheme, saturates_here
from modelcycle.tasks import TASKS
from tests.conftest import EXAMPLES
from tests.test_sequence_models import keyword_reviews

MLP = EXAMPLES / "breast-cancer-mlp.yaml"


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One registry for the whole module: each test writes variants of its own names into one trained MLP,
    so it is trained once."""
    return tmp_path_factory.mktemp("optimize-home")


@pytest.fixture
def home(shared_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MODELCYCLE_HOME", str(shared_home))
    return shared_home


@pytest.fixture(scope="module")
def mlp(shared_home: Path) -> Bundle:
    registry = Registry(shared_home)
    try:
        result = train(load_config(MLP, ["train.epochs=30", "model.params.hidden=[32, 16]"]), registry)
        assert result is not None
        return registry.open(result.ref)
    finally:
        registry.close()


def validation_inputs(bundle: Bundle) -> dict[str, np.ndarray]:
    predictor = Predictor.load(bundle)
    return model_tensors(predictor.preprocessor, predictor.encoder, training_split(bundle, "valid")).inputs


def variant_json(bundle: Bundle, name: str) -> dict:
    return json.loads((bundle.path / "variants" / name / "variant.json").read_text())


def test_the_gate_measures_drops_in_the_metrics_direction() -> None:
    assert Gate(0.01).judge("accuracy", 0.90, 0.895).passed
    assert not Gate(0.01).judge("accuracy", 0.90, 0.88).passed
    assert Gate(0.01).judge("accuracy", 0.90, 0.95).delta == pytest.approx(0.05)
    assert not Gate(0.01).judge("perplexity", 7.0, 7.5).passed  # lower is better
    assert Gate(0.1, relative=True).judge("perplexity", 7.0, 7.5).passed  # 7 % worse
    assert Gate(0.1, relative=True).judge("rmse", 10.0, 10.9).drop == pytest.approx(0.09)


def test_dynamic_int8_writes_a_torch_and_an_onnx_variant_that_load_as_measured(mlp: Bundle, cli) -> None:
    # 85 validation rows: one flipped row is 1.2 points, so this gate allows a few
    result = cli("optimize", mlp.ref, "--quantize", "dynamic-int8", "--max-accuracy-drop", "0.05", "--json")
    assert result.exit_code == 0, result.stderr
    reports = {item["variant"]: item for item in json.loads(result.stdout)}
    assert set(reports) == {"int8-dynamic", "onnx-int8"}
    assert {"int8-dynamic", "onnx-fp32", "onnx-int8"} <= set(mlp.variant_names())  # exported first
    inputs = validation_inputs(mlp)
    base = predict(load_model(mlp), inputs)
    for name, report in reports.items():
        manifest = variant_json(mlp, name)
        assert manifest["verdict"] == report["verdict"] == "passed"
        assert manifest["size_bytes"] == report["size_bytes"] > 0
        assert manifest["latency_ms"]["p50_batch1"] <= manifest["latency_ms"]["p99_batch1"]
        assert manifest["params"]["gate"] == {"metric": "accuracy", "max_drop": 0.05, "relative": False}
        assert manifest["accuracy_delta"] == pytest.approx(report["value"] - report["base_value"])
        # the loaded variant computes what the gate measured, and stays close to fp32
        measured = load_predictor(mlp, name).measure(training_split(mlp, "valid"))
        assert measured["accuracy"] == pytest.approx(manifest["metrics"]["accuracy"])
        outputs = predict(load_model(mlp, name), inputs)
        assert np.abs(outputs - base).max() < 0.05 * np.abs(base).max()
        assert np.mean(outputs.argmax(1) == base.argmax(1)) >= 0.97
    # ONNX Runtime's int8 weights were chosen for this CPU, and variant.json says so
    onnx_params = variant_json(mlp, "onnx-int8")["params"]
    assert onnx_params["weight_type"] == "int8"
    assert onnx_params["cpu_features"] == cpu_features()
    assert onnx_params["reduce_range"] == int8_scheme(cpu_features()).reduce_range
    with safe_open(str(mlp.path / "variants/int8-dynamic/weights.safetensors"), framework="pt") as stored:
        keys = set(stored.keys())
        assert stored.get_tensor("layers.1.weight_int8").dtype == torch.int8
    assert not any(key.endswith(".weight") for key in keys)  # no fp32 Linear weight left
    # int8 weights with a float64 scale and an int64 zero point per output channel: small layers gain least
    assert reports["int8-dynamic"]["size_bytes"] < 0.6 * reports["int8-dynamic"]["base_size_bytes"]

    again = cli("optimize", mlp.ref, "--quantize", "dynamic-int8", "--variant", "onnx-int8")
    assert again.exit_code == 2
    assert "variant onnx-int8 is already quantized" in again.stderr


X86 = "x86_64"  # the scheme is chosen for a CPU of this kind whatever machine runs the test


def test_int8_weights_use_seven_bits_unless_the_cpu_sums_int8_products_exactly() -> None:
    # ONNX Runtime's u8s8 kernels saturate an int16 pair sum without VNNI / AMX (255 * 127 * 2 > 32767)
    for flags in ([], ["avx2"], ["avx2", "avx512f"], ["avx2", "avx512f", "avx512_bf16"]):
        scheme = int8_scheme(flags, machine=X86)
        assert (scheme.weight_type, scheme.reduce_range) == ("int8", True)
        assert scheme.params() == {"weight_type": "int8", "reduce_range": True, "cpu_features": flags}
    for flags in (["avx2", "avx_vnni"], ["avx2", "avx512f", "avx512_vnni"], ["amx_int8"]):
        assert not int8_scheme(flags, machine=X86).reduce_range
    full = {"weight_type": "int8", "reduce_range": False}
    assert saturates_here(full, ["avx2", "avx512f"], machine=X86)
    assert not saturates_here(full, ["avx2", "avx512_vnni"], machine=X86)
    assert not saturates_here({**full, "reduce_range": True}, ["avx2"], machine=X86)
    # variants made before reduce_range was recorded
    assert saturates_here({"weight_type": "int8"}, ["avx2"], machine=X86)
    assert not saturates_here({"opset": 18}, ["avx2"], machine=X86)  # not an int8 variant
    # Arm's int8 dot products accumulate in 32 bits: no flags to read, nothing to saturate
    assert not int8_scheme([], machine="aarch64").reduce_range
    assert not saturates_here(full, [], machine="arm64")
    assert int8_scheme([], machine=X86).reduce_range  # an x86 CPU whose flags are unknown: 7-bit


def fake_cpu(monkeypatch: pytest.MonkeyPatch, path: Path, flags: str) -> None:
    path.write_text(f"processor\t: 0\nmodel name\t: Fake CPU\nflags\t\t: fpu sse2 {flags}\n")
    monkeypatch.setattr(cpu, "CPUINFO", path)


def cpu_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "modelcycle.runtime.cpu"]


@pytest.mark.slow  # measured: 15.5 CPU-s on its own (training, export, quantization inside the test)
def test_onnx_int8_is_made_for_the_cpu_it_will_run_on_and_warns_when_run_elsewhere(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    result = train(load_config(MLP, ["train.epochs=30", "model.params.hidden=[32, 16]"]), registry)
    assert result is not None
    bundle = registry.open(result.ref)
    # made for an AVX2-only CPU: 7-bit weights, which stay close to fp32 on every CPU
    (made,) = quantize(bundle, "dynamic-int8", runtime="onnxruntime", cpu_flags=["avx2"], gate=Gate(0.05))
    assert made.verdict == "passed"
    params = variant_json(bundle, "onnx-int8")["params"]
    assert (params["reduce_range"], params["cpu_features"]) == (True, ["avx2"])
    inputs = validation_inputs(bundle)
    base = predict(load_model(bundle), inputs)
    outputs = predict(load_model(bundle, "onnx-int8"), inputs)
    assert np.abs(outputs - base).max() < 0.05 * np.abs(base).max()
    # made for a VNNI CPU: full-range weights, which warn when loaded on a CPU without VNNI
    quantize(bundle, "static-int8", cpu_flags=["avx2", "avx512_vnni"], gate=Gate(1.0))
    assert variant_json(bundle, "onnx-int8-static")["params"]["reduce_range"] is False
    fake_cpu(monkeypatch, tmp_path / "cpuinfo", "avx2 fma")
    assert cpu_features() == ["avx2"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="modelcycle.runtime.cpu"):
        load_model(bundle, "onnx-int8")
        assert not cpu_warnings(caplog)  # 7-bit weights do not saturate
        load_model(bundle, "onnx-int8-static")
    (warning,) = cpu_warnings(caplog)
    assert "onnx-int8-static" in warning
    assert "avx2, avx512_vnni" in warning
    caplog.clear()
    fake_cpu(monkeypatch, tmp_path / "cpuinfo", "avx2 avx512f avx512_vnni")
    with caplog.at_level(logging.WARNING, logger="modelcycle.runtime.cpu"):
        load_model(bundle, "onnx-int8-static")
    assert not cpu_warnings(caplog)


def test_fp16_and_bf16_halve_the_weights_and_keep_accuracy(mlp: Bundle) -> None:
    for method, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        (result,) = quantize(mlp, method)
        assert result.verdict == "passed"
        assert result.size_bytes < 0.6 * result.base_size_bytes
        state = mlp.variant(method).path / "weights.safetensors"
        with safe_open(str(state), framework="pt") as stored:
            dtypes = {stored.get_tensor(key).dtype for key in stored.keys()}  # noqa: SIM118 (not a dict)
        assert dtypes == {dtype}
        assert predict(load_model(mlp, method), validation_inputs(mlp)).dtype == np.float32


def test_static_int8_calibrates_on_unlabelled_rows_and_refuses_an_empty_set(
    mlp: Bundle, cli, tmp_path: Path
) -> None:
    features = load_breast_cancer(as_frame=True).frame.drop(columns="target").head(100)
    features.to_csv(tmp_path / "calibration.csv", index=False)
    features.head(0).to_csv(tmp_path / "empty.csv", index=False)
    empty = cli(
        "optimize", mlp.ref, "--quantize", "static-int8", "--calibration", str(tmp_path / "empty.csv")
    )
    assert empty.exit_code == 3
    assert "empty.csv" in empty.stderr
    assert "onnx-int8-static" not in mlp.variant_names()
    (result,) = quantize(mlp, "static-int8", calibration=f"csv:{tmp_path / 'calibration.csv'}")
    params = variant_json(mlp, "onnx-int8-static")["params"]
    assert params["calibration_rows"] == 100
    assert params["format"] == "QDQ"
    assert result.value >= result.base_value - 0.03


def test_l1_pruning_is_permanent_exact_and_fine_tuned_through_the_gate(mlp: Bundle) -> None:
    result = prune_model(mlp, PruneSpec.parse("l1-unstructured:0.5"), finetune_epochs=3, gate=Gate(0.05))
    assert result.variant == "pruned-l1-50"
    assert result.verdict == "passed"
    assert result.extra["sparsity"] == pytest.approx(0.5, abs=1e-3)
    state = mlp.variant("pruned-l1-50").path / "weights.safetensors"
    with safe_open(str(state), framework="pt") as stored:
        keys = list(stored.keys())
        weights = [stored.get_tensor(key) for key in keys if key.endswith("weight")]
    assert not any(key.endswith(("_orig", "_mask")) for key in keys)
    zeros = sum(int((weight == 0).sum()) for weight in weights) / sum(weight.numel() for weight in weights)
    assert zeros == pytest.approx(0.5, abs=1e-3)
    model = load_model(mlp, "pruned-l1-50")
    assert not any(module._forward_pre_hooks for module in model.modules())  # no pruning hooks left


def test_structured_pruning_removes_whole_neurons_but_never_an_output(mlp: Bundle) -> None:
    prune_model(mlp, PruneSpec.parse("structured:0.25"))
    model = load_model(mlp, "pruned-structured-25")
    linears = [module for module in model.modules() if isinstance(module, torch.nn.Linear)]
    for hidden in linears[:-1]:
        dead = (hidden.weight == 0).all(dim=1)
        assert int(dead.sum()) == round(0.25 * hidden.out_features)
        assert torch.all(hidden.bias[dead] == 0)
    assert not (linears[-1].weight == 0).all(dim=1).any()


def test_a_failing_candidate_is_kept_and_marked_rejected(mlp: Bundle, cli) -> None:
    result = cli("optimize", mlp.ref, "--prune", "l1-unstructured:0.97", "--max-accuracy-drop", "0", "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["verdict"] == variant_json(mlp, "pruned-l1-97")["verdict"] == "rejected"
    assert report["value"] < report["base_value"]
    bad = cli("optimize", mlp.ref, "--prune", "l1-unstructured:1.5")
    assert bad.exit_code == 2
    assert "--prune" in bad.stderr
    neither = cli("optimize", mlp.ref)
    assert neither.exit_code == 2
    assert "exactly one of" in neither.stderr


@pytest.mark.slow  # measured: 5.6 CPU-s on its own (training inside the test)
def test_lstm_layers_quantize_and_reload_identically(registry: Registry, tmp_path: Path) -> None:
    overrides = [
        f"data.source=csv:{keyword_reviews(tmp_path / 'reviews.csv', rows=300)}",
        "data.target=label",
        "model.arch=rnn",
        "model.params={cell: lstm, embed_dim: 16, hidden_size: 16}",
        "train.epochs=2",
    ]
    bundle = registry.open(train(load_config(MLP, overrides), registry).ref)
    (result, *_) = quantize(bundle, "dynamic-int8", runtime="torch", gate=Gate(1.0))
    assert result.params["modules"] == ["LSTM", "Linear"]
    first, second = load_model(bundle, "int8-dynamic"), load_model(bundle, "int8-dynamic")
    inputs = validation_inputs(bundle)
    assert any(isinstance(module, torch.ao.nn.quantized.dynamic.LSTM) for module in first.modules())
    np.testing.assert_array_equal(predict(first, inputs), predict(second, inputs))


def test_distillation_loss_is_the_textbook_mixture() -> None:
    task = TASKS.get("classification")()
    student = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]])
    labels = torch.tensor([0.0, 2.0])
    teacher = torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.0, 3.0]])
    targets = torch.cat([teacher, labels[:, None]], dim=1)
    hard = torch.nn.functional.cross_entropy(student, labels.long())
    assert Distilled(task, alpha=0.0, temperature=2.0).loss(student, targets) == pytest.approx(float(hard))
    same = torch.cat([student, labels[:, None]], dim=1)
    assert float(Distilled(task, alpha=1.0, temperature=3.0).loss(student, same)) == pytest.approx(
        0, abs=1e-6
    )
    t = 2.0
    soft = torch.sum(
        torch.softmax(teacher / t, -1)
        * (torch.log_softmax(teacher / t, -1) - torch.log_softmax(student / t, -1))
    ) / len(student)
    mixed = Distilled(task, alpha=0.3, temperature=t).loss(student, targets)
    assert float(mixed) == pytest.approx(float(0.3 * t * t * soft + 0.7 * hard), rel=1e-5)


def test_a_distilled_student_registers_with_its_teacher_as_parent(
    mlp: Bundle, registry: Registry, cli, tmp_path: Path
) -> None:
    student = tmp_path / "student.yaml"
    student.write_text(
        MLP.read_text()
        .replace("name: breast-cancer-mlp", "name: cancer-student")
        .replace("hidden: [32]", "hidden: [4]")
    )
    result = cli("optimize", mlp.ref, "--distill", str(student), "--set", "train.epochs=20", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["student"] == "cancer-student@1"
    assert report["student_size_bytes"] < report["teacher_size_bytes"]
    assert report["student_value"] > 0.85
    assert report["verdict"] in ("passed", "rejected")
    assert registry.open("cancer-student@1").manifest.lineage.parent == mlp.ref

    wine = student.read_text().replace("builtin:breast_cancer", "builtin:wine")
    student.write_text(wine.replace("name: cancer-student", "name: wine-student"))
    refused = cli("optimize", mlp.ref, "--distill", str(student))
    assert refused.exit_code == 2
    assert "differ from the teacher's" in refused.stderr
