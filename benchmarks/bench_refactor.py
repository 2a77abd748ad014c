"""The serving path before and after a change, side by side in one run: one `modelcycle serve` from each of
two source trees (git worktrees; each server runs with ``PYTHONPATH=<tree>/src``, which shadows the
editable install), each over its own copy of one registry home written by the *before* code (so the after
code must load bundles the before code wrote), monitoring off and on with its defaults (the store writes;
the rounds' interval is pushed out as in bench_monitor.py, whose rounds are priced apart), plus a second
"before, off" server as a control: what the method reads into two identical servers.

- breast-cancer-mlp over the simple JSON API (30 named features, one row per request);
- digits-cnn over the Open Inference Protocol v2 (its ONNX export, one image per request).

Servers are compared in pairs (before / after with monitoring off, the same with it on, and the control), one
pair at a time with nothing else running: the two take turns in alternating order (A B, B A, ...), each turn
one slice at c=64 and one at c=1 while the other is paused with SIGSTOP (its store writer too). An earlier
form ran all five servers of a model at once in rotating turns; its per-turn ratios spread 0.7-1.3 and its
controls read 0.91-1.04, too wide for a 5 % question. Each slice's throughput is also divided by the share of
CPU time the VM received in it (/proc/stat steal). Ratios after/before are taken turn by turn (the two slices
were seconds apart), and reported as the mean of the turns' means with the range of the per-turn ratios.
Before the turns, both servers answer the same request and the answers are compared; and the before code
serves a breast-cancer-mlp bundle that the after code trained (the other direction of compatibility).

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
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_monitor import BEST, NO_ROUNDS, Turns, alternating_turns, serve_config, stop_all
from bench_serve import PYTHON, ROOT, free_port, start, stop
from machine import describe_machine

TURNS = 12
SLICE_SECONDS = 3
MONITOR = {"off": "enabled: false", "on": "enabled: true" + NO_ROUNDS}
Server = tuple[str, str]  # (code version, monitoring)
PAIRS: dict[str, tuple[Server, Server]] = {  # label → (baseline, measured against it)
    "monitoring off": (("before", "off"), ("after", "off")),
    "monitoring on (default)": (("before", "on"), ("after", "on")),
    "control: before, off again / before, off": (("before", "off"), ("before", "off")),
}
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


def launch_pair(
    pair: tuple[Server, Server],
    spec: dict,
    homes: dict[str, Path],
    trees: dict[str, Path],
    work: Path,
    name: str,
) -> dict[str, tuple[subprocess.Popen[bytes], str]]:
    servers = {}
    for index, (version, monitoring) in enumerate(pair):
        config = serve_config(work, name, f"{version}-{monitoring}-{index}", MONITOR[monitoring])
        control = "" if pair[0] != pair[1] else " (control, again)" if index else " (control)"
        servers[f"{version}, {monitoring}{control}"] = launch(
            trees[version], homes[version], spec["ref"], config
        )
    return servers


def measure(name: str, spec: dict, homes: dict[str, Path], trees: dict[str, Path], work: Path) -> list[str]:
    """Each pair of servers on its own (the others stopped), in alternating turns (A B, B A, ...)."""
    path, body = spec["path"], spec["body"]
    turns: dict[str, Turns] = {}
    same: list[str] = []
    ratios: dict[str, tuple[str, str]] = {}
    for label, pair in PAIRS.items():
        servers = launch_pair(pair, spec, homes, trees, work, name)
        try:
            (first, (_, first_url)), (second, (_, second_url)) = servers.items()
            ratios[label] = (second, first)
            if pair[0][0] != pair[1][0]:
                old, new = answer(first_url, path, body), answer(second_url, path, body)
                ANSWERS[name] = old
                same.append(f"{label}: " + ("identical" if old == new else f"{old} vs {new}"))
            turns |= alternating_turns(servers, path, body, TURNS, SLICE_SECONDS)
        finally:
            stop_all(servers)
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
    for label, (new, old) in ratios.items():
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
        f"wrk, one thread, {TURNS} alternating turns per server of a pair, each {SLICE_SECONDS} s at "
        f"c={BEST} then {SLICE_SECONDS} s at c=1, one row per request, 127.0.0.1; one pair at a time, the "
        "server not measured paused (SIGSTOP). Monitoring on: "
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
