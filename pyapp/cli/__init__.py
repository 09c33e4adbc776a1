"""The ``passthrough`` command: the parser and ``main()`` in parser.py, one module per command group, and the
helpers they share in common.py. ``main`` is the console script's entry point (pyproject.toml) and
``python -m pyapp.cli`` runs it (__main__.py)."""

from pyapp.cli.parser import main

__all__ = ["main"]
