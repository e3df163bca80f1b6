"""Export of the trained generator: torch -> ONNX (fp32, fp16, int8) -> TensorRT, with equivalence checks.

    to_onnx.py          torch.onnx export of the encoder and decoder, onnx.checker, equivalence vs torch
    quantize.py         int8 decoder (ONNX Runtime static quantization, calibrated on real frames)
    cache.py            exported graphs cached per weights file, made on first use by the runtime
    tensorrt_engine.py  TensorRT engine build (GPU machines only)
    samples.py          real refiner inputs (the built-in photo moved by the built-in motion)
"""
