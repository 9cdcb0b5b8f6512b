"""Converters, one module per op family; importing this package registers them all."""
import importlib

FAMILIES = ("activation", "elementwise", "conv", "pooling", "normalization", "linear", "shape", "reduce",
            "indexing", "creation", "attention", "resize", "matrix", "scatter", "search", "composite")

for _family in FAMILIES:
    try:
        importlib.import_module(f"{__name__}.{_family}")
    except ModuleNotFoundError as _exc:  # a family not written yet
        if _exc.name != f"{__name__}.{_family}":
            raise
