"""What monitoring costs a request: the same server with monitoring off (`monitor.enabled: false`), on with
its defaults (predictions counted; requests stored with PII masking up to 500 a second, the rest sampled
out), and on with every request stored (`max_records_per_s: null`), side by side in one run, with a second
"off" server as a control: its "loss" is what the method reads into no difference at all.

The servers run at once and take turns: many short slices of load, in rotating order, each server paused
(SIGSTOP, with its writer process) while another is measured, so a neighbour's background work never lands
on a rival's slice and slow drift of the machine falls on every mode alike. Fast drift remains: on a
shared VM the hypervisor steals 0-25 % of the CPUs' time (/proc/stat), changing within seconds, so each
slice's throughput is divided by the share of CPU time the VM received in it (requests per CPU-second
received; the raw figures stand beside). Pausing would bunch the monitoring rounds (quality, drift,
alerts: every `interval_s`, 30 s by default, of wall time) into the "on" servers' slices, so they are off
during the slices and priced on their own: one more server stores a load's requests, runs a round over
them, and the round's seconds over the interval are added to the loss. wrk, one thread, 127.0.0.1.

- digits-cnn over the Open Inference Protocol (HTTP-bound: the worst case for any per-request work);
- breast-cancer-mlp over the simple JSON API (30 named features per row, stored as sent).

The store is a SQLite file, and in the same run a PostgreSQL database (a throwaway server on this machine,
started with the tests' `.ci/postgres`, one database a server): what servers on several machines share.
The PostgreSQL server is not paused (it is no server's child): its CPU time is not in a server's CPU per
request, but it competes for the same cores during every slice, as a database on the same machine would.
Alongside, the insert rate of a 2,000-row batch (the writer's transaction) on each backend.

Goal: ≤ 5 % throughput lost at the best concurrency, ≤ 1 ms added to p50 at concurrency 1.

Run: .venv/bin/python benchmarks/bench_monitor.py  → benchmarks/results/monitor.md   (needs `wrk`, and
Debian's postgresql for the PostgreSQL rows); `--slices 4 --models breast-cancer-mlp` for a short run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import PYTHON, ROOT, free_port, start, stop, wrk
from machine import describe_machine

from modelcycle.config import load_config
from modelcycle.export import export_onnx
from modelcycle.monitor.database import open_database
from modelcycle.monitor.predictions import PREDICTION_COLUMNS
from modelcycle.pipeline import train
from modelcycle.predictor import training_split
from modelcycle.registry import Registry

SLICES = 16  # turns per server (--slices): one slice at c=64 and one at c=1 each
SLICE_SECONDS = 3  # --slice-seconds
BEST = 64  # the concurrency throughput is judged at (the best one for both models in serve.md)
CONTROL = "off again (control)"
DEFAULT = "on (default: every request up to 500 a second stored)"
TICK = os.sysconf("SC_CLK_TCK")
NO_ROUNDS = "\n  interval_s: 86400"  # the rounds are priced apart (see the module docstring)
MODES = {  # by its key for --modes: what its row says, its monitor section, where its store is
    "off": ("off", "enabled: false", "sqlite"),
    "control": (CONTROL, "enabled: false", "sqlite"),
    "default": (DEFAULT, "enabled: true" + NO_ROUNDS, "sqlite"),
    "every": ("on, every request stored", "max_records_per_s: null" + NO_ROUNDS, "sqlite"),
    "default-postgres": ("on (default), the store on PostgreSQL", "enabled: true" + NO_ROUNDS, "postgres"),
    "every-postgres": (
        "on, every request stored, on PostgreSQL",
        "max_records_per_s: null" + NO_ROUNDS,
        "postgres",
    ),
}
POSTGRES_SCRIPT = ROOT / ".ci" / "postgres"
BATCH_ROWS = 2000  # the writer's batch (store.BATCH_RECORDS)
ROUND_INTERVAL_S = 30.0  # MonitorConfig's default interval_s, which the round's share is taken against


@dataclass
class Turns:
    """What one server measured over its slices."""

    requests_per_second: list[float] = field(default_factory=list)  # at c=BEST, one per slice
    received: list[float] = field(default_factory=list)  # the share of CPU time not stolen, per slice
    cpu_ms: list[float] = field(default_factory=list)  # the server's CPU time per request at c=BEST
    p50_ms: list[float] = field(default_factory=list)  # at c=1
    p99_ms: list[float] = field(default_factory=list)
    failed: int = 0

    def corrected(self) -> list[float]:
        """Throughput per CPU-second the VM received (the hypervisor's steal taken out)."""
        return [rate / share for rate, share in zip(self.requests_per_second, self.received, strict=True)]


def one_slice(
    process: subprocess.Popen[bytes], url: str, body: dict, seconds: float, measured: Turns
) -> None:
    """One turn of a paused server: resumed, ``seconds`` at c=BEST then at c=1, paused again; its
    throughput, its CPU time per request (its store writer's too) and the VM's steal go into ``measured``."""
    pause(process.pid, False)
    try:
        total, stolen = cpu_ticks()
        used = cpu_seconds(process.pid)
        busy = wrk(url, body, BEST, seconds)
        used = cpu_seconds(process.pid) - used
        total_after, stolen_after = cpu_ticks()
        single = wrk(url, body, 1, seconds)
    finally:
        pause(process.pid, True)
    measured.requests_per_second.append(busy.requests_per_second)
    measured.cpu_ms.append(used * 1000 / max(busy.requests_per_second * seconds, 1))
    measured.received.append(1 - (stolen_after - stolen) / max(total_after - total, 1))
    measured.p50_ms.append(single.p50_ms)
    measured.p99_ms.append(single.p99_ms)
    measured.failed += busy.failed + single.failed


def alternating_turns(
    servers: dict[str, tuple[subprocess.Popen[bytes], str]], path: str, body: dict, turns: int, seconds: float
) -> dict[str, Turns]:
    """Every server warmed and paused, then ``turns`` rounds in which each takes a slice, in alternating
    order (A B, B A, ...), the others paused."""
    measured = {name: Turns() for name in servers}
    for process, url in servers.values():
        wrk(url + path, body, BEST, seconds)  # warm: first batches, the writer started
        pause(process.pid, True)
    order = list(servers)
    for turn in range(turns):
        for name in order if turn % 2 == 0 else order[::-1]:
            process, url = servers[name]
            one_slice(process, url + path, body, seconds, measured[name])
    return measured


def stop_all(servers: dict[str, tuple[subprocess.Popen[bytes], str]]) -> None:
    """Resume every paused server (a stopped process ignores SIGTERM) and stop it."""
    for process, _ in servers.values():
        pause(process.pid, False)
        stop(process)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time so far of a server and its descendants (the store's writer)."""
    ticks = 0
    for member in process_tree(pid):
        fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / TICK


def losses(measured: Turns, off: Turns) -> tuple[float, float]:
    """Throughput lost against "off": per CPU-second received, and raw."""
    corrected = 1 - statistics.mean(measured.corrected()) / statistics.mean(off.corrected())
    raw = 1 - statistics.mean(measured.requests_per_second) / statistics.mean(off.requests_per_second)
    return corrected, raw


class Stores:
    """Where each server's store goes: a SQLite file in ``directory``, or a database of its own on the
    PostgreSQL server at ``postgres`` (its maintenance database's URL)."""

    def __init__(self, directory: Path, postgres: str) -> None:
        self.directory, self.postgres = directory, postgres

    def location(self, name: str, backend: str) -> str:
        if backend == "sqlite":
            return f"{self.directory / name}.db"
        import psycopg

        database = f"bench_{name.replace('-', '_')}"
        admin = self.postgres.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}"')
            connection.execute(f'CREATE DATABASE "{database}"')
        return self.postgres.rsplit("/", 1)[0] + f"/{database}"


def serve_config(directory: Path, example: str, name: str, monitor: str, store: str) -> Path:
    path = directory / f"{example}-{name}.yaml"
    text = (ROOT / "examples" / f"{example}.yaml").read_text()
    path.write_text(text + f"\nmonitor:\n  {monitor}\n  store: {store}\n")
    return path


def serve(registry: Registry, ref: str, config: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [PYTHON, "-m", "modelcycle", "serve", ref, "--port", str(port), "--config", str(config)]
    home = {"MODELCYCLE_HOME": str(registry.home)}
    return start(command, f"http://127.0.0.1:{port}/v2/health/ready", home), f"http://127.0.0.1:{port}"


def process_tree(pid: int) -> list[int]:
    """The server and its descendants (the store's writer runs in a session of its own)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += process_tree(int(child))
    return found


def cpu_ticks() -> tuple[int, int]:
    """All CPUs' ticks so far and those stolen by the hypervisor (the first line of /proc/stat)."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(ticks), ticks[7]


def pause(pid: int, paused: bool) -> None:
    for member in process_tree(pid):
        os.kill(member, signal.SIGSTOP if paused else signal.SIGCONT)


def round_seconds(
    registry: Registry, ref: str, example: str, path: str, body: dict, stores: Stores, backend: str
) -> float:
    """Seconds one monitoring round takes over what a load just stored (the server idle meanwhile)."""
    name = f"{example}-round-{backend}"
    store = stores.location(name, backend)
    config = serve_config(stores.directory, example, name, "interval_s: 2", store)
    process, url = serve(registry, ref, config)
    try:
        for _ in range(3):  # ~9 s: the drift window's 2,000 newest rows even at a few hundred a second
            wrk(url + path, body, BEST, SLICE_SECONDS)
        time.sleep(5)  # a round after the load, and its successor over the same rows on an idle server
        metrics = httpx.get(url + "/metrics").text
    finally:
        stop(process)
    return float(re.search(r"^modelcycle_monitor_round_seconds ([\d.e+-]+)$", metrics, re.M).group(1))


def measure(
    registry: Registry,
    ref: str,
    example: str,
    path: str,
    body: dict,
    stores: Stores,
    plan: tuple[list[str], int, float],
) -> list[str]:
    """Every mode of ``plan`` (its keys in MODES, "off" first; slices; seconds a slice) side by side."""
    keys, slices, seconds = plan
    modes = {MODES[key][0]: MODES[key][1:] for key in keys}
    servers = {}
    try:
        for index, (mode, (monitor, backend)) in enumerate(modes.items()):
            store = stores.location(f"{example}-{index}", backend)
            config = serve_config(stores.directory, example, str(index), monitor, store)
            servers[mode] = serve(registry, ref, config)
            wrk(servers[mode][1] + path, body, BEST, seconds)  # warm: first batches, the writer started
            pause(servers[mode][0].pid, True)
        turns = {mode: Turns() for mode in modes}
        for slice_index in range(slices):
            shift = slice_index % len(modes)  # each mode takes each place in a turn equally often
            for mode in [*modes][shift:] + [*modes][:shift]:
                process, url = servers[mode]
                one_slice(process, url + path, body, seconds, turns[mode])
    finally:
        stop_all(servers)
    rounds = {
        backend: round_seconds(registry, ref, example, path, body, stores, backend)
        for backend in ("sqlite", "postgres")
    }
    lines = [
        f"## {ref} ({path})",
        "",
        f"| monitoring | c={BEST}: req/s per CPU-second received (slices' range) | raw req/s (range) | "
        "CPU stolen | c=1: p50 / p99 ms (median of slices) | loss |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    off = turns["off"]
    lost = {mode: losses(measured, off) for mode, measured in turns.items()}
    for mode, measured in turns.items():
        loss, raw_loss = lost[mode]
        corrected = measured.corrected()
        lines.append(
            f"| {mode} | {statistics.mean(corrected):.0f} ({min(corrected):.0f}–{max(corrected):.0f}) | "
            f"{statistics.mean(measured.requests_per_second):.0f} ({min(measured.requests_per_second):.0f}–"
            f"{max(measured.requests_per_second):.0f}) | {1 - statistics.mean(measured.received):.1%} | "
            f"{statistics.median(measured.p50_ms):.2f} / {statistics.median(measured.p99_ms):.2f} | "
            f"{'' if mode == 'off' else f'{loss:+.1%} (raw {raw_loss:+.1%})'} |"
        )
    lines.append("")
    p50_off = statistics.median(off.p50_ms)
    for mode, (_, backend) in list(modes.items())[1:]:
        loss, raw_loss = lost[mode]
        if mode == CONTROL:
            lines.append(
                f"- {mode}: {loss:+.1%} (raw {raw_loss:+.1%}): what the method reads into two identical "
                "servers, the noise floor."
            )
            continue
        p50 = statistics.median(turns[mode].p50_ms)
        round_share = rounds[backend] / ROUND_INTERVAL_S
        lines.append(
            f"- {mode}: **{loss + round_share:.1%} throughput lost** ({loss:.1%} on the request path + "
            f"{round_share:.1%} for the rounds; raw {raw_loss + round_share:.1%}; goal ≤ 5 %); p50 at c=1 "
            f"{p50:.3f} ms vs {p50_off:.3f} → **{(p50 - p50_off) * 1000:+.0f} µs** (goal ≤ 1 ms)."
        )
    failed = sum(measured.failed for measured in turns.values())
    lines += [
        f"- a monitoring round (live quality, drift over the newest 2,000 stored rows, alerts) took "
        f"{rounds['sqlite'] * 1000:.0f} ms on SQLite, {rounds['postgres'] * 1000:.0f} ms on PostgreSQL: "
        f"{rounds['sqlite'] / ROUND_INTERVAL_S:.1%} and {rounds['postgres'] / ROUND_INTERVAL_S:.1%} of the "
        f"time at the default interval of {ROUND_INTERVAL_S:.0f} s.",
        f"- failed requests: {failed}.",
        "",
    ]
    return lines


def insert_rates(stores: Stores, batches: int = 7) -> dict[str, float]:
    """Rows a second one 2,000-row batch of breast-cancer-like records (30 features as JSON) goes in at,
    the median of ``batches``, on each backend: the writer's transaction."""
    features = ",".join(f'"feature {index}": {index * 1.2345:.4f}' for index in range(30))
    rates = {}
    for backend in ("sqlite", "postgres"):
        times = []
        with open_database(stores.location("inserts", backend)) as database:
            for batch in range(batches):
                rows = [
                    (
                        f"{batch:04d}-{row:06d}",
                        0,
                        "m",
                        1,
                        "v1",
                        time.time(),
                        1.5,
                        f"{{{features}}}",
                        "benign",
                        0.93,
                        "[0.07,0.93]",
                    )
                    for row in range(BATCH_ROWS)
                ]
                assert len(rows[0]) == len(PREDICTION_COLUMNS)
                started = time.perf_counter()
                database.append(rows)
                times.append(time.perf_counter() - started)
        rates[backend] = BATCH_ROWS / statistics.median(times)
    return rates


def postgres_server(folder: Path) -> str:
    """Start a throwaway PostgreSQL server (the tests' script) with its data in ``folder``: its URL."""
    started = subprocess.run([str(POSTGRES_SCRIPT), "start", str(folder)], capture_output=True, text=True)
    if started.returncode != 0:
        sys.exit(f"no PostgreSQL server: {started.stderr.strip()}")
    return started.stdout.strip()


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--slices", type=int, default=SLICES, help="turns per server")
    options.add_argument("--slice-seconds", type=float, default=SLICE_SECONDS)
    options.add_argument(
        "--models",
        nargs="+",
        default=["digits-cnn", "breast-cancer-mlp"],
        choices=["digits-cnn", "breast-cancer-mlp"],
    )
    # each server holds ~450 MB: where memory is short, fewer modes side by side ("off" is always first)
    options.add_argument("--modes", nargs="+", default=list(MODES)[1:], choices=list(MODES)[1:])
    arguments = options.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    started = time.perf_counter()
    lines = ["# Monitoring on vs off", "", f"Machine: {describe_machine()}", ""]
    lines += [
        f"wrk, one thread, {arguments.slices} slices of {arguments.slice_seconds:g} s per server and "
        "concurrency, one row per request, 127.0.0.1. Monitoring on: predictions counted "
        "by class; requests stored (SQLite WAL, or PostgreSQL; PII masking of strings) up to the records "
        "budget (default 500 a second), the rest sampled out and counted. The server decodes and "
        "serialises each 0.2 s of records in a thread; a writer process masks and writes them.",
        "",
    ]
    # directly under /tmp: run as root, the database server runs as the postgres user, who must enter it
    folder = Path(tempfile.mkdtemp(prefix="modelcycle-bench-postgres-"))
    try:
        with tempfile.TemporaryDirectory() as home:
            stores = Stores(Path(home), postgres_server(folder))
            rates = insert_rates(stores)
            lines += [
                f"Insert rate, one {BATCH_ROWS}-row batch a transaction (median of 7): SQLite "
                f"{rates['sqlite']:,.0f} rows/s, PostgreSQL {rates['postgres']:,.0f} rows/s "
                "(COPY into a temporary table, then one upsert).",
                "",
            ]
            registry = Registry(Path(home))
            measured = (["off", *arguments.modes], arguments.slices, arguments.slice_seconds)
            if "digits-cnn" in arguments.models:
                digits = train(load_config(ROOT / "examples" / "digits-cnn.yaml"), registry)
                assert digits is not None
                export_onnx(registry.open(digits.ref))
                pixels = training_split(registry.open(digits.ref), "test").images[0]
                v2 = {
                    "inputs": [
                        {
                            "name": "image",
                            "shape": [1, *pixels.shape],
                            "datatype": "FP32",
                            "data": pixels.ravel().tolist(),
                        }
                    ]
                }
                lines += measure(
                    registry, digits.ref, "digits-cnn", "/v2/models/digits-cnn/infer", v2, stores, measured
                )
            if "breast-cancer-mlp" in arguments.models:
                mlp = train(load_config(ROOT / "examples" / "breast-cancer-mlp.yaml"), registry)
                assert mlp is not None
                dataset = training_split(registry.open(mlp.ref), "test")
                simple = {"instances": [dataset.frame[dataset.features].iloc[0].to_dict()]}
                path = "/v1/models/breast-cancer-mlp:predict"
                lines += measure(registry, mlp.ref, "breast-cancer-mlp", path, simple, stores, measured)
    finally:
        subprocess.run([str(POSTGRES_SCRIPT), "stop", str(folder)], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
    lines.append(f"Whole run: {time.perf_counter() - started:.0f} s.")
    (ROOT / "benchmarks" / "results" / "monitor.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
