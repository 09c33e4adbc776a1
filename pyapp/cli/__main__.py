"""``python -m pyapp.cli``: the ``passthrough`` command."""

import sys

from pyapp.cli.main import main

sys.exit(main())
