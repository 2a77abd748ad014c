"""Serving throughput and latency, side by side in one run, at concurrency 1, 16 and 64 (wrk, one thread, 8 s
each, 127.0.0.1), for digits-cnn and text-minilm:
- ours: `modelcycle serve` (Open Inference Protocol v2, adaptive batching, `auto` variant) and the same with
  `--variant base` (eager torch, like the others);
- minimal: a hand-written FastAPI endpoint that runs the model per request (what users write today);
- BentoML with its adaptive batching (installed by this script in its own venv, not by `make setup`);
- two limits: the raw batched runtime with no HTTP (compute), and a FastAPI endpoint that runs no model
  (HTTP).

Run: .venv/bin/python benchmarks/bench_serve.py  → benchmarks/results/serve.md
(needs `wrk`: apt-get install wrk)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine

from modelcycle.bench import bench
from modelcycle.bundle import Bundle
from modelcycle.config import load_config
from modelcycle.export import export_onnx
from modelcycle.optimize import quantize
from modelcycle.pipeline import train
from modelcycle.predictor import Predictor, held_out_split, model_tensors
from modelcycle.registry import Registry
from modelcycle.runtime import load_model

ROOT = Path(__file__).resolve().parents[1]
SERVERS = ROOT / "benchmarks" / "servers"
BENTO_VENV = Path(tempfile.gettempdir()) / "modelcycle-bench-bentoml"
CONCURRENCY = (1, 16, 64)
SECONDS = 8
PYTHON = sys.executable


@dataclass(frozen=True)
class Load:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    failed: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bento_python() -> Path:
    """BentoML in a venv of its own (with this project installed into it, for the bundle loader)."""
    python = BENTO_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(BENTO_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0", "bentoml"], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", str(ROOT)], check=True)
    return python


def start(command: list[str], ready_url: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        command, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(ready_url, timeout=1).status_code < 500:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"{command[:3]} exited with {process.returncode}")
        time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"{command[:3]} never became ready")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def wrk(url: str, body: dict, concurrency: int, seconds: float = SECONDS) -> Load:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(json.dumps(body))}\n"
        )
    try:
        output = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{concurrency}",
                f"-d{seconds:g}s",
                "--latency",
                "--timeout",
                "10s",
                "-s",
                script.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(script.name)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    failed = sum(int(value) for value in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    failed += sum(int(value) for value in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    return Load(rate, _ms(output, "50%"), _ms(output, "99%"), failed)


def _ms(output: str, percentile: str) -> float:
    value, unit = re.search(rf"{re.escape(percentile)}\s+([\d.]+)(us|ms|s)", output).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def compute_limit(bundle: Bundle, variant: str, row: dict[str, np.ndarray], batch: int = 32) -> float:
    """Rows per second of the runtime alone on full batches (no HTTP, no batching wait)."""
    model = load_model(bundle, variant)
    tensors = [torch.from_numpy(np.repeat(array, batch, axis=0)) for array in row.values()]
    with torch.inference_mode():
        for _ in range(3):
            model(*tensors)
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < 3:
            model(*tensors)
            calls += 1
    return calls * batch / (time.perf_counter() - started)


def measure_model(registry: Registry, ref: str) -> list[str]:
    bundle = registry.open(ref)
    predictor = Predictor.load(bundle)
    inputs = model_tensors(predictor.preprocessor, predictor.encoder, held_out_split(bundle)[1]).inputs
    row = {name: array[:1] for name, array in inputs.items()}
    v2 = {
        "inputs": [
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": "FP32" if array.dtype == np.float32 else "INT64",
                "data": array.ravel().tolist(),
            }
            for name, array in row.items()
        ]
    }
    plain = {"inputs": [array.tolist() for array in row.values()]}
    stacked = {
        "inputs": np.stack(list(row.values()), axis=1).tolist()
    }  # BentoML: one array, inputs on axis 1
    auto = json.loads((bundle.path / "variants" / "bench.json").read_text())["auto"]["1"]
    home = {"MODELCYCLE_HOME": str(registry.home)}
    name = bundle.manifest.name
    targets = []
    for variant in (auto, "base"):
        port = free_port()
        command = [PYTHON, "-m", "modelcycle", "serve", ref, "--port", str(port), "--variant", variant]
        targets.append(
            (
                f"ours (`{variant}`)",
                command,
                f"http://127.0.0.1:{port}",
                f"/v2/models/{name}/infer",
                v2,
                "/v2/health/ready",
                home,
            )
        )
    port = free_port()
    targets.append(
        (
            "minimal FastAPI, per request",
            [PYTHON, str(SERVERS / "minimal.py"), str(bundle.path), str(port)],
            f"http://127.0.0.1:{port}",
            "/predict",
            plain,
            "/docs",
            {},
        )
    )
    port = free_port()
    bento = [
        str(bento_python().parent / "bentoml"),
        "serve",
        "bento_service:Model",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
    ]
    targets.append(
        (
            "BentoML, adaptive batching",
            bento,
            f"http://127.0.0.1:{port}",
            "/predict",
            stacked,
            "/readyz",
            {"BENCH_BUNDLE": str(bundle.path)},
        )
    )
    port = free_port()
    targets.append(
        (
            "HTTP limit: FastAPI, no model",
            [PYTHON, str(SERVERS / "minimal.py"), "--noop", str(port)],
            f"http://127.0.0.1:{port}",
            "/predict",
            plain,
            "/docs",
            {},
        )
    )
    results: dict[str, list[Load]] = {}
    for label, command, base, path, body, ready, env in targets:
        process = (
            start(command, base + ready, env)
            if "bentoml" not in command[0]
            else _start_bento(command, base + ready, env)
        )
        try:
            results[label] = [wrk(base + path, body, concurrency) for concurrency in CONCURRENCY]
        finally:
            stop(process)
    limit = compute_limit(bundle, auto, row)
    http_limit = max(load.requests_per_second for load in results["HTTP limit: FastAPI, no model"])
    binding = min(limit, http_limit)
    lines = [
        f"## {ref}",
        "",
        "| server | " + " | ".join(f"c={c}: req/s, p50 / p99 ms, failed" for c in CONCURRENCY) + " |",
        "| --- |" + " --- |" * len(CONCURRENCY),
    ]
    for label, loads in results.items():
        cells = [
            f"{load.requests_per_second:.0f}, {load.p50_ms:.2f} / {load.p99_ms:.2f}, {load.failed}"
            for load in loads
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    ours = max(load.requests_per_second for load in results[f"ours (`{auto}`)"])
    best_other = {
        label: max(load.requests_per_second for load in loads)
        for label, loads in results.items()
        if label.startswith(("minimal", "BentoML"))
    }
    lines += [
        "",
        f"- compute limit (`{auto}` on batches of 32, no HTTP): {limit:.0f} rows/s; HTTP limit (no-op "
        f"endpoint, best concurrency): {http_limit:.0f} req/s. "
        f"Binding: **{'compute' if limit < http_limit else 'HTTP'}** ({binding:.0f}/s).",
        f"- ours at its best concurrency: {ours:.0f} req/s = {ours / binding:.0%} of the binding limit "
        "(goal ≥ 70 %); "
        + ", ".join(f"{ours / rate:.2f}× {label.split(',')[0]}" for label, rate in best_other.items())
        + ".",
        "",
    ]
    return lines


def _start_bento(command: list[str], ready_url: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        command, cwd=SERVERS, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(ready_url, timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError("BentoML never became ready")


def prepared(registry: Registry, config: str) -> str:
    """Train, export, quantize and bench, so `auto` has measured figures to choose by."""
    result = train(load_config(ROOT / "examples" / config), registry)
    assert result is not None
    bundle = registry.open(result.ref)
    export_onnx(bundle)
    quantize(bundle, "dynamic-int8")
    bench(bundle, batch_sizes=[1, 8, 32], seconds=1.0)
    return result.ref


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    bento_python()
    started = time.perf_counter()
    lines = [
        "# Serving: ours vs a minimal server vs BentoML, with both limits",
        "",
        f"Machine: {describe_machine()}",
        "",
    ]
    lines += [
        f"wrk, one thread, {SECONDS} s per cell, one row per request, all on 127.0.0.1; the load generator "
        "shares the 2 cores with the server. `failed` counts non-2xx responses and socket errors.",
        "",
    ]
    with tempfile.TemporaryDirectory() as home:
        registry = Registry(Path(home))
        for config in ("digits-cnn.yaml", "text-minilm.yaml"):
            lines += measure_model(registry, prepared(registry, config))
    lines.append(f"Whole run: {time.perf_counter() - started:.0f} s.")
    (ROOT / "benchmarks" / "results" / "serve.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
