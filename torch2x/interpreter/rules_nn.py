"""Rules for neural-network layers (convolution, pooling, normalization, resize, ...)."""
