"""Public helpers for testing modelcycle and its plugins."""

from modelcycle.testing.factories import tiny_bundle, tiny_dataset, tiny_manifest, tiny_state_dict

__all__ = ["tiny_bundle", "tiny_dataset", "tiny_manifest", "tiny_state_dict"]
