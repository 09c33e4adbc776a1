"""The ``passthrough`` command: the parser and ``main()`` in main.py, one module per command group, and the
helpers they share in common.py (``python -m pyapp.cli`` runs __main__.py)."""
