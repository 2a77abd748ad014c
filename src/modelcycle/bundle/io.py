"""Reading and writing bundles on disk: atomic (temp dir beside the target, fsync, rename), hashed (sha256 of
every file, checked on load), and pickle-free (safetensors for tensors, JSON for the rest)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
from pydantic import BaseModel, ValidationError
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from modelcycle.bundle.files import (
    TEMP_PREFIX,
    atomic_directory,
    fsync_path,
    fsync_tree,
    hash_files,
    new_temp_directory,
    publish,
    sha256_file,
    write_json_atomic,
)
from modelcycle.bundle.manifest import FORMAT_VERSION, BundleManifest, VariantManifest
from modelcycle.errors import BundleError, NotFoundError

MANIFEST = "bundle.json"
VARIANT_MANIFEST = "variant.json"
VARIANTS_DIR = "variants"
REPORT = "report.html"  # derived (it shows variants measured later): rewritten, not part of the hash
WEIGHTS = "weights.safetensors"

M = TypeVar("M", bound=BaseModel)


ALIASES = "modelcycle.aliases"  # safetensors metadata: {tied key: the key whose tensor it shares}


def save_weights(state_dict: dict[str, torch.Tensor], path: Path) -> None:
    """Save a state dict as safetensors. A tensor that is another's very storage (tied weights, e.g. a
    language model's embedding and output layer) is stored once and recorded as an alias."""
    first_key: dict[tuple[int, int, tuple[int, ...]], str] = {}
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for key, tensor in state_dict.items():
        identity = (tensor.untyped_storage().data_ptr(), int(tensor.storage_offset()), tuple(tensor.shape))
        if identity in first_key:
            aliases[key] = first_key[identity]
            continue
        first_key[identity] = key
        tensors[key] = tensor.detach().to("cpu").contiguous()
    save_file(tensors, str(path), metadata={ALIASES: json.dumps(aliases)} if aliases else None)


def load_weights(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A state dict saved by ``save_weights``, with tied keys pointing at the same tensor again."""
    tensors = load_file(str(path), device=str(device))
    with safe_open(str(path), framework="pt") as stream:
        metadata = stream.metadata() or {}
    for alias, original in json.loads(metadata.get(ALIASES, "{}")).items():
        tensors[alias] = tensors[original]
    return tensors


def manifest_text(manifest: BaseModel) -> str:
    """The exact text of a manifest file (deterministic, so its sha256 can be known before it is written)."""
    return manifest.model_dump_json(indent=2) + "\n"


def _read_manifest(path: Path, model: type[M], *, sha256: str | None = None) -> M:
    """The manifest at ``path``, read once; with ``sha256`` (what it hashed to when it was registered) an
    edited manifest is refused before it is parsed."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{path.parent}: not a bundle ({path.name} is missing)") from None
    except OSError as error:
        raise BundleError(f"{path}: unreadable manifest ({error})") from None
    if sha256 is not None and hashlib.sha256(text).hexdigest() != sha256:
        raise BundleError(
            f"{path}: sha256 differs from the registry's record, the manifest was modified after the "
            "version was registered",
            hint="restore bundle.json or re-register the model",
        )
    try:
        raw = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{path}: unreadable manifest ({error})") from None
    found = raw.get("format_version") if isinstance(raw, dict) else None
    if not isinstance(found, int):
        raise BundleError(f"{path}: format_version is missing or not an integer")
    if found > FORMAT_VERSION:
        raise BundleError(
            f"{path}: format_version {found} is newer than this modelcycle understands ({FORMAT_VERSION})",
            hint="upgrade modelcycle to read it",
        )
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise BundleError(f"{path}: invalid manifest field '{field}': {first['msg']}") from None


def _verify_files(root: Path, expected: dict[str, str], *, exclude: tuple[str, ...]) -> None:
    for relative, digest in expected.items():
        path = root / relative
        if not path.is_file():
            raise BundleError(f"{path}: listed in the manifest but missing")
        if sha256_file(path) != digest:
            raise BundleError(
                f"{path}: sha256 mismatch, the file was modified after the bundle was written",
                hint="restore the file or re-register the model",
            )
    unlisted = sorted(set(hash_files(root, exclude=exclude)) - set(expected))
    if unlisted:
        raise BundleError(f"{root / unlisted[0]}: file is not listed in the manifest (added after writing)")


class Bundle:
    """A verified bundle directory. Reading it checks the format version and every file's sha256."""

    def __init__(self, path: str | Path, *, verify: bool = True, manifest_sha256: str | None = None) -> None:
        """``manifest_sha256``: what ``bundle.json`` hashed to when the bundle was registered (the registry
        keeps it), so that the manifest is verified too: it holds every other file's hash, and its labels,
        schema and preprocessing decide what an answer means."""
        self.path = Path(path)
        if not self.path.is_dir():
            raise NotFoundError(f"{self.path}: bundle directory not found")
        self.manifest = _read_manifest(self.path / MANIFEST, BundleManifest, sha256=manifest_sha256)
        if verify:
            _verify_files(self.path, self.manifest.files, exclude=(MANIFEST, VARIANTS_DIR, REPORT))

    @property
    def ref(self) -> str:
        return f"{self.manifest.name}@{self.manifest.version}"

    @property
    def weights_bytes(self) -> int:
        """The size of the version's own (fp32) weights, which a variant's size is compared with."""
        return (self.path / WEIGHTS).stat().st_size

    def state_dict(self, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        return load_weights(self.path / WEIGHTS, device)

    def read_json(self, name: str) -> Any:
        """A JSON file of the bundle (e.g. preprocess.json); it was hash-checked on open."""
        path = self.path / name
        if name not in self.manifest.files:
            raise BundleError(f"{path}: this bundle has no {name}")
        return json.loads(path.read_text(encoding="utf-8"))

    def variant_names(self) -> list[str]:
        root = self.path / VARIANTS_DIR
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(TEMP_PREFIX))

    def variant(self, name: str) -> Variant:
        path = self.path / VARIANTS_DIR / name
        if not path.is_dir():
            known = ", ".join(self.variant_names()) or "none"
            raise NotFoundError(f"{self.ref}: no variant '{name}'", hint=f"variants: {known}")
        return Variant(path)

    def variant_manifests(self) -> list[VariantManifest]:
        """Every variant's manifest as it stands, its files not re-hashed: what a page shows of them (their
        gate verdict and bench figures), never what loads one (``variant`` checks the files)."""
        root = self.path / VARIANTS_DIR
        return [
            _read_manifest(root / name / VARIANT_MANIFEST, VariantManifest) for name in self.variant_names()
        ]

    @contextmanager
    def add_variant(self, manifest: VariantManifest) -> Iterator[Path]:
        """Yield a temp directory for the variant's files; on exit ``variant.json`` (with their hashes and
        total size) is written and the variant appears atomically under ``variants/<name>``."""
        target = self.path / VARIANTS_DIR / manifest.name
        if target.exists():
            raise BundleError(f"{self.ref}: variant '{manifest.name}' already exists")
        with atomic_directory(target) as temp:
            yield temp
            files = hash_files(temp, exclude=(VARIANT_MANIFEST,))
            size = sum((temp / relative).stat().st_size for relative in files)
            final = manifest.model_copy(update={"files": files, "size_bytes": size})
            (temp / VARIANT_MANIFEST).write_text(manifest_text(final), encoding="utf-8")


class Variant:
    """A verified variant directory under a bundle."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.manifest = _read_manifest(path / VARIANT_MANIFEST, VariantManifest)
        _verify_files(path, self.manifest.files, exclude=(VARIANT_MANIFEST,))

    @property
    def name(self) -> str:
        return self.manifest.name

    def record(
        self, *, latency_ms: dict[str, float] | None = None, metrics: dict[str, float] | None = None
    ) -> None:
        """Merge newly measured figures (e.g. from ``modelcycle bench``) into ``variant.json``. The variant's
        files never change; only its manifest, which is not hashed, is rewritten atomically."""
        update = {
            "latency_ms": {**self.manifest.latency_ms, **(latency_ms or {})},
            "metrics": {**self.manifest.metrics, **(metrics or {})},
        }
        self.manifest = self.manifest.model_copy(update=update)
        write_json_atomic(self.path / VARIANT_MANIFEST, json.loads(manifest_text(self.manifest)))


class BundleBuilder:
    """Collects a new bundle's files in a temp directory beside its destination; ``publish`` hashes them,
    writes ``bundle.json`` and renames the directory into place. Used as a context manager, anything not
    published is removed on exit, so a failed or killed build never leaves a bundle behind."""

    def __init__(self, parent: Path) -> None:
        self.path = new_temp_directory(parent)
        self._files: dict[str, str] | None = None

    def __enter__(self) -> BundleBuilder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def write_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        save_weights(state_dict, self.path / WEIGHTS)

    def write_json(self, name: str, payload: Any) -> None:
        (self.path / name).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")

    def seal(self) -> dict[str, str]:
        """Hash and fsync every file written so far; slow for big weights, so callers do it before taking a
        lock. Nothing may be written after sealing."""
        if self._files is None:
            self._files = hash_files(self.path, exclude=(MANIFEST, VARIANTS_DIR, REPORT))
            fsync_tree(self.path)
        return self._files

    def publish(self, target: Path, manifest: BundleManifest) -> Bundle:
        """Write ``bundle.json`` (with every file's sha256) and move the bundle to ``target``."""
        files = self.seal()
        if WEIGHTS not in files:
            raise BundleError(f"{target}: a bundle needs {WEIGHTS}")
        final = manifest.model_copy(update={"files": files})
        manifest_path = self.path / MANIFEST
        with manifest_path.open("w", encoding="utf-8") as stream:
            stream.write(manifest_text(final))
            stream.flush()
            os.fsync(stream.fileno())
        fsync_path(self.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        publish(self.path, target)
        return Bundle(target, verify=False)
