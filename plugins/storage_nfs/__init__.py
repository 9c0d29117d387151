"""Built-in storage back end: an NFS export mounted on every node, qcow2 volumes."""

from hypervisor_panel.hookspecs import hookimpl

from .backend import NFSStorage


@hookimpl
def register_storage_backends(panel):
    return [NFSStorage]
