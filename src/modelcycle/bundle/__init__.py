"""The bundle: one model version on disk, the contract between every stage (docs/architecture.md §3)."""

from modelcycle.bundle.files import atomic_directory
from modelcycle.bundle.io import Bundle, BundleBuilder, Variant
from modelcycle.bundle.manifest import FORMAT_VERSION, Architecture, BundleManifest, Lineage, VariantManifest
from modelcycle.schema import FeatureSpec, InputSchema, OutputSchema, TensorSpec

__all__ = [
    "FORMAT_VERSION",
    "Architecture",
    "Bundle",
    "BundleBuilder",
    "BundleManifest",
    "FeatureSpec",
    "InputSchema",
    "Lineage",
    "OutputSchema",
    "TensorSpec",
    "Variant",
    "VariantManifest",
    "atomic_directory",
]
