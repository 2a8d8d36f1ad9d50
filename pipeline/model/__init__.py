"""The attention model and its file formats: the network, feature extractors, weights file, ONNX, MLflow model."""
