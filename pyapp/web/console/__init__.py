"""The console, ``GET /console``: a read-only page of audiences, their sizes over time, their latest changes and a
membership lookup, drawn in the browser from the API (page.py; the files it loads are in static/)."""

from pyapp.web.console.page import CONSOLE_ROUTES

__all__ = ["CONSOLE_ROUTES"]
