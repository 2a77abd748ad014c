"""ONNX Runtime int8 variants on two CPU kinds, side by side: each variant made for a VNNI CPU (full-range
int8 weights) and for an AVX2-only CPU (7-bit weights, ``reduce_range``), then run on this CPU and on an
AVX2-only CPU (Haswell, emulated by QEMU user mode: ONNX Runtime picks its kernels by CPUID, which QEMU
answers), against the fp32 ONNX graph on the same CPU and rows.

Run: .venv/bin/python benchmarks/bench_int8_cpu.py [--minilm-home DIR [--minilm-set KEY=VALUE ...]]
→ benchmarks/results/int8-cpu.md (needs `qemu-x86_64` from Debian's qemu-user for the AVX2 column; ~5 min
for breast-cancer-mlp; text-minilm is trained twice into DIR unless it holds versions 1 and 2 already, and
its emulated run is kept to a few rows)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine

from modelcycle.bundle import Bundle
from modelcycle.config import load_config
from modelcycle.errors import ModelcycleError
from modelcycle.optimize import Gate, quantize
from modelcycle.pipeline import train
from modelcycle.predictor import Predictor, held_out_split, model_tensors
from modelcycle.registry import Registry
from modelcycle.runtime.cpu import int8_scheme

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results/int8-cpu.md"
MADE_FOR = {"VNNI": ["avx2", "avx512f", "avx512_vnni"], "AVX2": ["avx2"]}
EMULATED_CPU = "Haswell"  # AVX2 + FMA, no AVX-512, no VNNI
EMULATED_ROWS = 64  # text-minilm rows run under QEMU (emulated AVX2 is slow)


def plan_for(bundles: dict[str, Bundle], folder: Path, rows: int | None) -> Path:
    """Write the validation rows and the graphs to compare (fp32 and each int8 variant) for the child."""
    graphs: dict[str, dict[str, str]] = {}
    for kind, bundle in bundles.items():
        for name in ("onnx-int8", "onnx-int8-static"):
            variant = bundle.variant(name)
            made_for = int8_scheme(MADE_FOR[kind]).reduce_range
            assert variant.manifest.params["reduce_range"] == made_for, variant.manifest.params
            bits = "7-bit" if variant.manifest.params["reduce_range"] else "8-bit"
            graphs[f"{name} made for {kind} ({bits} weights)"] = {
                "int8": str(variant.path / "model.onnx"),
                "fp32": str(bundle.variant("onnx-fp32").path / "model.onnx"),
            }
    first = next(iter(bundles.values()))
    predictor = Predictor.load(first)
    tensors = model_tensors(predictor.preprocessor, predictor.encoder, held_out_split(first)[1])
    chosen = slice(0, rows)
    np.savez(folder / "inputs.npz", **{name: array[chosen] for name, array in tensors.inputs.items()})
    np.save(folder / "targets.npy", np.asarray(tensors.metric_targets)[chosen])
    plan = {
        "graphs": graphs,
        "inputs": str(folder / "inputs.npz"),
        "targets": str(folder / "targets.npy"),
    }
    (folder / "plan.json").write_text(json.dumps(plan))
    return folder / "plan.json"


def run_child(plan: Path, *, emulated: bool) -> dict[str, dict[str, float]]:
    command = [sys.executable, str(Path(__file__).with_name("onnx_drift.py")), str(plan)]
    if emulated:
        command = ["qemu-x86_64", "-cpu", EMULATED_CPU, *command]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return {row["variant"]: row for row in map(json.loads, done.stdout.splitlines())}


def variants(registry: Registry, config: str, overrides: list[str]) -> dict[str, Bundle]:
    """Versions 1 and 2 of the config's model (trained now where missing: same config and seed, so the same
    weights), one per CPU kind, each with a dynamic and a static int8 variant made for that kind."""
    chosen = load_config(ROOT / "examples" / config, overrides)
    made = {}
    for number, (kind, flags) in enumerate(MADE_FOR.items(), start=1):
        ref = f"{chosen.name}@{number}"
        if number > len(_versions(registry, chosen.name)):
            result = train(chosen, registry)
            assert result is not None
            assert result.ref == ref, result.ref
        bundle = registry.open(ref)
        if "onnx-int8" not in bundle.variant_names():
            quantize(bundle, "dynamic-int8", runtime="onnxruntime", cpu_flags=flags, gate=Gate(1.0))
        if "onnx-int8-static" not in bundle.variant_names():
            quantize(bundle, "static-int8", cpu_flags=flags, gate=Gate(1.0))
        made[kind] = bundle
    return made


def _versions(registry: Registry, name: str) -> list[object]:
    try:
        return list(registry.list_versions(name))
    except ModelcycleError:  # no such model yet
        return []


def table(title: str, rows: int, native: dict, emulated: dict | None) -> list[str]:
    lines = [
        f"## {title}: {rows} validation rows",
        "",
        "Each int8 graph against the fp32 ONNX graph on the same CPU and rows: the largest logit change as a "
        "share of the fp32 logits' range and of their largest magnitude (the test's measure, limit 5 %), "
        "argmax agreement, accuracy (fp32's in the header).",
        "",
        "| variant | this CPU: moved / range | / max logit | argmax agree | accuracy "
        "| AVX2 (QEMU Haswell): moved / range | / max logit | argmax agree | accuracy |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines[2] += f" fp32 accuracy here {next(iter(native.values()))['fp32_accuracy']:.4f}"
    if emulated:
        lines[2] += f", under QEMU {next(iter(emulated.values()))['fp32_accuracy']:.4f}"
    lines[2] += "."
    for name, here in native.items():
        cells = [name, *_cells(here)]
        cells += _cells(emulated[name]) if emulated else ["not run"] + [""] * 3
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _cells(row: dict[str, float]) -> list[str]:
    return [
        f"{row['of_range']:.2%}",
        f"{row['of_max_logit']:.2%}",
        f"{row['argmax_agreement']:.4f}",
        f"{row['accuracy']:.4f}",
    ]


def main(minilm_home: Path | None, minilm_overrides: list[str]) -> None:
    qemu = shutil.which("qemu-x86_64") is not None
    sections = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        registry = Registry(folder / "home")
        bundles = variants(
            registry, "breast-cancer-mlp.yaml", ["train.epochs=30", "model.params.hidden=[32, 16]"]
        )
        plan = plan_for(bundles, folder, None)
        rows = len(np.load(folder / "targets.npy"))
        native = run_child(plan, emulated=False)
        sections += table("breast-cancer-mlp", rows, native, run_child(plan, emulated=True) if qemu else None)
        if minilm_home is not None:
            sections += minilm(Registry(minilm_home), minilm_overrides, folder, qemu)
        registry.close()
    header = [
        "# ONNX Runtime int8 on CPUs with and without VNNI",
        "",
        f"Machine: {describe_machine()}; the AVX2 column runs the same graphs under `qemu-x86_64 -cpu "
        f"{EMULATED_CPU}` (AVX2 + FMA, no AVX-512, no VNNI) on this machine.",
        "",
        "Without VNNI, ONNX Runtime's u8s8 kernels add two u8×s8 products in a saturating int16 "
        "(`vpmaddubsw`); 7-bit weights (`reduce_range`) cannot overflow it. `made for VNNI` = full-range "
        "int8 weights, `made for AVX2` = 7-bit weights (what `modelcycle optimize` now chooses by the CPU it "
        "runs on, recorded in variant.json as `reduce_range` and `cpu_features`).",
        "",
    ]
    RESULTS.write_text("\n".join(header + sections))


def minilm(registry: Registry, overrides: list[str], folder: Path, qemu: bool) -> list[str]:
    """text-minilm: the static QDQ variant that lost 10 points in optimize.md, made for both kinds."""
    bundles = variants(registry, "text-minilm.yaml", overrides)
    title = "text-minilm" + (f" (trained with {' '.join(overrides)})" if overrides else "")
    sub = folder / "minilm"
    sub.mkdir()
    plan = plan_for(bundles, sub, None)
    rows = len(np.load(sub / "targets.npy"))
    lines = table(title, rows, run_child(plan, emulated=False), None)
    if qemu:
        few = folder / "minilm-few"
        few.mkdir()
        plan = plan_for(bundles, few, EMULATED_ROWS)
        lines += table(title, EMULATED_ROWS, run_child(plan, emulated=False), run_child(plan, emulated=True))
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minilm-home", type=Path, help="also measure text-minilm, trained into this home")
    parser.add_argument("--minilm-set", nargs="*", default=[], help="config overrides for text-minilm")
    arguments = parser.parse_args()
    main(arguments.minilm_home, arguments.minilm_set)
