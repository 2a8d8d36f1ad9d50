"""The model in service: prediction, the HTTP server and the demo page timed, the server under
abuse, ONNX against PyTorch, drift monitoring."""
