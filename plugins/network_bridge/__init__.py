"""Built-in network mode ``bridge``: VMs on a host bridge with static public addresses.

The libvirt network (forward mode ``bridge``) sits on an existing host bridge or on one
the panel creates over a named interface; anti-spoofing (nwfilter ``hvp-clean-traffic``,
IPv4 and IPv6) is on by default; an optional VLAN tag goes on every VM port.
"""

from hypervisor_panel.hookspecs import hookimpl

from .mode import BridgeMode


@hookimpl
def register_network_modes(panel):
    return [BridgeMode]
