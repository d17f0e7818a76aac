"""funnelscope: ecommerce customer-journey and sales-funnel analytics.

>>> import funnelscope
>>> ws = funnelscope.open(":memory:")
"""

from funnelscope.errors import (
    EngineError,
    FunnelscopeError,
    InvalidEventError,
    InvalidInputError,
    InvalidSpecError,
    NotFittedError,
    StoreError,
    UnsupportedByEngineError,
)
from funnelscope.workspace import Workspace, open

__all__ = [
    "EngineError",
    "FunnelscopeError",
    "InvalidEventError",
    "InvalidInputError",
    "InvalidSpecError",
    "NotFittedError",
    "StoreError",
    "UnsupportedByEngineError",
    "Workspace",
    "open",
]

__version__ = "0.1.0"
