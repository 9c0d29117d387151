"""Built-in storage back end: Ceph RBD (network storage, RBD copy-on-write clones)."""

from hypervisor_panel.hookspecs import hookimpl

from .backend import RBDStorage


@hookimpl
def register_storage_backends(panel):
    return [RBDStorage]
