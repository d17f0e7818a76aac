"""The HTTP API: the collector, the live view, operations and the query routes.

``create_app(workspace, settings)`` (in :mod:`funnelscope.api.app`) builds the app;
``funnelscope serve`` runs it on uvicorn.
"""

from funnelscope.api.app import ROUTERS, create_app
from funnelscope.api.settings import ApiSettings

__all__ = ["ROUTERS", "ApiSettings", "create_app"]
