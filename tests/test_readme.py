"""The README's Python example runs (on the offline digits set instead of CIFAR-10, with one epoch)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no Python example"
    return blocks[0]


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch):
    code = _python_example()
    for old, new in (('"cifar10"', '"digits"'), ("epochs=30", "epochs=1")):
        assert old in code, f"README example changed: {old!r} not found; update this test"
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 (our own README)
    assert (tmp_path / "export" / "cifar10" / "model_int8.tflite").is_file()
    assert (tmp_path / "runs" / "cifar10" / "model.keras").is_file()
    maps = namespace["maps"]
    assert maps.shape[0] == namespace["images"].shape[0] and maps.shape[-1] == 10


def test_readme_export_table_lists_exactly_the_registry():
    """README's export-targets table: one row per registered target, in the registry's order, with its file."""
    from nin_keras.export_layout import TARGET_SPECS

    section = README.read_text().split("## Export targets", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| `([^`]+)` \|", section, re.M)
    assert rows, "README's Export targets section has no table of targets"
    assert [(name, file.rstrip("/")) for name, file in rows] == [(n, s.file) for n, s in TARGET_SPECS.items()]
