"""Who may read ``GET /metrics``: ``passthrough serve --metrics-auth`` (light: the command line imports it)."""

from __future__ import annotations

import ipaddress

METRICS_AUTH_CHOICES = ("auto", "key", "none")


def metrics_key_required(mode: str, host: str) -> bool:
    """Whether GET /metrics needs a private key: ``key`` always, ``none`` never, ``auto`` unless the server
    listens on a loopback address only (127.0.0.0/8, ::1, localhost)."""
    if mode == "key":
        return True
    if mode == "none":
        return False
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return True
