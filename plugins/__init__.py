"""Converters for ops TensorRT has no single layer for, and user plugins."""
