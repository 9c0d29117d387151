"""Which folders a ``local`` target may use: absolute, no ``..``, never a system folder.

The rule is the panel's own (``hypervisor_panel.paths``, through the validation contract),
with one more tree: the whole of ``/var/lib/libvirt`` (archives in a pool folder would show
up, and could be deleted, as VM volumes).
"""

from __future__ import annotations

import os
from pathlib import Path

from hypervisor_panel.backup import TargetError
from hypervisor_panel.validation import path_problem

#: The JSON Schema pattern of the ``path`` option (the checks below are the real ones).
PATH_PATTERN = r"^/(?!.*(^|/)\.\.(/|$))[A-Za-z0-9._/+-]*$"
EXTRA_TREES = ("/var/lib/libvirt",)


def check_folder(path: object) -> Path:
    """The backup folder ``path`` resolved (symlinks followed), or :class:`TargetError`."""
    if not isinstance(path, str) or not path:
        raise TargetError("the local backup folder needs a path")
    problem = path_problem(path, EXTRA_TREES)
    if problem:
        shown, why = problem
        raise TargetError(f"refusing {shown} as a local backup folder: {why}")
    return Path(os.path.realpath("/" + path.lstrip("/")))  # POSIX keeps a leading //
