"""A content fingerprint of a dataset for lineage: the same rows hash the same wherever they came from."""

from __future__ import annotations

import hashlib

import pandas as pd

from modelcycle.data.dataset import Dataset


def fingerprint(dataset: Dataset) -> str:
    """sha256 over column names, dtypes, every cell (pandas' stable row hashes) and image bytes."""
    digest = hashlib.sha256()
    digest.update(repr([(str(name), str(dtype)) for name, dtype in dataset.frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(dataset.frame, index=False).to_numpy().tobytes())
    if dataset.images is not None:
        digest.update(repr(dataset.images.shape).encode())
        digest.update(dataset.images.tobytes())
    return digest.hexdigest()
