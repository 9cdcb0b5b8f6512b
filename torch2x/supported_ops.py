"""The supported-ops table, generated from the converter registry, with the OpInfo coverage measured.

    python -m torch2x.supported_ops --opinfo > docs/supported_ops.md   # ~2 minutes: runs torch2x.opinfo

``tests/test_supported_ops.py`` fails when the committed table differs from this output (the OpInfo
lines aside: the test does not rerun the measurement; ``tests/test_opinfo.py`` checks its count).
"""
from __future__ import annotations

import os
import sys
from collections import defaultdict
from typing import Optional

from .registry import COMPOSITES, CONVERTERS

OPINFO_BEGIN, OPINFO_END = "<!-- opinfo -->", "<!-- /opinfo -->"


def _family(fn) -> str:
    return fn.__module__.rsplit(".", 1)[-1]


def _test_file(fn) -> str:
    return _test_file_of(_family(fn), ".plugins." in fn.__module__)


def render(opinfo: Optional[list] = None) -> str:
    """Markdown: one section per op family, each torch name with its converter and its test file; with
    ``opinfo`` (outcomes of :func:`torch2x.opinfo.first_float32`) the coverage count on top and the
    entries that do not convert at the end."""
    import torch2x  # noqa: F401  (registers every converter)

    from .plugins import custom

    families: dict = defaultdict(list)
    for name, conv in CONVERTERS.items():
        if conv.fn is custom._convert:  # an op a user registered with plugin_op, not one torch2x ships
            continue
        families[(".plugins." in conv.fn.__module__, _family(conv.fn))].append((name, conv.fn.__name__, conv.fp32))
    for name, fn in COMPOSITES.items():
        if name not in CONVERTERS:  # (a converter wins over a composite)
            families[(False, _family(fn))].append((name, fn.__name__, None))
    lines = ["# Supported ops", ""]
    if opinfo is not None:
        from .opinfo import summary

        lines += [OPINFO_BEGIN, summary(opinfo) + " (`torch2x.opinfo`, see the end of this page).", OPINFO_END, ""]
    lines += [f"{sum(len(v) for v in families.values())} torch names, generated from the converter registry by "
              "`python -m torch2x.supported_ops --opinfo`. *fp32*: kept in float32 under `fp16=True`/`bf16=True`; "
              "*composite*: computed by a composition of converted ops (`@torch2x.composite`).", ""]
    for (is_plugin, family), entries in sorted(families.items()):
        lines += [f"## {'plugins' if is_plugin else 'converters'}/{family}.py "
                  f"(tested in `{_test_file_of(family, is_plugin)}`)",
                  "", "| torch name | converter | precision |", "|---|---|---|"]
        for name, fn_name, fp32 in sorted(entries):
            kind = "composite" if fp32 is None else "fp32" if fp32 else "policy"
            lines.append(f"| `{name}` | `{fn_name}` | {kind} |")
        lines.append("")
    if opinfo is not None:
        lines += [OPINFO_BEGIN, "## OpInfo entries that do not convert and match", "",
                  "First float32 sample of each entry (`python -m torch2x.opinfo` prints every entry).", "",
                  "| entry | state | why |", "|---|---|---|"]
        for o in opinfo:
            if o.state != "match":
                why = o.detail.replace("|", "\\|").replace("\n", " ")
                lines.append(f"| `{o.entry}` | {o.state} | {why[:160] + ('...' if len(why) > 160 else '')} |")
        lines += ["", OPINFO_END]
    return "\n".join(lines)


def without_opinfo(text: str) -> str:
    """``text`` (a rendered page) without its OpInfo parts: what :func:`render` gives without measuring."""
    out, skipping = [], False
    for line in text.split("\n"):
        if line == OPINFO_BEGIN:
            skipping = True
        elif line == OPINFO_END:
            skipping = False
        elif not skipping:
            out.append(line)
    text = "\n".join(out)
    return text.replace("# Supported ops\n\n\n", "# Supported ops\n\n")


def _test_file_of(family: str, is_plugin: bool) -> str:
    return f"tests/{'plugins' if is_plugin else 'converters'}/test_{family}.py"


def missing_test_files(root: str) -> list:
    """Test files the table names that do not exist under ``root``."""
    from .plugins import custom

    files = {_test_file(c.fn) for c in CONVERTERS.values() if c.fn is not custom._convert}
    files |= {_test_file(fn) for fn in COMPOSITES.values()}
    return sorted(p for p in files if not os.path.exists(os.path.join(root, p)))


if __name__ == "__main__":
    if "--opinfo" in sys.argv[1:]:
        from .opinfo import first_float32

        print(render(first_float32()))
    else:
        print(render())
