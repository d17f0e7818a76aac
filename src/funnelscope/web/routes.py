"""The dashboard: page HTML and static assets, served by the same app as the API.

Every page path (``/``, ``/funnels``, ``/kpis``...) returns the same HTML shell; the JavaScript
modules under ``web/static/js`` read the path and the query string (which holds the date range,
the global filters and each page's options, so links can be shared) and call the read API with
the key the user typed into the login form.

No request leaves the machine: the charting library is plotly.js, read from the installed
``plotly`` Python package (``plotly/package_data/plotly.min.js``) and served at
``/static/vendor/plotly.min.js``; a Content-Security-Policy on the page forbids any other origin.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Final

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, Response

__all__ = ["PAGES", "router"]

#: Page name -> path. The shell is the same for each; ``app.js`` picks the page from the path.
PAGES: Final = {
    "overview": "/",
    "funnels": "/funnels",
    "kpis": "/kpis",
    "live": "/live",
    "data": "/data",
    "customers": "/customers",
    "goals": "/goals",
    "keys": "/keys",
}

_STATIC: Final = Path(str(resources.files("funnelscope.web") / "static"))
_MEDIA_TYPES: Final = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
# plotly injects <style> elements and inline styles, hence 'unsafe-inline' for styles only.
_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; font-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

router = APIRouter(include_in_schema=False)


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "dev"


@cache
def _shell() -> str:
    # The versions in asset URLs let browsers cache plotly for a day and still pick up upgrades.
    html = (_STATIC / "index.html").read_text(encoding="utf-8")
    return html.replace("{{version}}", _package_version("funnelscope")).replace(
        "{{plotly_version}}", _package_version("plotly")
    )


def _page() -> HTMLResponse:
    return HTMLResponse(
        _shell(),
        headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache"},
    )


def _add_page_route(path: str, name: str) -> None:
    router.add_api_route(
        path, _page, methods=["GET"], name=f"page_{name}", response_class=HTMLResponse
    )


for _name, _path in PAGES.items():
    _add_page_route(_path, _name)


def plotly_path() -> Path | None:
    """Where the installed ``plotly`` package keeps ``plotly.min.js`` (None when missing)."""
    try:
        found = resources.files("plotly") / "package_data" / "plotly.min.js"
    except ModuleNotFoundError:
        return None
    path = Path(str(found))
    return path if path.is_file() else None


@router.get("/static/vendor/plotly.min.js")
def plotly_js() -> Response:
    path = plotly_path()
    if path is None:
        raise HTTPException(
            404, "plotly.js is not installed: `pip install plotly` (a funnelscope dependency)"
        )
    return FileResponse(
        path,
        media_type=_MEDIA_TYPES[".js"],
        headers={"Cache-Control": "public, max-age=86400"},
    )


@router.get("/static/{asset:path}")
def static_asset(asset: str) -> Response:
    target = (_STATIC / asset).resolve()
    # Only files inside web/static, whatever dots or links the path holds.
    if not target.is_relative_to(_STATIC.resolve()) or not target.is_file():
        raise HTTPException(404, f"no such asset: {asset}")
    media_type = _MEDIA_TYPES.get(target.suffix, "application/octet-stream")
    return FileResponse(target, media_type=media_type, headers={"Cache-Control": "no-cache"})


@router.get("/favicon.ico")
def favicon() -> Response:
    return FileResponse(_STATIC / "img" / "favicon.svg", media_type=_MEDIA_TYPES[".svg"])
