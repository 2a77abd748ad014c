"""How far int8 ONNX graphs move the outputs of their fp32 graphs, on the CPU this runs on: the child process
of bench_int8_cpu.py, which runs it natively and under QEMU. It imports only numpy and onnxruntime, so that
it starts quickly under emulation.

Run: python benchmarks/onnx_drift.py PLAN.json  → one JSON line per int8 graph on stdout
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime


def measure(plan_path: Path) -> None:
    """The child: run every graph of the plan with onnxruntime alone (no torch: quick to start under QEMU)
    and print, per graph, how far its outputs are from the fp32 graph's on this CPU."""
    plan = json.loads(plan_path.read_text())
    with np.load(plan["inputs"], allow_pickle=False) as stored:
        inputs = {name: stored[name] for name in stored.files}
    targets = np.load(plan["targets"], allow_pickle=False)

    @functools.cache  # one fp32 graph may serve several int8 graphs
    def run(path: str) -> np.ndarray:
        options = onnxruntime.SessionOptions()
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = {item.name: inputs[item.name] for item in session.get_inputs()}
        return np.asarray(session.run(None, feed)[0], dtype=np.float32)

    for name, paths in plan["graphs"].items():
        fp32, outputs = run(paths["fp32"]), run(paths["int8"])
        spread = float(fp32.max() - fp32.min())
        moved = float(np.abs(outputs - fp32).max())
        print(
            json.dumps(
                {
                    "variant": name,
                    "max_abs_diff": moved,
                    "of_range": moved / spread,
                    "of_max_logit": moved / float(np.abs(fp32).max()),
                    "argmax_agreement": float(np.mean(outputs.argmax(1) == fp32.argmax(1))),
                    "accuracy": float(np.mean(outputs.argmax(1) == targets)),
                    "fp32_accuracy": float(np.mean(fp32.argmax(1) == targets)),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    measure(Path(sys.argv[1]))
