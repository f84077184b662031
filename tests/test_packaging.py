"""What a wheel carries: every package and data file the runtime needs, and one version everywhere. CI also builds
the wheel and runs the quickstart from a fresh environment (.ci/run); these checks fail sooner and locally."""

from pathlib import Path

import tomllib

import s2s_runtime
from s2s_runtime.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_every_python_package_is_listed_for_the_wheel():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    for name, directory in config["package-dir"].items():
        for init in (ROOT / directory).rglob("__init__.py"):
            package = ".".join([name, *init.parent.relative_to(ROOT / directory).parts])
            assert package in listed, f"{package} is missing from [tool.setuptools] packages: the wheel would lack it"


def test_the_version_is_written_once_and_shown_by_the_command(capsys):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "s2s_runtime.__version__"
    }
    try:
        main(["--version"])
    except SystemExit as done:
        assert done.code == 0
    assert capsys.readouterr().out.strip() == f"s2s-runtime {s2s_runtime.__version__}"
    assert (ROOT / "s2s_runtime" / "py.typed").exists() and (ROOT / "LICENSE").exists()
