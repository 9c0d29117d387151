"""Entry point: ``python app.py serve|desktop`` (same as the ``hypervisor-panel`` command)."""

import sys

from hypervisor_panel.cli import main

if __name__ == "__main__":
    sys.exit(main())
