"""Named training recipes for `s2s train --preset NAME`: a task plus model and training settings (flags override)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    task: str
    model: dict
    train: dict
    size: int = 5000  # examples of a generated task
    description: str = ""


# The two G2P presets differ only in how the decoder sees the source (attention, or the context at every step).
G2P_MODEL = dict(
    cell="lstm",
    num_layers=2,
    hidden_size=256,
    source_embedding_size=128,
    target_embedding_size=128,
    bidirectional=True,
    bridge="linear",
)
G2P_TRAIN = dict(
    epochs=40, batch_size=128, learning_rate=2e-3, patience=5, target_tokenizer="space", max_dev_examples=3000
)

PRESETS = {
    "reverse": Preset(
        task="reverse",
        size=6000,
        model=dict(
            hidden_size=64,
            source_embedding_size=32,
            target_embedding_size=32,
            bidirectional=True,
            bridge="linear",
            attention="general",
            input_feeding=True,
        ),
        # Stops at 99.5 % dev exact match: the last few long strings with repeated letters (dev errors such as
        # 'tgcyzro' → 'orzygt') outlast every setting tried — hidden 96/128, 12,000 examples — for 10+ more
        # epochs (bench/results/train-threads).
        train=dict(epochs=20, batch_size=32, learning_rate=3e-3, target_exact_match=0.995, patience=4),
        description="string reversal; stops at ≥ 99.5% dev exact match, about 10 epochs (25 s on one core)",
    ),
    # English G2P on CMUdict: the best model with attention (shipped as the built-in bundle g2p-en).
    "g2p-en": Preset(
        task="cmudict",
        model=dict(G2P_MODEL, attention="general", dropout=0.2),
        train=G2P_TRAIN,
        description="English grapheme-to-phoneme, 2-layer bidirectional LSTM encoder-decoder with Luong attention",
    ),
    # The built-in since 0.4: the same architecture with stress-marked targets (AH0, EY1, ...), label smoothing, and the
    # last epochs kept for checkpoint averaging (`s2s average`).
    "g2p-en-stress": Preset(
        task="cmudict-stress",
        model=dict(G2P_MODEL, attention="general", dropout=0.2),
        train=dict(G2P_TRAIN, label_smoothing=0.1, keep_epochs=8, threads=1),
        description="English grapheme-to-phoneme with stress (ARPAbet 0/1/2), the g2p-en architecture",
    ),
    # The seed's plain encoder-decoder (no attention): the context vector initializes the decoder and is fed at
    # every step.
    "g2p-en-plain": Preset(
        task="cmudict",
        model=dict(G2P_MODEL, conditioning="both", dropout=0.3),
        train=G2P_TRAIN,
        description="English grapheme-to-phoneme, plain encoder-decoder (no attention)",
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"preset: unknown preset {name!r} (presets: {', '.join(PRESETS)})")
    return PRESETS[name]
