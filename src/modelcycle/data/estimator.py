"""scikit-learn's estimator convention, which every fitted preprocessor follows: constructor arguments are
stored as given, learned attributes end in ``_``, and both serialise to JSON."""

from __future__ import annotations

from typing import Any


def vars_of(instance: object, *, learned: bool) -> dict[str, Any]:
    """Constructor arguments (``learned=False``) or fitted attributes (``learned=True``) of an estimator;
    private attributes (loaded resources such as a tokenizer) are neither."""
    return {
        key: value
        for key, value in vars(instance).items()
        if not key.startswith("_") and key.endswith("_") == learned
    }
