"""Built-in network mode ``nat``: a private libvirt NAT network (own bridge and dnsmasq).

Each VM's IPv4 address is fixed by a DHCP host entry (added and removed live) and also
given statically; optional port forwards (iptables DNAT in chains this plugin owns).
"""

from hypervisor_panel.hookspecs import hookimpl

from .mode import NatMode


@hookimpl
def register_network_modes(panel):
    return [NatMode]
