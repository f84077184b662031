"""The documentation stays whole: every public name of s2s_runtime has a reference entry, every page the site lists
exists, and the README stays short with the one
test command CI runs. (`mkdocs build --strict` in CI checks links and docstrings.)"""

import os
import re
from pathlib import Path

import pytest

import s2s_runtime

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def test_every_public_name_has_a_reference_entry():
    reference = (DOCS / "reference" / "python-api.md").read_text()
    documented = set(re.findall(r"^::: s2s_runtime\.(\w+)$", reference, flags=re.MULTILINE))
    public = {name for name in s2s_runtime.__all__ if not name.startswith("_")}
    assert public - documented == set(), "add a '::: s2s_runtime.NAME' entry to docs/reference/python-api.md"


def test_every_page_in_the_navigation_exists_and_every_page_is_in_it():
    listed = set(re.findall(r":\s*([\w/.-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), flags=re.MULTILINE))
    pages = {str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md")}
    assert listed - pages == set(), "mkdocs.yml lists pages that do not exist"
    assert pages - listed == set(), "pages missing from mkdocs.yml's nav"


def test_readme_is_short_and_has_one_test_command():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    # .ci/run runs this very line, so it must be there exactly once
    commands = re.findall(r"^ *pip install torch==.* && python -m pytest tests$", readme, flags=re.MULTILINE)
    assert len(commands) == 1, commands


def _strict_build(tmp_path, change=None):
    """`mkdocs build --strict` (as .ci/run runs it, not quiet) over a copy of the docs, after `change(docs_dir)`."""
    import shutil
    import subprocess
    import sys

    pytest.importorskip("mkdocs")  # the docs extra
    pytest.importorskip("mkdocstrings")
    for name in ("docs", "tools", "bench"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    for page in [ROOT / "mkdocs.yml", *ROOT.glob("*.md")]:  # pages include the README and the CHANGELOG
        shutil.copy(page, tmp_path)
    for package in ("s2s_runtime", "export"):
        (tmp_path / package).symlink_to(ROOT / package)
    if change:
        change(tmp_path / "docs")
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


def test_the_strict_docs_build_fails_on_a_broken_reference(tmp_path):
    """CI's docs check must check: `--quiet` used to hide the warnings strict mode counts, so a broken link passed."""
    assert _strict_build(tmp_path / "whole").returncode == 0

    def break_a_link(docs):
        page = docs / "quickstart.md"
        page.write_text(page.read_text() + "\nSee [nowhere](no-such-page.md) and [`Missing`][s2s_runtime.Missing].\n")

    broken = _strict_build(tmp_path / "broken", break_a_link)
    assert broken.returncode != 0
    assert "no-such-page.md" in broken.stdout + broken.stderr
