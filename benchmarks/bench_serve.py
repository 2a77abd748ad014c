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

With `--ray`, instead: breast-cancer-mlp on a local two-node Ray cluster (started and stopped by the script),
at concurrency 1, 16 and 64, in one run: ours direct (`modelcycle serve`, no Ray: the proxy's baseline), ours
on Ray with 1 and 2 replicas (`modelcycle serve --ray`), and a hand-written Ray Serve deployment with
`@serve.batch` (benchmarks/servers/ray_serve_batch.py) with 1 and 2 replicas, in rounds of alternating order.
Run: .venv/bin/python benchmarks/bench_serve.py --ray [--rounds 2]  → benchmarks/results/serve-ray.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from modelcycle.testing.ray_cluster import local_ray_cluster

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


def held_out_row(bundle: Bundle) -> dict[str, np.ndarray]:
    """The model-ready tensors of one held-out row (what every server is sent)."""
    predictor = Predictor.load(bundle)
    inputs = model_tensors(predictor.preprocessor, predictor.encoder, held_out_split(bundle)[1]).inputs
    return {name: array[:1] for name, array in inputs.items()}


def v2_body(row: dict[str, np.ndarray]) -> dict[str, Any]:
    """An Open Inference Protocol v2 infer request of ``row``, the tensors as JSON data."""
    return {
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


def measure_model(registry: Registry, ref: str) -> list[str]:
    bundle = registry.open(ref)
    row = held_out_row(bundle)
    v2 = v2_body(row)
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


# --- On Ray Serve (`--ray`) ------------------------------------------------------------------------------

RAY_CONFIG = "breast-cancer-mlp.yaml"
# the batcher's defaults, spelled out: the same batch size and wait as the hand-written `@serve.batch`
OUR_DEFAULTS = ["--max-batch-size", "32", "--max-queue-delay-ms", "2", "--max-queue", "256"]
RAY_SERVER = SERVERS / "ray_serve_batch.py"
WARMUP_SECONDS = 2  # one short wrk at c=16 before a server's cells, not recorded (first batches, JIT, pools)
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0
SERVING = re.compile(r"serving on https?://([^\s:/]+):(\d+)")


@dataclass(frozen=True)
class Server:
    """A server of the Ray comparison: how to start it, where it answers, and whether it runs on Ray (then it
    announces ``serving on http://HOST:PORT`` once every replica runs, and answers through the proxy)."""

    label: str
    command: list[str]
    port: int
    on_ray: bool
    env: dict[str, str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def start_server(server: Server, log: Path) -> subprocess.Popen[str]:
    """Start ``server`` and return once it answers ``/v2/health/ready`` with 200 (on Ray: after it announced
    the proxy's address, which must be the one asked for: Serve's proxy port is fixed by the first
    ``serve.start`` on a cluster)."""
    with log.open("w") as errors:
        process = subprocess.Popen(
            server.command,
            env={**os.environ, **server.env},
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:  # keeps draining stdout for the server's whole life, so it never blocks on the pipe
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while server.on_ray:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{server.label} did not deploy:\n{_tail(log)}")
            with contextlib.suppress(queue.Empty):
                found = SERVING.search(lines.get(timeout=1.0))
                if found is not None:
                    if int(found[2]) != server.port:
                        raise RuntimeError(
                            f"{server.label} answers on {found[1]}:{found[2]}, not {server.port}"
                        )
                    break
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(server.base + "/v2/health/ready", timeout=2).status_code == 200:
                    return process
            if process.poll() is not None:
                raise RuntimeError(f"{server.label} exited with {process.returncode}:\n{_tail(log)}")
            time.sleep(0.3)
        raise RuntimeError(f"{server.label} never became ready:\n{_tail(log)}")
    except BaseException:
        stop_server(process, server)
        raise


def stop_server(process: subprocess.Popen[str], server: Server) -> None:
    """SIGTERM (the Ray ones then delete their application), then wait until nothing answers the ready route,
    so the next application on the proxy's ``/`` never meets this one."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(server.base + "/v2/health/ready", timeout=2).status_code != 200:
                return
        except httpx.HTTPError:
            return
        time.sleep(0.5)
    raise RuntimeError(f"{server.label} still answers after it was stopped")


def _children_cpu() -> float:
    """CPU seconds of this process's children that have exited (wrk, once a cell is done)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _processes() -> dict[int, tuple[int, str, float]]:
    """Every process: pid → (parent pid, command line, CPU seconds so far), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found[int(entry.name)] = (
                int(fields[1]),
                command or stat,
                (int(fields[11]) + int(fields[12])) / tick,
            )
    return found


def _role(pid: int, processes: dict[int, tuple[int, str, float]], server: int) -> str:
    """Who a process works for: wrk, Ray's proxy, a Serve replica, the rest of Ray, the server started
    outside Ray (with its children), or anything else on the machine."""
    command = processes[pid][1]
    if "ServeReplica" in command:
        return "replicas"
    if "ProxyActor" in command:
        return "Ray proxy"
    if command.startswith("wrk"):
        return "wrk"
    ancestor, hops = pid, 0
    while ancestor in processes and hops < 64:
        if ancestor == server:
            return "server process"
        ancestor, hops = processes[ancestor][0], hops + 1
    if "ray" in command or "gcs_server" in command or "raylet" in command:
        return "Ray, other"
    return "other"


def cpu_shares(before: dict[int, tuple[int, str, float]], server: int, seconds: float) -> dict[str, float]:
    """The CPU each role used since ``before``, as a share of one core over ``seconds``."""
    after = _processes()
    used: dict[str, float] = {}
    for pid, (_, _, cpu) in after.items():
        role = _role(pid, after, server)
        used[role] = used.get(role, 0.0) + cpu - (before[pid][2] if pid in before else 0.0)
    return {role: value / seconds for role, value in sorted(used.items(), key=lambda item: -item[1])}


def measure_ray(registry: Registry, ref: str, rounds: int) -> list[str]:
    """Every server of the comparison, each in its own start, ``rounds`` times in alternating order, on one
    cluster; the table of each round, the ratios, and where the CPU went at c=64."""
    bundle = registry.open(ref)
    body = v2_body(held_out_row(bundle))
    name = bundle.manifest.name
    variant = json.loads((bundle.path / "variants" / "bench.json").read_text())["auto"]["1"]
    home = {"MODELCYCLE_HOME": str(registry.home)}
    ours = [PYTHON, "-m", "modelcycle", "serve", ref, "--variant", variant, *OUR_DEFAULTS]
    path = f"/v2/models/{name}/infer"
    lines = [
        f"## {ref} (`{variant}`)",
        "",
    ]
    cpu: dict[str, dict[str, float]] = {}
    with local_ray_cluster(nodes=2, cpus_per_node=1) as address, tempfile.TemporaryDirectory() as logs:
        proxy, direct = free_port(), free_port()
        servers = [
            Server("ours direct (no Ray)", [*ours, "--port", str(direct)], direct, False, home),
            *(
                Server(
                    f"ours on Ray, {count} replica{'s' * (count > 1)}",
                    [*ours, "--ray", address, "--replicas", str(count), "--port", str(proxy)],
                    proxy,
                    True,
                    home,
                )
                for count in (1, 2)
            ),
            *(
                Server(
                    f"hand-written `@serve.batch`, {count} replica{'s' * (count > 1)}",
                    [PYTHON, str(RAY_SERVER), address, str(bundle.path), variant, str(count), str(proxy)],
                    proxy,
                    True,
                    {},
                )
                for count in (1, 2)
            ),
        ]
        results: dict[str, list[list[Load]]] = {server.label: [] for server in servers}
        for round_ in range(rounds):
            order = servers if round_ % 2 == 0 else servers[::-1]
            for server in order:
                print(f"round {round_ + 1}: {server.label}", flush=True)
                process = start_server(server, Path(logs) / "server.log")
                try:
                    wrk(server.base + path, body, 16, WARMUP_SECONDS)
                    loads = []
                    for concurrency in CONCURRENCY:
                        before, children = _processes(), _children_cpu()
                        loads.append(wrk(server.base + path, body, concurrency))
                        if concurrency == max(CONCURRENCY) and round_ == 0:
                            cpu[server.label] = cpu_shares(before, process.pid, SECONDS)
                            # wrk has exited by now: its CPU is in this process's children's usage
                            cpu[server.label]["wrk"] = (_children_cpu() - children) / SECONDS
                    results[server.label].append(loads)
                    print("  " + ", ".join(f"{load.requests_per_second:.0f}/s" for load in loads), flush=True)
                finally:
                    stop_server(process, server)
            lines += [
                f"### Round {round_ + 1} (order: {', '.join(server.label for server in order)})",
                "",
                "| server | " + " | ".join(f"c={c}: req/s, p50 / p99 ms, failed" for c in CONCURRENCY) + " |",
                "| --- |" + " --- |" * len(CONCURRENCY),
            ]
            for server in servers:
                cells = [
                    f"{load.requests_per_second:.0f}, {load.p50_ms:.2f} / {load.p99_ms:.2f}, {load.failed}"
                    for load in results[server.label][round_]
                ]
                lines.append(f"| {server.label} | " + " | ".join(cells) + " |")
            lines.append("")
    labels = [server.label for server in servers]
    pairs = [
        (labels[1], labels[3], "ours on Ray / hand-written, 1 replica"),
        (labels[2], labels[4], "ours on Ray / hand-written, 2 replicas"),
        (labels[1], labels[0], "ours on Ray, 1 replica / ours direct (the proxy's cost)"),
        (labels[2], labels[0], "ours on Ray, 2 replicas / ours direct"),
    ]
    heading = "round " + " / round ".join(str(index + 1) for index in range(rounds)) + " / mean"
    lines += [
        f"### Ratios of requests per second ({heading})",
        "",
        "| ratio | " + " | ".join(f"c={c}" for c in CONCURRENCY) + " |",
        "| --- |" + " --- |" * len(CONCURRENCY),
    ]
    means: dict[str, list[float]] = {}
    for top, bottom, title in pairs:
        cells, means[title] = [], []
        for index in range(len(CONCURRENCY)):
            above = [loads[index].requests_per_second for loads in results[top]]
            below = [loads[index].requests_per_second for loads in results[bottom]]
            each = [a / b for a, b in zip(above, below, strict=True)]
            mean = sum(above) / sum(below)  # the ratio of the rounds' mean rates
            means[title].append(mean)
            cells.append(" / ".join(f"{value:.2f}" for value in each) + f" / **{mean:.2f}**")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    goal = [
        means[title][CONCURRENCY.index(concurrency)]
        for title in (pairs[0][2], pairs[1][2])
        for concurrency in (16, 64)
        if concurrency in CONCURRENCY
    ]
    failed = sum(load.failed for loads in results.values() for round_ in loads for load in round_)
    lines += [
        "",
        f"- Goal (ours on Ray ≥ the hand-written deployment at c=16 and c=64, 1 and 2 replicas, mean of the "
        f"rounds): **{'met' if min(goal) >= 1 else 'not met'}** (lowest ratio {min(goal):.2f}). "
        f"Failed requests over the whole run: {failed}.",
        "",
        f"### Where the CPU went at c={max(CONCURRENCY)} (round 1, share of one core; 2 cores = 2.00)",
        "",
        "| server | " + " | ".join(f"{role}" for role in ROLES) + " | total |",
        "| --- |" + " --- |" * (len(ROLES) + 1),
    ]
    for label, shares in cpu.items():
        lines.append(
            f"| {label} | "
            + " | ".join(f"{shares.get(role, 0.0):.2f}" for role in ROLES)
            + f" | {sum(shares.values()):.2f} |"
        )
    lines.append("")
    return lines


ROLES = ("wrk", "server process", "Ray proxy", "replicas", "Ray, other", "other")


def main_ray(rounds: int) -> None:
    """The `--ray` run → benchmarks/results/serve-ray.md."""
    import ray

    started = time.perf_counter()
    lines = [
        "# Serving on Ray Serve: ours vs a hand-written `@serve.batch` deployment, and the proxy's cost",
        "",
        f"Machine: {describe_machine()} · Ray {ray.__version__}",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_serve.py --ray --rounds {rounds}`",
        "",
        "A local two-node Ray cluster on 127.0.0.1 (`ray start --num-cpus 1` twice; Serve's proxies on every "
        f"node). wrk, one thread, {SECONDS} s per cell after a {WARMUP_SECONDS} s warm-up, one row per "
        "request, the same v2 JSON body for every server; the load generator, Ray's proxy, the replicas and "
        "the rest of Ray share the machine's 2 cores. Every server is started afresh for its cells, "
        f"{rounds} rounds in alternating order. `failed` counts non-2xx responses and socket errors.",
        "",
    ]
    with tempfile.TemporaryDirectory() as home:
        registry = Registry(Path(home))
        lines += measure_ray(registry, prepared(registry, RAY_CONFIG), rounds)
    lines.append(f"Whole run: {time.perf_counter() - started:.0f} s.")
    (ROOT / "benchmarks" / "results" / "serve-ray.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ray", action="store_true", help="the Ray Serve comparison → serve-ray.md")
    parser.add_argument("--rounds", type=int, default=2, choices=range(1, 6), help="with --ray [2]")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    if args.ray:
        main_ray(args.rounds)
        return
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
    lines += ["", "On Ray Serve (`--ray`, a run of its own): [serve-ray.md](serve-ray.md)."]
    (ROOT / "benchmarks" / "results" / "serve.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
