"""A server in a background thread of this process, on 127.0.0.1 and a free port: for the demo, and for
tools that drive a server they started themselves. Stopped gracefully (requests drain) on exit, including
on Ctrl-C."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from modelcycle.errors import OverloadedError


@contextlib.contextmanager
def background_server(app: FastAPI, *, ready_timeout_s: float = 120.0) -> Iterator[str]:
    """Run ``app`` until the block ends; yields its base URL once every model is loaded."""
    import httpx

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="modelcycle-server", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            try:
                if server.started and httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        else:
            raise OverloadedError(f"{url}: the server was not ready within {ready_timeout_s:g} s")
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
