"""A local Ray cluster for tests and benchmarks of ``modelcycle serve --ray``: nodes on 127.0.0.1, each a
``ray start --block`` in the foreground, ended by SIGTERM, which stops that node's processes and nothing else
(``ray stop`` would end every Ray process of the user on the machine, and it matches process names such as
``monitor.py``). Needs the ``ray`` extra's command beside the running Python; imports nothing of Ray."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

RAY = Path(sys.executable).with_name("ray")
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0


@contextlib.contextmanager
def local_ray_cluster(nodes: int = 2, cpus_per_node: int = 1) -> Iterator[str]:
    """``nodes`` Ray nodes on 127.0.0.1 (the first the head, without its dashboard); yields the head's
    ``HOST:PORT`` once every node runs, and ends them all afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus_per_node), "--block"]
    head = ["--head", "--port", address.rsplit(":", 1)[1], "--include-dashboard", "false"]
    head += ["--disable-usage-stats"]
    started: list[subprocess.Popen[str]] = []
    try:
        for index in range(nodes):
            role = head if index == 0 else ["--address", address]
            node = subprocess.Popen(
                [str(RAY), "start", *role, *common],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            started.append(node)
            wait_for_line(node, "block forever", timeout_s=START_TIMEOUT_S)
        yield address
    finally:
        for node in reversed(started):
            node.terminate()
            try:
                node.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                node.kill()


def wait_for_line(
    process: subprocess.Popen[str], wanted: str, *, timeout_s: float, output: list[str] | None = None
) -> None:
    """Read ``process``'s output (into ``output``) until a line contains ``wanted``, and go on draining it
    afterwards so the process never blocks on a full pipe; after ``timeout_s`` without it, kill the process
    and raise ``AssertionError`` with what it printed."""
    assert process.stdout is not None
    stream = process.stdout
    lines = output if output is not None else []
    found = threading.Event()

    def read() -> None:
        for line in stream:
            lines.append(line)
            if wanted in line:
                found.set()

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(timeout_s):
        process.kill()
        raise AssertionError(f"'{wanted}' never printed:\n{''.join(lines)}")
