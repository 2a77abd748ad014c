"""The serving path before and after a change, side by side in one run: one `modelcycle serve` from each of
two source trees (git worktrees; each server runs with ``PYTHONPATH=<tree>/src``, which shadows the
editable install), each over its own copy of one registry home written by the *before* code (so the after
code must load bundles the before code wrote), monitoring off and on with its defaults (the store writes;
the rounds' interval is pushed out as in bench_monitor.py, whose rounds are priced apart), plus a second
"before, off" server as a control: what the method reads into two identical servers.

- breast-cancer-mlp over the simple JSON API (30 named features, one row per request);
- digits-cnn over the Open Inference Protocol v2 (its ONNX export, one image per request).

The servers of one model run at once and take turns (bench_monitor.py's method): each turn, every server in
rotating order gets one slice at c=64 and one at c=1 while the others are paused with SIGSTOP (their store
writers too). Each slice's throughput is also divided by the share of CPU time the VM received in it
(/proc/stat steal). Ratios after/before are taken turn by turn (the two slices were seconds apart), and
reported as the mean of the turns' means with the range of the per-turn ratios. Before the turns, both
servers answer the same request and the answers are compared; and the before code serves a
breast-cancer-mlp bundle that the after code trained (the other direction of compatibility).

Run: .venv/bin/python benchmarks/bench_refactor.py BEFORE_TREE AFTER_TREE
     (e.g. `git worktree add --detach /tmp/before 9664fea`, `git worktree add --detach /tmp/after HEAD`)
     → benchmarks/results/refactor.md   (needs `wrk`)
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_monitor import NO_ROUNDS, cpu_ticks, pause, process_tree, serve_config
from bench_serve import PYTHON, ROOT, free_port, start, stop, wrk
from machine import describe_machine

TURNS = 10
SLICE_SECONDS = 2
TICK = os.sysconf("SC_CLK_TCK")
BEST = 64
MONITOR = {"off": "enabled: false", "on": "enabled: true" + NO_ROUNDS}
CONTROL = "before, off (again)"
ANSWERS: dict[str, object] = {}  # model → the before code's answer to the request, over its own bundle

PREPARE = """
import json, sys
from pathlib import Path
from modelcycle.config import load_config
from modelcycle.export import export_onnx
from modelcycle.pipeline import train
from modelcycle.predictor import training_split
from modelcycle.registry import Registry

root, home, which = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(",")
registry = Registry(home)
out = {}
if "breast-cancer-mlp" in which:
    mlp = train(load_config(root / "examples" / "breast-cancer-mlp.yaml"), registry)
    dataset = training_split(registry.open(mlp.ref), "test")
    out["breast-cancer-mlp"] = {
        "ref": mlp.ref,
        "path": "/v1/models/breast-cancer-mlp:predict",
        "body": {"instances": [dataset.frame[dataset.features].iloc[0].to_dict()]},
    }
if "digits-cnn" in which:
    digits = train(load_config(root / "examples" / "digits-cnn.yaml"), registry)
    export_onnx(registry.open(digits.ref))
    pixels = training_split(registry.open(digits.ref), "test").images[0]
    out["digits-cnn"] = {
        "ref": digits.ref,
        "path": "/v2/models/digits-cnn/infer",
        "body": {"inputs": [{"name": "image", "shape": [1, *pixels.shape], "datatype": "FP32",
                             "data": pixels.ravel().tolist()}]},
    }
print(json.dumps(out))
"""


@dataclass
class Turns:
    requests_per_second: list[float] = field(default_factory=list)  # c=BEST, one per turn
    received: list[float] = field(default_factory=list)  # share of CPU time not stolen, per turn
    cpu_ms: list[float] = field(
        default_factory=list
    )  # the server's CPU time per request at c=BEST (writer too)
    p50_ms: list[float] = field(default_factory=list)  # c=1
    p99_ms: list[float] = field(default_factory=list)
    failed: int = 0

    def corrected(self) -> list[float]:
        return [rate / share for rate, share in zip(self.requests_per_second, self.received, strict=True)]


def tree_env(tree: Path, home: Path) -> dict[str, str]:
    return {"PYTHONPATH": str(tree / "src"), "MODELCYCLE_HOME": str(home)}


def commit(tree: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(tree), "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=True
    ).stdout.strip()[:90]


def module_file(tree: Path) -> str:
    return subprocess.run(
        [PYTHON, "-c", "import modelcycle; print(modelcycle.__file__)"],
        env={**os.environ, "PYTHONPATH": str(tree / "src")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def prepare(tree: Path, home: Path, models: list[str]) -> dict[str, dict]:
    """Train (and export) with the code of `tree` into `home`; the refs and one request body per model."""
    output = subprocess.run(
        [PYTHON, "-c", PREPARE, str(tree), str(home), ",".join(models)],
        env={**os.environ, **tree_env(tree, home)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def launch(tree: Path, home: Path, ref: str, config: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [PYTHON, "-m", "modelcycle", "serve", ref, "--port", str(port), "--config", str(config)]
    return start(command, f"{url}/v2/health/ready", tree_env(tree, home)), url


def answer(url: str, path: str, body: dict) -> object:
    response = httpx.post(url + path, json=body, timeout=30)
    response.raise_for_status()
    found = response.json()
    if isinstance(found, dict):
        found.pop("id", None)  # v2's and the simple API's request ids differ by design
        found.pop("request_id", None)
    return found


def cpu_seconds(pid: int) -> float:
    """User and system CPU time so far of a server and its descendants (the store's writer)."""
    ticks = 0
    for member in process_tree(pid):
        fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / TICK


def measure(name: str, spec: dict, homes: dict[str, Path], trees: dict[str, Path], work: Path) -> list[str]:
    path, body = spec["path"], spec["body"]
    plan = {  # server → (code version, monitoring)
        "before, off": ("before", "off"),
        "after, off": ("after", "off"),
        "before, on": ("before", "on"),
        "after, on": ("after", "on"),
        CONTROL: ("before", "off"),
    }
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    turns = {server: Turns() for server in plan}
    same: list[str] = []
    try:
        for index, (server, (version, monitoring)) in enumerate(plan.items()):
            config = serve_config(work, name, f"{version}-{monitoring}-{index}", MONITOR[monitoring])
            servers[server] = launch(trees[version], homes[version], spec["ref"], config)
        for monitoring in MONITOR:
            old = answer(servers[f"before, {monitoring}"][1], path, body)
            new = answer(servers[f"after, {monitoring}"][1], path, body)
            ANSWERS[name] = old
            same.append(f"monitoring {monitoring}: " + ("identical" if old == new else f"{old} vs {new}"))
        for process, url in servers.values():
            wrk(url + path, body, BEST, SLICE_SECONDS)  # warm: first batches, the writer started
            pause(process.pid, True)
        order = list(plan)
        for turn in range(TURNS):
            shift = turn % len(order)
            for server in order[shift:] + order[:shift]:
                process, url = servers[server]
                pause(process.pid, False)
                try:
                    total, stolen = cpu_ticks()
                    used = cpu_seconds(process.pid)
                    busy = wrk(url + path, body, BEST, SLICE_SECONDS)
                    used = cpu_seconds(process.pid) - used
                    total_after, stolen_after = cpu_ticks()
                    single = wrk(url + path, body, 1, SLICE_SECONDS)
                finally:
                    pause(process.pid, True)
                measured = turns[server]
                measured.requests_per_second.append(busy.requests_per_second)
                measured.cpu_ms.append(used * 1000 / max(busy.requests_per_second * SLICE_SECONDS, 1))
                measured.received.append(1 - (stolen_after - stolen) / max(total_after - total, 1))
                measured.p50_ms.append(single.p50_ms)
                measured.p99_ms.append(single.p99_ms)
                measured.failed += busy.failed + single.failed
    finally:
        for process, _ in servers.values():
            pause(process.pid, False)
            stop(process)
    lines = [
        f"## {spec['ref']} ({path})",
        "",
        f"Same request to before and after: {'; '.join(same)}.",
        "",
        f"| server | c={BEST} req/s per CPU-second received (turns' range) | raw req/s (range) | "
        f"server CPU ms per request at c={BEST} (range) | CPU stolen | c=1 p50 / p99 ms (median of turns) "
        "| failed |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for server, measured in turns.items():
        corrected, raw, cpu = measured.corrected(), measured.requests_per_second, measured.cpu_ms
        lines.append(
            f"| {server} | {statistics.mean(corrected):.0f} ({min(corrected):.0f}–{max(corrected):.0f}) | "
            f"{statistics.mean(raw):.0f} ({min(raw):.0f}–{max(raw):.0f}) | "
            f"{statistics.mean(cpu):.3f} ({min(cpu):.3f}–{max(cpu):.3f}) | "
            f"{1 - statistics.mean(measured.received):.1%} | "
            f"{statistics.median(measured.p50_ms):.2f} / {statistics.median(measured.p99_ms):.2f} | "
            f"{measured.failed} |"
        )
    lines += [
        "",
        f"| after / before | c={BEST} req/s per CPU-s (per-turn range) | raw req/s (per-turn range) | "
        "server CPU per request (per-turn range) | c=1 p50 (per-turn range) | c=1 p99 (per-turn range) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    pairs = {
        "monitoring off": ("after, off", "before, off"),
        "monitoring on (default)": ("after, on", "before, on"),
        "control: before, off again / before, off": (CONTROL, "before, off"),
    }
    for label, (new, old) in pairs.items():
        cells = []
        for series in (
            Turns.corrected,
            lambda t: t.requests_per_second,
            lambda t: t.cpu_ms,
            lambda t: t.p50_ms,
            lambda t: t.p99_ms,
        ):
            after, before = series(turns[new]), series(turns[old])
            per_turn = [a / b for a, b in zip(after, before, strict=True)]
            whole = (
                statistics.mean(after) / statistics.mean(before)
                if len(cells) < 3
                else statistics.median(after) / statistics.median(before)
            )
            cells.append(f"**{whole:.3f}** ({min(per_turn):.2f}–{max(per_turn):.2f})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    failed = sum(measured.failed for measured in turns.values())
    lines += ["", f"- failed requests: {failed}.", ""]
    print("\n".join(lines), flush=True)
    return lines


def reverse_check(trees: dict[str, Path], work: Path) -> str:
    """The before code serving a bundle the after code trained."""
    home = work / "home-new"
    spec = prepare(trees["after"], home, ["breast-cancer-mlp"])["breast-cancer-mlp"]
    config = serve_config(work, "breast-cancer-mlp", "reverse", MONITOR["off"])
    try:
        process, url = launch(trees["before"], home, spec["ref"], config)
    except RuntimeError as error:
        return f"the before code could not serve a bundle the after code trained: {error}"
    try:
        found = answer(url, spec["path"], spec["body"])
    except httpx.HTTPError as error:
        found = f"failed: {error}"
    finally:
        stop(process)
    same = "the same answer" if found == ANSWERS.get("breast-cancer-mlp") else f"a different answer: {found}"
    return (
        "the before code serves a breast-cancer-mlp bundle that the after code trained (same config, same "
        f"seed), and gives {same} as over the bundle the before code trained"
    )


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    trees = {
        "before": Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/before").resolve(),
        "after": Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/after").resolve(),
    }
    started = time.perf_counter()
    lines = [
        "# The serving path before and after a change (same registry, same machine, alternating turns)",
        "",
        f"Machine: {describe_machine()} · load average {os.getloadavg()[0]:.2f} at the start",
        "",
    ]
    for version, tree in trees.items():
        lines.append(f"- {version}: `{commit(tree)}` — `modelcycle` imported from `{module_file(tree)}`")
    lines += [
        "",
        f"wrk, one thread, {TURNS} turns per server of {SLICE_SECONDS} s at c={BEST} then "
        f"{SLICE_SECONDS} s at c=1, one row per request, 127.0.0.1; the servers not measured are paused "
        "(SIGSTOP). Monitoring on: "
        "the defaults (predictions counted, requests stored up to 500 a second) with the rounds' interval "
        "pushed out (`interval_s: 86400`), as bench_monitor.py does. The registry home was written by the "
        "before code and copied once per version.",
        "",
    ]
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        specs = prepare(trees["before"], work / "home", ["breast-cancer-mlp", "digits-cnn"])
        homes = {}
        for version in trees:
            homes[version] = work / f"home-{version}"
            shutil.copytree(work / "home", homes[version])
        print(f"prepared in {time.perf_counter() - started:.0f} s", flush=True)
        for name, spec in specs.items():
            lines += measure(name, spec, homes, trees, work)
        lines += [f"- compatibility: {reverse_check(trees, work)}", ""]
    lines.append(
        f"Whole run: {time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.2f} at the end."
    )
    (ROOT / "benchmarks" / "results" / "refactor.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
