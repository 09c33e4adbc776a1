"""The HTTP API (Starlette): ODP-compatible events and segments endpoints. See ``create_app``."""

from pyapp.web.app import api_routes, create_app
from pyapp.web.config import ApiConfig

__all__ = ["ApiConfig", "api_routes", "create_app"]
