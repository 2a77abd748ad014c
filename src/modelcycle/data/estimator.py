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


class Estimator:
    """Base of every fitted preprocessor: ``state()`` is its kind, constructor arguments and learned
    attributes, which ``preprocessor_from_state`` turns back into an equal object."""

    kind: str

    def state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "params": vars_of(self, learned=False),
            "learned": vars_of(self, learned=True),
        }
