"""Models: model folders run with ONNX Runtime (no torch), which folder runs a model, preprocessing, the
Hugging Face hub, a model's identity, and clipdex checkpoints. Making models with torch lives in `openclip/`."""
