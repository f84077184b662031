import json
import os

import pytest
import torch

from s2s_export.average import average_checkpoints
from s2s_export.checkpoint import CheckpointError, load_checkpoint
from s2s_export.config import ConfigError, Seq2SeqConfig, TrainConfig
from s2s_export.data import task_pairs
from s2s_export.metrics import score_predictions
from s2s_export.model import Seq2Seq
from s2s_export.train import evaluate, train, training_threads


def test_the_committed_reverse_model_decodes_to_its_golden_outputs(reverse_model):
    """tests/fixtures/reverse, trained by tests/fixtures/make_reverse.py: the runtime reproduces its outputs."""
    import s2s_runtime

    golden = json.loads((reverse_model["checkpoint"] / "golden.json").read_text())
    model = s2s_runtime.load(reverse_model["bundle"], device="cpu")
    assert [r.text for r in model.generate(golden["sources"])] == golden["outputs"]
    assert golden["outputs"] == [source[::-1] for source in golden["sources"]]


def test_best_checkpoint_reloads_with_same_metrics(reverse_model):
    checkpoint = load_checkpoint(reverse_model["checkpoint"])
    assert evaluate(checkpoint, task_pairs("reverse", "dev", size=3000)).exact_match == 1.0


def run(out, epochs, resume=False):
    return train(
        task_pairs("sort", "train", size=400),
        task_pairs("sort", "dev", size=400),
        out,
        model_options=dict(hidden_size=16, source_embedding_size=8, target_embedding_size=8, dropout=0.1),
        train_config=TrainConfig(epochs=epochs, batch_size=32, patience=50, progress=False),
        resume=resume,
    )


def test_training_is_seed_deterministic_and_resumable(tmp_path):
    straight = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    resumed = run(tmp_path / "b", 4, resume=True)
    assert resumed.epochs_run == 4
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in straight.history], abs=1e-6)
    a, b = (load_checkpoint(d).model.state_dict() for d in (straight.checkpoint_dir, resumed.checkpoint_dir))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_training_runs_on_the_configured_threads_and_restores_them(tmp_path, monkeypatch):
    calls, set_threads = [], torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), set_threads(n)))
    before = torch.get_num_threads()
    train(
        task_pairs("sort", "train", size=50),
        task_pairs("sort", "dev", size=50),
        tmp_path,
        model_options=dict(hidden_size=8),
        train_config=TrainConfig(epochs=1, threads=2, progress=False),
    )
    assert calls == [2, before] and torch.get_num_threads() == before
    assert json.loads((tmp_path / "metrics.json").read_text())["threads"] == 2
    small, large = Seq2Seq(Seq2SeqConfig(4, 4, hidden_size=8)), Seq2Seq(Seq2SeqConfig(4, 4, hidden_size=400))
    assert training_threads(TrainConfig(), small) == 1
    assert training_threads(TrainConfig(), large) == min(len(os.sched_getaffinity(0)), 8)
    assert training_threads(TrainConfig(threads=3), small) == 3


def test_label_smoothing_changes_the_loss_and_kept_epochs_average_into_one_checkpoint(tmp_path):
    def train_sort(out, hidden_size=16, **options):
        return train(
            task_pairs("sort", "train", size=200),
            task_pairs("sort", "dev", size=200),
            out,
            model_options=dict(hidden_size=hidden_size, source_embedding_size=8, target_embedding_size=8),
            train_config=TrainConfig(epochs=3, batch_size=32, patience=50, progress=False, **options),
        )

    plain = train_sort(tmp_path / "plain", keep_epochs=2)
    smoothed = train_sort(tmp_path / "smoothed", label_smoothing=0.2)
    # Same seed, same batches: only the smoothed targets can make the losses differ.
    assert all(a["loss"] != b["loss"] for a, b in zip(plain.history, smoothed.history, strict=True))
    kept = sorted((tmp_path / "plain" / "epochs").iterdir())
    assert [d.name for d in kept] == ["002", "003"] and not (tmp_path / "smoothed" / "epochs").exists()
    averaged = average_checkpoints(kept)
    weights = [load_checkpoint(d).model.state_dict() for d in kept]
    for name, tensor in averaged.model.state_dict().items():
        assert torch.allclose(tensor, (weights[0][name] + weights[1][name]) / 2, atol=1e-7)
    assert evaluate(averaged, task_pairs("sort", "dev", size=200)).count > 0
    with pytest.raises(CheckpointError, match="no checkpoints"):
        average_checkpoints([])
    train_sort(tmp_path / "wider", keep_epochs=1, hidden_size=24)
    with pytest.raises(CheckpointError, match=r"wider.*config differs"):
        average_checkpoints([kept[0], tmp_path / "wider" / "epochs" / "003"])


@pytest.mark.parametrize("options", [dict(label_smoothing=1.0), dict(label_smoothing=-0.1), dict(keep_epochs=-1)])
def test_bad_smoothing_or_kept_epochs_is_a_config_error(options):
    with pytest.raises(ConfigError, match=next(iter(options))):
        TrainConfig(**options)


def test_metrics_with_several_references():
    metrics = score_predictions(
        {"read": ["R", "EH", "D"], "cat": ["K", "AE"]},
        {"read": [["R", "IY", "D"], ["R", "EH", "D"]], "cat": [["K", "AE", "T"]]},
    )
    assert metrics.exact_match == 0.5 and metrics.wer == 0.5
    assert metrics.error_rate == pytest.approx(1 / 6)  # one deletion over 3 + 3 reference phonemes
    assert metrics.token_accuracy == pytest.approx(5 / 6)


def test_unavailable_device_is_a_clear_error(tmp_path):
    from s2s_export.config import ConfigError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="device: 'cuda' requested but torch has no usable CUDA device"):
        train(
            task_pairs("sort", "train", size=50),
            task_pairs("sort", "dev", size=50),
            tmp_path,
            train_config=TrainConfig(device="cuda", progress=False),
        )
