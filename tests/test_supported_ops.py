"""docs/supported_ops.md is the registry's table, and every family it names has its test file."""
from pathlib import Path

from torch2x.supported_ops import missing_test_files, render, without_opinfo

ROOT = Path(__file__).resolve().parent.parent


def test_supported_ops_table_is_up_to_date():
    committed = (ROOT / "docs" / "supported_ops.md").read_text(encoding="utf-8")
    assert without_opinfo(committed) == render() + "\n", \
        "run: python -m torch2x.supported_ops --opinfo > docs/supported_ops.md"


def test_every_family_has_its_test_file():
    assert missing_test_files(str(ROOT)) == []
