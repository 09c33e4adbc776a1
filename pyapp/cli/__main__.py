"""``python -m pyapp.cli``: the ``passthrough`` command."""

import sys

from pyapp.cli import main

sys.exit(main())
