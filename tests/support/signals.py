"""A stand-in for ``make`` in ``make run``: the panel's parent, in the panel's process group.

GNU make (``fatal_error_signal``) answers SIGTERM by sending SIGTERM to its children too, so
after ``kill -TERM -- -PGID`` the panel gets SIGTERM twice, microseconds apart; on SIGINT make
only waits for them (the terminal signalled the whole group). This does the same, then,
unlike make, exits with the child's status so a test can check it (128+N if killed by N).

Usage: ``python -m tests.support.signals COMMAND [ARG...]``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, frame: object) -> None:
        if signum == signal.SIGTERM and child is not None and child.returncode is None:
            os.kill(child.pid, signal.SIGTERM)

    # Python-level handlers (not SIG_IGN) so that the child starts with the default ones.
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    child = subprocess.Popen(argv)
    status = child.wait()
    print(f"supervisor: child exited with {status}", file=sys.stderr, flush=True)
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
