"""Optimize, export and bench, side by side in one run: every variant of digits-cnn and text-minilm against
eager fp32 torch on the same rows; a pruned + fine-tuned breast-cancer-mlp through the gate; a distilled
student of text-minilm against its teacher and against the same student trained without one.

Run: .venv/bin/python benchmarks/bench_optimize.py  → benchmarks/results/optimize.md (~20 min on 2 cores)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine

from modelcycle.bench import bench
from modelcycle.bench.report import BenchReport
from modelcycle.bundle import Bundle
from modelcycle.config import load_config
from modelcycle.export import export_onnx
from modelcycle.optimize import Gate, PruneSpec, distill, prune_model, quantize
from modelcycle.pipeline import train
from modelcycle.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SECONDS = 2.0  # per measurement; each variant runs in its own process


def trained(registry: Registry, config: str, overrides: list[str] | None = None) -> Bundle:
    result = train(load_config(EXAMPLES / config, overrides or []), registry)
    assert result is not None
    return registry.open(result.ref)


def mb(size: float) -> str:
    return f"{size / 1e6:.2f} MB"


def bench_table(report: BenchReport, batch_sizes: list[int]) -> list[str]:
    metric = report.primary_metric
    header = ["variant", "runtime", "size", f"valid {metric}", "p50 / p95 / p99 ms (batch 1)"]
    header += [f"rows/s b{size}" for size in batch_sizes] + ["× eager b1", "peak RSS", "gate"]
    base = next(result for result in report.results if result.variant == "base")
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for result in report.results:
        latency = result.latency_ms
        value = (result.metrics or {}).get(metric)
        cells = [
            result.variant + (" **(auto)**" if report.auto.get("1") == result.variant else ""),
            result.runtime,
            mb(result.size_bytes),
            f"{value:.4f}" if value is not None else "–",
            f"{latency['p50']:.3f} / {latency['p95']:.3f} / {latency['p99']:.3f}",
            *(f"{result.throughput[str(size)]:.0f}" for size in batch_sizes),
            f"{result.throughput['1'] / base.throughput['1']:.2f}×",
            f"{result.peak_rss_mb:.0f} MB",
            result.verdict or "(base)",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def speedup(report: BenchReport, variant: str, batch: int = 1) -> float:
    rates = {result.variant: result.throughput[str(batch)] for result in report.results}
    return rates[variant] / rates["base"]


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def digits(registry: Registry) -> list[str]:
    bundle = trained(registry, "digits-cnn.yaml")
    export = export_onnx(bundle)
    quantize(bundle, "dynamic-int8", gate=Gate(0.01))
    sizes = [1, 8, 32, 128]
    report = bench(bundle, batch_sizes=sizes, seconds=SECONDS)
    ratio = speedup(report, "onnx-fp32")
    return [
        "## digits-cnn (8×8 images, 10 classes)",
        "",
        *bench_table(report, sizes),
        "",
        f"- ONNX parity on {export.rows_checked} validation rows: max abs diff {export.max_abs_diff:.2e}, "
        f"argmax agreement {export.argmax_agreement:.4f} "
        f"(goal ≤ 1e-4: {verdict(export.max_abs_diff <= 1e-4)}).",
        f"- ONNX Runtime fp32 vs eager torch at batch 1: {ratio:.2f}× the throughput (goal ≥ 1.5×: "
        f"{verdict(ratio >= 1.5)}). `auto` picks **{report.auto['1']}** at batch 1, "
        f"**{report.auto['128']}** at batch 128.",
        "",
    ]


def pruning(registry: Registry) -> list[str]:
    lines = [
        "## breast-cancer-mlp: L1 pruning 50 % + 5 fine-tuning epochs, default gate (max drop 0.01 absolute)",
        "",
        "| hidden | base valid accuracy | pruned valid accuracy | sparsity of Linear weights | gate |",
        "| --- | --- | --- | --- | --- |",
    ]
    for hidden in ("[32]", "[64]"):
        overrides = [f"model.params.hidden={hidden}", f"name=cancer-{hidden[1:-1]}"]
        bundle = trained(registry, "breast-cancer-mlp.yaml", overrides)
        result = prune_model(bundle, PruneSpec.parse("l1-unstructured:0.5"), finetune_epochs=5)
        lines.append(
            f"| {hidden} | {result.base_value:.4f} | {result.value:.4f} | {result.extra['sparsity']:.3f} | "
            f"{result.verdict} |"
        )
    return [*lines, "", "The validation split has 85 rows: one row is 1.18 accuracy points.", ""]


def minilm(registry: Registry) -> list[str]:
    started = time.perf_counter()
    bundle = trained(registry, "text-minilm.yaml")
    train_seconds = time.perf_counter() - started
    export = export_onnx(bundle)
    results = quantize(bundle, "dynamic-int8")
    results += quantize(bundle, "static-int8")
    results += quantize(bundle, "fp16") + quantize(bundle, "bf16")
    by_name = {result.variant: result for result in results}
    fp32, int8 = bundle.variant("onnx-fp32").manifest, by_name["onnx-int8"]
    lines = [
        "## text-minilm (all-MiniLM-L6-v2 + LoRA, merged; Rotten Tomatoes)",
        "",
        f"Trained (examples/text-minilm.yaml) in {train_seconds:.0f} s.",
        f"ONNX parity: max abs diff {export.max_abs_diff:.2e}, "
        f"argmax agreement {export.argmax_agreement:.4f}.",
        "",
        "| variant | runtime | size | valid accuracy | Δ vs base | gate |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| base | torch | {mb(results[0].base_size_bytes)} | {results[0].base_value:.4f} | – | – |",
        *(
            f"| {r.variant} | {r.runtime} | {mb(r.size_bytes)} | {r.value:.4f} | {r.delta * 100:+.2f} pts | "
            f"{r.verdict} |"
            for r in results
        ),
        "",
        f"- onnx-int8 vs onnx-fp32: {fp32.size_bytes / int8.size_bytes:.2f}× smaller (goal ≥ 3.5×: "
        f"{verdict(fp32.size_bytes / int8.size_bytes >= 3.5)}), "
        f"accuracy {int8.delta * 100:+.2f} points vs the base (goal ≥ −1: {verdict(int8.delta >= -0.01)}).",
        "- ONNX Runtime int8 weights chosen for this CPU: "
        + ("7-bit (`reduce_range`: no VNNI / AMX)" if int8.params["reduce_range"] else "8-bit (VNNI here)")
        + "; the int8 variants on CPUs with and without VNNI, side by side: int8-cpu.md.",
        "",
    ]
    for sequence in (32, 128, None):  # None = the model's own length, last so bench.json is what auto reads
        sizes = [1, 32] if sequence else [1, 8, 32]
        report = bench(bundle, batch_sizes=sizes, sequence_length=sequence, seconds=SECONDS)
        length = report.sequence_length
        ort = speedup(report, "onnx-fp32")
        lines += [
            f"### sequence length {length}" + ("" if sequence else " (the model's own, what `auto` reads)"),
            "",
            *bench_table(report, sizes),
            "",
            f"- ONNX Runtime fp32 at batch 1: {ort:.2f}× eager"
            + (f" (goal at seq 32 ≥ 2×: {verdict(ort >= 2)})" if sequence == 32 else "")
            + "; int8: "
            f"{speedup(report, 'onnx-int8'):.2f}×. `auto` picks **{report.auto['1']}** at batch 1, "
            f"**{report.auto['32']}** at batch 32.",
            "",
        ]
    return lines + distillation(registry, bundle)


def distillation(registry: Registry, teacher: Bundle) -> list[str]:
    student = load_config(EXAMPLES / "text-student.yaml")
    distilled = distill(teacher, student, registry)
    plain = train(load_config(EXAMPLES / "text-student.yaml", ["name=text-student-plain"]), registry)
    assert plain is not None
    return [
        "## Distillation: text-student (2-layer transformer from scratch) taught by text-minilm",
        "",
        "| model | test accuracy | weights | p50 ms (batch 1) |",
        "| --- | --- | --- | --- |",
        f"| teacher {distilled.teacher} | {distilled.teacher_value:.4f} | "
        f"{mb(distilled.teacher_size_bytes)} | {distilled.teacher_p50_ms:.3f} |",
        f"| student {distilled.student} (α 0.5, T 2) | {distilled.student_value:.4f} | "
        f"{mb(distilled.student_size_bytes)} | {distilled.student_p50_ms:.3f} |",
        f"| same student without a teacher | {plain.metrics['test']['accuracy']:.4f} | – | – |",
        "",
        f"Student vs teacher: {distilled.teacher_p50_ms / distilled.student_p50_ms:.1f}× faster at batch 1, "
        f"{distilled.teacher_size_bytes / distilled.student_size_bytes:.0f}× smaller, "
        f"{distilled.delta * 100:+.1f} accuracy points (gate: {distilled.verdict}). "
        "The teacher's figure is on the student's test split, which overlaps the rows the teacher was "
        "fine-tuned on (its own test "
        f"accuracy is {teacher.manifest.metrics['test']['accuracy']:.4f}).",
        "",
    ]


def main() -> None:
    started = time.perf_counter()
    lines = ["# Optimize, export, bench", "", f"Machine: {describe_machine()}", ""]
    lines += [
        "Every variant runs in its own fresh process on the same validation rows; throughput in rows/s, "
        f"{SECONDS:g} s per measurement; `auto` = the fastest variant whose gate passed, by measurement.",
        "",
    ]
    with tempfile.TemporaryDirectory() as home:
        registry = Registry(Path(home) / "home")
        lines += digits(registry)
        lines += pruning(registry)
        lines += minilm(registry)
    lines.append(f"Whole run: {time.perf_counter() - started:.0f} s.")
    output = ROOT / "benchmarks" / "results" / "optimize.md"
    output.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
