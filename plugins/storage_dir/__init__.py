"""Built-in storage back end: a directory on each node, qcow2 volumes.

Also offers the storage made at first start (``default_storage``): a directory at
``panel.default_storage_path`` ("auto": DEFAULT_PATH).
"""

from hypervisor_panel.hookspecs import hookimpl

from .backend import DEFAULT_PATH, DirStorage


@hookimpl
def register_storage_backends(panel):
    return [DirStorage]


@hookimpl
def default_storage(panel):
    path = panel.default_storage_path
    if path is None:
        return None
    return {"name": "default", "backend": "dir",
            "options": {"path": DEFAULT_PATH if path == "auto" else path}}
