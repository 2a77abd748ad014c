"""What Ray users write today: a Ray Serve deployment that serves the model with ``@serve.batch`` behind Ray's
HTTP proxy, on the Open Inference Protocol v2 infer route (JSON tensors only), so that the same request body
reaches it as reaches ``modelcycle serve --ray``. The model comes from modelcycle's own loader
(``modelcycle.runtime.load_model``), as in the other hand-written servers here.

This file is a driver as well: run on a machine of a running cluster, it starts Serve's proxy on HOST:PORT (if
Serve is not running there yet), deploys the application, prints ``serving on http://HOST:PORT`` and keeps it
until SIGINT or SIGTERM, then deletes it — the way ``modelcycle serve --ray`` behaves, so the benchmark
drives both alike.

Run: python benchmarks/servers/ray_serve_batch.py ADDRESS BUNDLE_DIR VARIANT REPLICAS PORT
"""

# No `from __future__ import annotations`: FastAPI reads the route's annotations (``request: Request``) at
# run time, and in the replica (the class travels by value from ``__main__``) string annotations do not
# resolve, so the request would be taken for a query parameter (422).
import argparse
import logging
import signal
import threading
from types import FrameType
from typing import Any

import numpy as np
import ray
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

APPLICATION = "handwritten"
MAX_BATCH_SIZE = 32  # as ours (serve.max_batch_size)
BATCH_WAIT_S = 0.002  # as ours (serve.max_queue_delay_ms)
MAX_ONGOING = 288  # as ours: max_queue + max_batch_size, so Ray's own bound is never the limit here
V2_DTYPES = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "int32": "INT32"}

app = FastAPI()


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=MAX_ONGOING)
@serve.ingress(app)
class Handwritten:
    """One replica: the network of ``variant``, fed batches that ``@serve.batch`` gathers from requests."""

    def __init__(self, bundle_dir: str, variant: str) -> None:
        from modelcycle.bundle import Bundle
        from modelcycle.runtime import load_model

        bundle = Bundle(bundle_dir)
        self.model = load_model(bundle, variant)
        self.dtypes = [np.dtype(spec.dtype) for spec in bundle.manifest.inputs.tensors]
        self.output = bundle.manifest.outputs.tensors[0].name

    @app.get("/v2/health/ready")
    def ready(self) -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v2/models/{name}/infer")
    async def infer(self, name: str, request: Request) -> JSONResponse:
        body = await request.json()
        inputs = body["inputs"]
        if len(inputs) != len(self.dtypes):
            return JSONResponse({"error": f"expected {len(self.dtypes)} inputs"}, status_code=400)
        arrays = [
            np.asarray(item["data"], dtype=dtype).reshape(item["shape"])
            for item, dtype in zip(inputs, self.dtypes, strict=True)
        ]
        outputs = await self.batched(arrays)
        return JSONResponse(
            {
                "model_name": name,
                "id": body.get("id", ""),
                "outputs": [
                    {
                        "name": self.output,
                        "shape": list(outputs.shape),
                        "datatype": V2_DTYPES.get(str(outputs.dtype), "FP32"),
                        "data": outputs.ravel().tolist(),
                    }
                ],
            }
        )

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def batched(self, requests: list[list[np.ndarray]]) -> list[np.ndarray]:
        """Each request's tensors, concatenated on the row axis, one forward pass, split back per request."""
        rows = [arrays[0].shape[0] for arrays in requests]
        tensors = [
            torch.from_numpy(np.concatenate([arrays[index] for arrays in requests]))
            for index in range(len(self.dtypes))
        ]
        with torch.inference_mode():
            outputs = self.model(*tensors).numpy()
        return np.split(outputs, np.cumsum(rows)[:-1])


def main() -> None:
    """Deploy, say where it answers, keep it until interrupted, delete it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="the cluster's head, HOST:PORT")
    parser.add_argument("bundle", help="the version's bundle folder (read by every replica)")
    parser.add_argument("variant", help="the variant to load: base or a variant's name")
    parser.add_argument("replicas", type=int)
    parser.add_argument("port", type=int, help="the proxy's port (if Serve is not running yet)")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()

    stop = threading.Event()

    def interrupted(_signal: int, _frame: FrameType | None) -> None:
        stop.set()

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, interrupted)
    ray.init(address=args.address, logging_level=logging.WARNING, log_to_driver=False)
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        deployment: Any = Handwritten  # a ray.serve Deployment (the decorator's type is not visible to mypy)
        serve.run(
            deployment.options(num_replicas=args.replicas).bind(args.bundle, args.variant),
            name=APPLICATION,
            route_prefix="/",
        )
        try:
            client = serve.context._get_global_client()  # where the proxy really is: set by the first start
            options = client.get_serve_details().get("http_options", {}) if client is not None else {}
            host, port = options.get("host", args.host), options.get("port", args.port)
            print(f"serving on http://{host}:{port} through Ray Serve", flush=True)
            while not stop.wait(1.0):
                pass
        finally:
            serve.delete(APPLICATION)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
