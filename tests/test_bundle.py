from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from modelcycle.bundle import Bundle, BundleBuilder, VariantManifest
from modelcycle.bundle.files import atomic_directory
from modelcycle.bundle.io import MANIFEST, WEIGHTS
from modelcycle.errors import BundleError, NotFoundError
from modelcycle.testing import tiny_manifest, tiny_state_dict


def build(root: Path, name: str = "m") -> Bundle:
    with BundleBuilder(root) as builder:
        builder.write_weights(tiny_state_dict())
        builder.write_json("preprocess.json", {"features": {"kind": "tabular"}})
        (builder.path / "tokenizer").mkdir()
        (builder.path / "tokenizer" / "vocab.txt").write_text("a\nb\n")
        return builder.publish(root / name, tiny_manifest(name).model_copy(update={"version": 1}))


def test_round_trip_keeps_weights_manifest_and_files(tmp_path: Path) -> None:
    written = build(tmp_path)
    read = Bundle(written.path)
    assert read.manifest == written.manifest
    assert read.manifest.version == 1
    assert set(read.manifest.files) == {WEIGHTS, "preprocess.json", "tokenizer/vocab.txt"}
    for key, tensor in tiny_state_dict().items():
        assert torch.equal(read.state_dict()[key], tensor)
    assert read.read_json("preprocess.json") == {"features": {"kind": "tabular"}}
    assert not list(tmp_path.glob(".tmp-*")), "the temp directory must be gone after publishing"


def test_edited_weights_are_refused(tmp_path: Path) -> None:
    bundle = build(tmp_path)
    weights = bundle.path / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"weights\.safetensors: sha256 mismatch"):
        Bundle(bundle.path)


def test_added_file_is_refused(tmp_path: Path) -> None:
    bundle = build(tmp_path)
    (bundle.path / "extra.bin").write_bytes(b"x")
    with pytest.raises(BundleError, match=r"extra\.bin: file is not listed"):
        Bundle(bundle.path)


def test_deleted_file_is_refused(tmp_path: Path) -> None:
    bundle = build(tmp_path)
    (bundle.path / "tokenizer" / "vocab.txt").unlink()
    with pytest.raises(BundleError, match="listed in the manifest but missing"):
        Bundle(bundle.path)


def test_future_format_version_is_refused(tmp_path: Path) -> None:
    bundle = build(tmp_path)
    manifest = json.loads((bundle.path / MANIFEST).read_text())
    manifest["format_version"] = 99
    (bundle.path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format_version 99 is newer than this modelcycle understands"):
        Bundle(bundle.path)


def test_not_a_bundle(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match=r"not a bundle \(bundle\.json is missing\)"):
        Bundle(tmp_path / "empty")
    with pytest.raises(NotFoundError):
        Bundle(tmp_path / "absent")


class WriteCrash(Exception):
    pass


def crash_while_building(root: Path) -> None:
    with BundleBuilder(root) as builder:
        builder.write_weights(tiny_state_dict())
        raise WriteCrash


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(WriteCrash):
        crash_while_building(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_bundle_without_weights_is_refused(tmp_path: Path) -> None:
    with BundleBuilder(tmp_path) as builder, pytest.raises(BundleError, match="a bundle needs weights"):
        builder.publish(tmp_path / "m", tiny_manifest())
    assert not (tmp_path / "m").exists()


def test_existing_target_is_never_overwritten(tmp_path: Path) -> None:
    build(tmp_path)
    with pytest.raises(BundleError, match="already exists"):
        build(tmp_path)


def test_tied_weights_are_saved(tmp_path: Path) -> None:
    shared = torch.randn(3, 2)
    with BundleBuilder(tmp_path) as builder:
        builder.write_weights({"embed": shared, "head": shared})
        bundle = builder.publish(tmp_path / "tied", tiny_manifest())
    loaded = bundle.state_dict()
    assert torch.equal(loaded["embed"], loaded["head"])


def test_variants_are_written_verified_and_listed(tmp_path: Path) -> None:
    bundle = build(tmp_path)
    manifest = VariantManifest(
        name="int8-dynamic", method="quantize", params={"dtype": "qint8"}, verdict="passed"
    )
    with bundle.add_variant(manifest) as folder:
        (folder / "model.onnx").write_bytes(b"\x00" * 100)
    assert bundle.variant_names() == ["int8-dynamic"]
    variant = bundle.variant("int8-dynamic")
    assert variant.manifest.size_bytes == 100
    assert variant.manifest.verdict == "passed"
    assert "model.onnx" in variant.manifest.files
    Bundle(bundle.path)  # a variant does not disturb the base bundle's hashes
    (variant.path / "model.onnx").write_bytes(b"\x01" * 100)
    with pytest.raises(BundleError, match="sha256 mismatch"):
        bundle.variant("int8-dynamic")
    with pytest.raises(BundleError, match="already exists"), bundle.add_variant(manifest):
        pass
    with pytest.raises(NotFoundError, match="no variant 'fp16'"):
        bundle.variant("fp16")


def crash_while_adding_variant(bundle: Bundle) -> None:
    with bundle.add_variant(VariantManifest(name="broken", method="x")) as folder:
        (folder / "half.onnx").write_bytes(b"partial")
        raise WriteCrash


def test_failed_variant_leaves_no_trace(tmp_path: Path) -> None:
    bundle = build(tmp_path)
    with pytest.raises(WriteCrash):
        crash_while_adding_variant(bundle)
    assert bundle.variant_names() == []
    assert not list((bundle.path / "variants").iterdir())


def test_atomic_directory_refuses_existing(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(BundleError), atomic_directory(tmp_path / "x"):
        pass


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", ""])
def test_variant_names_cannot_escape_the_variants_folder(tmp_path: Path, name: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        VariantManifest(name=name, method="x")
