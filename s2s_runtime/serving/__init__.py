"""Serving: the dynamic Batcher over one model (admission, queue and batch formation, workers, execution and
answers, one file each), the HTTP service over it (`http/`), bulk jobs over files (`bulk.py`), the one conversion of
a Result into an output record (`records.py`) and scale-out on Ray (`ray/`)."""

from .batcher import Batcher
from .config import BatcherConfig
from .errors import BatcherClosed, InternalError, Overloaded, RequestTimeout
from .requests import RequestFuture, TokenStream

__all__ = [
    "Batcher",
    "BatcherClosed",
    "BatcherConfig",
    "InternalError",
    "Overloaded",
    "RequestFuture",
    "RequestTimeout",
    "TokenStream",
]
