"""The supported-ops table, generated from the converter registry.

    python -m torch2x.supported_ops > docs/supported_ops.md

``tests/test_supported_ops.py`` fails when the committed table differs from this output.
"""
from __future__ import annotations

import os
from collections import defaultdict

from .registry import CONVERTERS


def _family(fn) -> str:
    return fn.__module__.rsplit(".", 1)[-1]


def _test_file(fn) -> str:
    package = "plugins" if ".plugins." in fn.__module__ else "converters"
    return f"tests/{package}/test_{_family(fn)}.py"


def render() -> str:
    """Markdown: one section per op family, each torch name with its converter and its test file."""
    import torch2x  # noqa: F401  (registers every converter)

    from .plugins import custom

    families: dict = defaultdict(list)
    for name, conv in CONVERTERS.items():
        if conv.fn is custom._convert:  # an op a user registered with plugin_op, not one torch2x ships
            continue
        families[(".plugins." in conv.fn.__module__, _family(conv.fn))].append((name, conv))
    lines = ["# Supported ops", "",
             f"{sum(len(v) for v in families.values())} torch names, generated from the converter registry by "
             "`python -m torch2x.supported_ops`. *fp32*: kept in float32 under `fp16=True`/`bf16=True`.", ""]
    for (is_plugin, family), entries in sorted(families.items()):
        fn0 = entries[0][1].fn
        lines += [f"## {'plugins' if is_plugin else 'converters'}/{family}.py (tested in `{_test_file(fn0)}`)", "",
                  "| torch name | converter | precision |", "|---|---|---|"]
        for name, conv in sorted(entries):
            lines.append(f"| `{name}` | `{conv.fn.__name__}` | {'fp32' if conv.fp32 else 'policy'} |")
        lines.append("")
    return "\n".join(lines)


def missing_test_files(root: str) -> list:
    """Test files the table names that do not exist under ``root``."""
    from .plugins import custom

    return sorted(p for p in {_test_file(c.fn) for c in CONVERTERS.values() if c.fn is not custom._convert}
                  if not os.path.exists(os.path.join(root, p)))


if __name__ == "__main__":
    print(render())
