"""The learned models and their weights registry: torch modules, shipped weights and their contract.

Inference does not need torch (ONNX Runtime runs the exported graphs); this package does.
"""
