"""Typed JSON files of a bundle (``preprocess.json``, ``reference.json``): pydantic models that are written
through ``to_json`` and read through ``read``, which names the file and the field of any value that does not
fit, so a damaged or hand-edited file fails on open with one line instead of a KeyError deep in a stage."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from modelcycle.errors import BundleError

ContractT = TypeVar("ContractT", bound="Contract")


class Contract(BaseModel):
    """A JSON file's model: unknown fields are refused (a typo is an error, not a silently ignored key)."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def read(cls: type[ContractT], raw: Any, source: str) -> ContractT:
        """``raw`` (parsed JSON) as this model; ``source`` (e.g. ``bundle/preprocess.json``) is named in the
        BundleError with the dotted path of the first field that does not fit."""
        try:
            return cls.model_validate(raw)
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "the top level"
            raise BundleError(
                f"{source}: {field}: {first['msg']}",
                hint=f"the file does not fit {cls.__name__}; rebuild the bundle or restore the file",
            ) from None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready values; fields left unset (None) are omitted, as the files always omitted them."""
        return self.model_dump(mode="json", exclude_none=True)
