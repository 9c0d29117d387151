"""Built-in storage back ends: an LVM volume group per node, or one on a shared LUN."""

from hypervisor_panel.hookspecs import hookimpl

from .backend import LVMStorage, NetworkLVMStorage


@hookimpl
def register_storage_backends(panel):
    return [LVMStorage, NetworkLVMStorage]
