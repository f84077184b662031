"""What several commands share: the bundle argument, the session flags and the model they load, and the generation
and batching flags (also used by `s2s eval` of the export package)."""

from __future__ import annotations

import argparse

from ..batching import BatchingOptions
from ..config import LENGTH_NORMALIZATIONS, GenerationOptions
from ..decoding.registry import STRATEGIES
from ..engine.sessions import OPTIMIZATION_LEVELS, SessionSettings
from ..limits import RequestLimits
from ..model import Seq2SeqModel
from .flags import add_fields, given

SESSION_FLAGS = {"intra_op_threads": "threads"}  # the flag people know from other tools


def add_bundle(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle directory or built-in name (g2p-en)")


def add_session_flags(parser: argparse.ArgumentParser) -> None:
    """--device, then one flag per SessionSettings field (--threads, --cuda-graph, ...)."""
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    add_fields(
        parser,
        SessionSettings,
        title="onnxruntime sessions (SessionSettings fields)",
        names=SESSION_FLAGS,
        choices={"optimization_level": OPTIMIZATION_LEVELS},
    )


def add_limit_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RequestLimits field (--max-beam-size, --max-output-length, ...)."""
    add_fields(parser, RequestLimits, title="request limits (RequestLimits fields: the most work one request may ask)")


def add_generation_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per GenerationOptions field (--strategy, --beam-size, --top-p, ...)."""
    add_fields(
        parser,
        GenerationOptions,
        title="generation options (GenerationOptions fields)",
        choices={"strategy": sorted(STRATEGIES), "length_normalization": LENGTH_NORMALIZATIONS},
    )


def add_batching_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per BatchingOptions field (--max-batch-size, --max-batch-tokens)."""
    add_fields(parser, BatchingOptions, title="batching (BatchingOptions fields)")


def generation_options(args: argparse.Namespace) -> GenerationOptions:
    """The GenerationOptions of the flags; `--beam-size N` without `--strategy` means beam search, as in CTranslate2
    and Hugging Face."""
    fields = given(args, GenerationOptions)
    if "beam_size" in fields and "strategy" not in fields:
        fields["strategy"] = "beam"
    return GenerationOptions(**fields)


def batching_options(args: argparse.Namespace) -> BatchingOptions:
    return BatchingOptions(**given(args, BatchingOptions))


def request_limits(args: argparse.Namespace) -> RequestLimits:
    return RequestLimits(**given(args, RequestLimits))


def session_settings(args: argparse.Namespace) -> SessionSettings:
    return SessionSettings(**given(args, SessionSettings))


def load_model(args: argparse.Namespace) -> Seq2SeqModel:
    """The model the bundle, session and limit flags ask for."""
    from ..bundle import Bundle

    return Seq2SeqModel(
        Bundle.open(args.bundle), device=args.device, settings=session_settings(args), limits=request_limits(args)
    )
