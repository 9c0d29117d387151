"""Built-in storage back end: a directory on each node, qcow2 volumes."""

from hypervisor_panel.hookspecs import hookimpl

from .backend import DirStorage


@hookimpl
def register_storage_backends(panel):
    return [DirStorage]
