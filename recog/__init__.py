"""Face recognition: ONNX models with their own preprocessing specs, embeddings, metrics and reports."""
