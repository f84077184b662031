"""`s2s serve`: an HTTP service over the dynamic batcher (Starlette + uvicorn, the `serve` extra).

app.py holds the routes, requests.py reads and checks bodies, errors.py maps exceptions to statuses, metrics.py the
Prometheus metrics, state.py what the handlers share, transport.py the connection limits uvicorn lacks, and
draining.py runs it all, draining on SIGTERM/SIGINT.
"""

from .app import create_app
from .config import ServerConfig
from .draining import DrainingServer, serve
from .state import AppState

__all__ = ["AppState", "DrainingServer", "ServerConfig", "create_app", "serve"]
