"""torch2x: PyTorch models to strongly typed TensorRT networks and engines.

    from torch2x import torch2x
    model_trt = torch2x(model.eval(), [x], fp16=True)
    torch.save(model_trt.state_dict(), "model_trt.pth")

The whole public API is imported here.
"""
from . import flavour  # noqa: F401  (fails early with an ImportError naming the extra to install)
from .calibration import CalibrationCache
from .check import CheckResult, check
from .compile import CompileReport, GraphConversionError, compile_report
from .context import ConversionContext, ConversionError
from .convert import torch2x
from .hybrid import HybridError, HybridModule, HybridNetwork
from .inspect import EngineInspection, inspect
from .interpreter import InterpreterInputError, UnsupportedLayerError, interpret
from .build_options import BuildOptionError, BuildOptions
from .network import ConvertedNetwork, EngineBuildError, build_engine, build_network, report
from .precision import PrecisionPolicy
from .registry import Call, composite, converter
from .report import ConversionReport, UnsupportedOperatorError
from .runtime import TRTModule, TRTModuleError
from . import converters as _converters  # noqa: F401,E402  (registers the converters)
from . import plugins as _plugins  # noqa: F401,E402

__version__ = "0.1.0"
__all__ = [
    "torch2x", "build_network", "report", "check", "CheckResult", "interpret", "build_engine", "converter", "composite",
    "Call", "CalibrationCache", "ConvertedNetwork", "ConversionContext", "ConversionError", "ConversionReport",
    "EngineBuildError",
    "InterpreterInputError", "PrecisionPolicy", "TRTModule", "TRTModuleError", "UnsupportedLayerError",
    "UnsupportedOperatorError", "HybridError", "HybridModule", "HybridNetwork",
    "compile_report", "CompileReport", "GraphConversionError",
    "inspect", "EngineInspection", "BuildOptions", "BuildOptionError",
]
