"""The documentation stays whole: every public name of s2s_runtime has a reference entry, every page the site lists
exists, and the README stays short with the one
test command CI runs. (`mkdocs build --strict` in CI checks links and docstrings.)"""

import re
from pathlib import Path

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
