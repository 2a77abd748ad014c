"""Export: a bundle's network converted to ONNX, checked for parity on real samples, stored as a variant."""

from modelcycle.export.onnx import ExportResult, export_onnx

__all__ = ["ExportResult", "export_onnx"]
