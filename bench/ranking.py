"""Beam search with the candidates ranked in the graph (TopK) against the full log-probs, on a large vocabulary.

The G2P models have 43 target symbols, where ranking in the graph changes nothing measurable; a translation-sized
vocabulary is where it pays. This builds a random-weight GRU with attention and a `--vocab`-token target side (needs
the export extra), and times beam search on the same bundle both ways, checking that the outputs are identical.

    python -m s2s_bench.ranking --vocab 8000 --batch-sizes 1 64
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import s2s_runtime
from s2s_runtime.decoding import register
from s2s_runtime.decoding.beam import BeamSearch
from s2s_runtime.decoding.processors import Processors

from .latency import median_seconds


@register
class FullLogProbsBeam(BeamSearch):
    """Beam search on the path constraints take (every row's full log-probs), everything else equal."""

    name = "beam-over-full-log-probs"

    def top_k(self, ranks: bool, vocab_size: int, processors: Processors) -> int:
        return 1


def random_bundle(vocab_size: int, directory: Path) -> Path:
    import torch

    from s2s_export.bundle_export import ExportOptions, export_bundle
    from s2s_export.checkpoint import Checkpoint, save_checkpoint
    from s2s_export.config import Seq2SeqConfig
    from s2s_export.model import Seq2Seq
    from s2s_runtime.vocab import Vocab

    specials = {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>"}
    source = Vocab(["<pad>", "<unk>", "<s>", "</s>", *"abcdefghij"], specials, "char", origin="source")
    target = Vocab(
        ["<pad>", "<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(vocab_size - 4)], specials, "space", origin="target"
    )
    torch.manual_seed(0)
    config = Seq2SeqConfig(
        source_vocab_size=len(source),
        target_vocab_size=vocab_size,
        hidden_size=256,
        source_embedding_size=64,
        target_embedding_size=256,
        attention="general",
    )
    save_checkpoint(Checkpoint(Seq2Seq(config).eval(), source, target), directory / "checkpoint")
    return export_bundle(
        directory / "checkpoint",
        directory / "bundle",
        validation_sources=["abcd", "efghij"],
        options=ExportOptions(validation_size=2),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--beam-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = s2s_runtime.load(random_bundle(args.vocab, Path(tmp)), device="cpu")
        words = ["abcdefg", "hij", "bead", "jiga", "cafe", "deaf", "fig", "gibe"] * 32
        options = dict(strategy="beam", beam_size=args.beam_size, max_length=12)
        for batch_size in args.batch_sizes:
            batch = words[:batch_size]

            def decode(strategy: str, batch: list = batch, batch_size: int = batch_size) -> list:
                return [
                    r.ids for r in model.generate(batch, max_batch_size=batch_size, **{**options, "strategy": strategy})
                ]

            ranked_ms, ranked = median_seconds(lambda: decode("beam"), args.repeats) * 1e3, decode("beam")
            full = decode(FullLogProbsBeam.name)
            full_ms = median_seconds(lambda: decode(FullLogProbsBeam.name), args.repeats) * 1e3
            print(
                f"vocab {args.vocab}, beam {args.beam_size}, batch {batch_size}: full log-probs {full_ms:.1f} ms, "
                f"ranked in the graph {ranked_ms:.1f} ms ({full_ms / ranked_ms:.1f}x), "
                f"outputs {'identical' if ranked == full else 'DIFFERENT'}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
