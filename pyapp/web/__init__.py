"""The HTTP API (Starlette): ODP-compatible events and segments endpoints. See ``create_app``.

The names below are imported on first use (PEP 562): the command line reads ``pyapp.web.config``'s defaults
at every start, and importing the app (Starlette, strawberry) costs about half a second it rarely needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyapp.web.app import api_routes, create_app
    from pyapp.web.config import ApiConfig

__all__ = ["ApiConfig", "api_routes", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "ApiConfig":
        from pyapp.web.config import ApiConfig

        return ApiConfig
    if name in ("api_routes", "create_app"):
        from pyapp.web import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
