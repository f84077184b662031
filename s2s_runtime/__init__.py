"""s2s_runtime: torch-free inference for recurrent encoder–decoder models exported by s2s_export.

Examples:
    >>> import s2s_runtime
    >>> model = s2s_runtime.load("bundle/")  # doctest: +SKIP
    >>> [r.text for r in model.generate(["hello", "world"])]  # doctest: +SKIP
"""

from . import decoding  # noqa: F401  (registers the strategies before any GenerationOptions is made)
from .batching import BatchingOptions
from .bundle import Bundle, BundleError
from .config import GenerationOptions
from .engine.sessions import DeviceError, SessionSettings
from .generation import DecodingStopped, Generation
from .limits import RequestLimits
from .model import Seq2SeqModel, load
from .results import Hypothesis, Result, StreamedToken, TokenScore
from .serving import Batcher, BatcherClosed, BatcherConfig, InternalError, Overloaded, RequestTimeout
from .vocab import Vocab, VocabError

__version__ = "0.2.0"  # the one place the version is written (pyproject reads it)
__all__ = [
    "Batcher",
    "BatcherClosed",
    "BatcherConfig",
    "BatchingOptions",
    "Bundle",
    "BundleError",
    "DecodingStopped",
    "DeviceError",
    "Generation",
    "GenerationOptions",
    "Hypothesis",
    "InternalError",
    "Overloaded",
    "RequestLimits",
    "RequestTimeout",
    "Result",
    "Seq2SeqModel",
    "SessionSettings",
    "StreamedToken",
    "TokenScore",
    "Vocab",
    "VocabError",
    "__version__",
    "load",
]
