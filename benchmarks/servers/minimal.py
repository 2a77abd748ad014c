"""What users write today: a FastAPI endpoint that runs the model once per request (no batching). With
``--noop`` it runs no model at all — the HTTP stack's own limit on this machine.

Run: python benchmarks/servers/minimal.py BUNDLE_DIR PORT
  or python benchmarks/servers/minimal.py --noop PORT
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, Request

app = FastAPI()


def main() -> None:
    if sys.argv[1] == "--noop":
        port = int(sys.argv[2])

        @app.post("/predict")
        async def noop(request: Request) -> dict[str, list[float]]:
            await request.json()
            return {"outputs": [0.0]}

    else:
        from modelcycle.bundle import Bundle
        from modelcycle.runtime import load_model

        bundle = Bundle(sys.argv[1])
        port = int(sys.argv[2])
        model = load_model(bundle)
        dtypes = [np.dtype(spec.dtype) for spec in bundle.manifest.inputs.tensors]

        @app.post("/predict")
        def predict(body: dict[str, list[list[object]]]) -> dict[str, list[list[float]]]:
            tensors = [
                torch.from_numpy(np.asarray(rows, dtype=dtype))
                for rows, dtype in zip(body["inputs"], dtypes, strict=True)
            ]
            with torch.inference_mode():
                return {"outputs": model(*tensors).tolist()}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
