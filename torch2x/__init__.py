"""torch2x: PyTorch models to strongly typed TensorRT networks and engines."""
