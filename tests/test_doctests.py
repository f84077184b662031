"""Every docstring example of the three packages runs (those marked `# doctest: +SKIP` need files or a service)."""

import doctest
import importlib
import pkgutil

import numpy as np
import pytest

import s2s_runtime
from s2s_runtime import GenerationOptions

PACKAGES = ("s2s_runtime", "s2s_export", "s2s_bench")
# Packages whose examples import an optional extra that the package itself imports only when a function runs.
EXTRA_OF_PACKAGE = {"s2s_runtime.serving.ray": "ray"}


def modules():
    for package in PACKAGES:
        root = importlib.import_module(package)
        yield package
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
            yield info.name


@pytest.mark.parametrize("name", sorted(modules()))
def test_docstring_examples(name):
    try:
        module = importlib.import_module(name)
    except ImportError as error:  # a module of an extra this install lacks
        pytest.skip(f"{name}: {error}")
    for package, extra in EXTRA_OF_PACKAGE.items():
        if name == package or name.startswith(f"{package}."):
            pytest.importorskip(extra, reason=f"the examples of {name} need the {extra!r} extra")
    globs = {"s2s_runtime": s2s_runtime, "GenerationOptions": GenerationOptions, "np": np}
    failures, _ = doctest.testmod(module, extraglobs=globs, optionflags=doctest.ELLIPSIS, verbose=False)
    assert failures == 0, f"{failures} docstring example(s) of {name} failed (run pytest -s to see them)"
