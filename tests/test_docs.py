"""Every ```python block of the documentation site (docs/**/*.md, README.md and the files they include
with ``--8<--``) runs: the blocks of one page execute in order in a fresh namespace, in a temporary
folder, so a page is a self-contained tutorial. Blocks in other languages (bash, text) are not run."""

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)
_SNIPPET = re.compile(r'^--8<-- "([^":]+)(?::[^"]*)?"\s*$', re.M)


def _expanded(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    return _SNIPPET.sub(lambda m: (ROOT / m.group(1)).read_text(encoding="utf-8"), text)


ALL_PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
PAGES = [p for p in ALL_PAGES if _BLOCK.search(_expanded(p))]  # pages with python blocks


def test_pages_are_found():
    assert len(ALL_PAGES) >= 20 and len(PAGES) >= 8


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_code_blocks_run(page, tmp_path, monkeypatch):
    blocks = _BLOCK.findall(_expanded(page))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": "__docs__"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{page.relative_to(ROOT)}[block {i}]", "exec"), namespace)
        except Exception as exc:  # name the page and block in the failure
            raise AssertionError(f"{page.relative_to(ROOT)} block {i} failed: {exc!r}\n{code}") from exc
    assert os.getcwd() == str(tmp_path)
