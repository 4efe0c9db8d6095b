"""splitserve.router: the OpenAI-compatible front door.

Public API: `RouterConfig`, `build_app(config, tokenizer=None)`, and the pure routing
policies (`choose`, `least_loaded`, `RoundRobin`, `WorkerLoad`, `Route`). Never imports
torch, splitserve.model or splitserve.engine.
"""

from splitserve.router.app import build_app
from splitserve.router.config import RouterConfig
from splitserve.router.policies import (
    PolicyConfig,
    RoundRobin,
    Route,
    RouteRequest,
    WorkerLoad,
    choose,
    least_loaded,
)

__all__ = [
    "PolicyConfig",
    "RoundRobin",
    "Route",
    "RouteRequest",
    "RouterConfig",
    "WorkerLoad",
    "build_app",
    "choose",
    "least_loaded",
]
