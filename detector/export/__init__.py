"""Taking a trained detector out of the project: ONNX and torch.export graphs, and an onnxruntime runner."""

from .graph import NO_LABEL, OUTPUT_NAMES, ExportableDetector, unpad

__all__ = ["ExportableDetector", "NO_LABEL", "OUTPUT_NAMES", "unpad"]
