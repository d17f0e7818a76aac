"""The web dashboard: page shell and static assets (see :mod:`funnelscope.web.routes`)."""
