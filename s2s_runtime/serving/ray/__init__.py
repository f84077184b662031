"""Scale-out on Ray (the `ray` extra): a Ray Serve application for online traffic and a Ray Data predictor for bulk
jobs. The runtime's core never imports Ray; this package imports it only when one of its functions runs.

Examples:
    >>> from ray import serve
    >>> import s2s_runtime.serving.ray
    >>> serve.run(s2s_runtime.serving.ray.app("g2p-en", replicas=2))  # doctest: +SKIP
    >>> dataset.map_batches(s2s_runtime.serving.ray.Predictor, fn_constructor_kwargs={"bundle": "g2p-en"},
    ...                     concurrency=2, num_cpus=1, batch_size=256)  # doctest: +SKIP
"""

from .predictor import Predictor
from .serving import ReplicaConfig, app, build_app

__all__ = ["Predictor", "ReplicaConfig", "app", "build_app"]
