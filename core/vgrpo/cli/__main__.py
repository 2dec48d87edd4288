"""``python -m vgrpo.cli``: the ``vgrpo`` command (as ``accelerate launch -m vgrpo.cli`` needs it)."""

import sys

from vgrpo.cli import main

sys.exit(main())
