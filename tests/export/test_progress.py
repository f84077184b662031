"""Progress bars appear where people look — on a terminal — and nowhere else (logs and pipes stay clean)."""

import io
import sys

import pytest

pytest.importorskip("tqdm")
pytest.importorskip("torch")

import s2s_runtime
from s2s_export.data import Pair
from s2s_export.evaluate import evaluate_bundle


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "progress", "shown"), [(Terminal, True, True), (io.StringIO, True, False), (Terminal, False, False)]
)
def test_eval_shows_a_bar_only_on_a_terminal(monkeypatch, stream, progress, shown):
    stderr = stream()
    monkeypatch.setattr(sys, "stderr", stderr)
    model = s2s_runtime.load("g2p-en", device="cpu")
    evaluation = evaluate_bundle(model, [Pair("hello", "HH AH L OW"), Pair("cat", "K AE T")], progress=progress)
    assert evaluation.metrics.count == 2
    assert ("eval" in stderr.getvalue()) == shown
