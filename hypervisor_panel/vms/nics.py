"""A VM's network interfaces: planned at create time, applied, attached, released.

Planning is all or nothing: a MAC in the locally administered range, unique in the
cluster, addresses from the network's IP pools (one per IP version the network has pools
for, or the ones asked for), and the mode's own choices (``plan_nic``: host ports...).
The interfaces live in the VM record; the network mode turns each into XML
(``apply``) and node state (``attach``/``detach``: DHCP host entries, port forwards).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from .. import limits
from ..errors import Conflict, Forbidden, Invalid
from ..ip_pools import IPPoolService
from ..network import Address, GuestInterface, Nic
from ..networks import NetworkRecord, NetworkService
from ..references import References
from ..store import Store
from ..virt.domain_xml import DomainBuilder
from .records import TABLE, VMRecord

if TYPE_CHECKING:
    from ..nodes import NodeManager

MAC_PREFIX = "52:54:00"  # QEMU's prefix; 0x52 has the locally administered bit set


class VMNetworking:
    def __init__(self, store: Store, nodes: NodeManager, networks: NetworkService,
                 pools: IPPoolService, references: References,
                 users: Callable[[str], dict[str, Any] | None] = lambda _id: None) -> None:
        self.store, self.nodes = store, nodes
        self.networks, self.pools = networks, pools
        self.users = users  # user id -> user record (their ``ips`` quota)
        references.register("network", self._using_network, "VM")

    def _using_network(self, network_id: str) -> list[str]:
        with self.store.locked():
            return [v["name"] for v in self.store.raw_values(TABLE)
                    if any(n["network"] == network_id for n in v.get("interfaces", []))]

    def _taken(self) -> tuple[set[str], set[int]]:
        """MACs and host ports every VM's NICs hold."""
        macs, ports = set(), set()
        for vm in self.store.raw_values(TABLE):
            for nic in vm.get("interfaces", []):
                macs.add(nic["mac"])
                for forward in nic.get("options", {}).get("forwards", []) + \
                        nic.get("options", {}).get("port_forwards", []):
                    if forward.get("host_port"):
                        ports.add(forward["host_port"])
        return macs, ports

    @staticmethod
    def _new_mac(taken: set[str]) -> str:
        while True:
            mac = MAC_PREFIX + "".join(f":{random.randrange(256):02x}" for _ in range(3))  # noqa: S311
            if mac not in taken:
                taken.add(mac)
                return mac

    # -- planning ------------------------------------------------------------------------
    def plan(self, vm_id: str, vm_name: str, requests: list[dict[str, Any]],
             first_index: int = 0) -> list[dict[str, Any]]:
        """NIC records for ``requests`` ({network, ip?/ips?, options?}); on any failure
        every address taken so far is released again."""
        records: list[dict[str, Any]] = []
        try:
            with self.store.locked():
                macs, ports = self._taken()
                for offset, request in enumerate(requests):
                    records.append(self._plan_one(vm_id, vm_name, first_index + offset,
                                                  request, macs, ports))
                self._within_quota(vm_id)
        except BaseException:
            self.release(records)
            raise
        return records

    def _plan_one(self, vm_id: str, vm_name: str, index: int, request: dict[str, Any],
                  macs: set[str], ports: set[int]) -> dict[str, Any]:
        network = self.networks.get(request["network"])
        if network is None:
            raise Invalid(f"network {request['network']!r} not found",
                          code="network_not_found")
        mode = self.networks.mode(network)
        nic_id = uuid.uuid4().hex[:8]
        record: dict[str, Any] = {"id": nic_id, "name": f"eth{index}",
                                  "network": network["id"], "mac": self._new_mac(macs),
                                  "addresses": [], "dns": []}
        try:
            if mode.uses_ip_pools:
                self._addresses(record, network, vm_id, request)
            nic = self._nic(vm_id, vm_name, index, record)
            nic.options = dict(request.get("options", {}))
            record["options"] = mode.plan_nic(nic, ports)
        except BaseException:
            self.release([record])
            raise
        return record

    def _addresses(self, record: dict[str, Any], network: NetworkRecord, vm_id: str,
                   request: dict[str, Any]) -> None:
        pools = self.pools.of_network(network["id"])
        if not pools:
            raise Invalid(f"network {network['name']!r} has no IP pool to take an address "
                          "from", code="no_ip_pool")
        wanted = list(request.get("ips") or ([request["ip"]] if "ip" in request else []))
        for address in wanted:
            pool = self.pools.pool_for(network["id"], None, address)
            if pool is None:
                raise Invalid(f"{address} is in none of network {network['name']!r}'s IP "
                              "pools", code="address_outside_pool")
            self._take(record, pool["id"], vm_id, address)
        versions = {Address(**a).version for a in record["addresses"]}
        for version in sorted({p["version"] for p in pools} - versions):
            pool = self.pools.pool_for(network["id"], version, None)
            if pool is None:
                raise Conflict(f"network {network['name']!r} has no free IPv{version} "
                               "address left", code="pool_exhausted")
            self._take(record, pool["id"], vm_id, None)

    def _take(self, record: dict[str, Any], pool_id: str, vm_id: str,
              address: str | None) -> None:
        got = self.pools.allocate(pool_id, vm_id, record["id"], address)
        record["addresses"].append(asdict(got))
        pool = self.pools.get(pool_id) or {}
        record["dns"] = sorted({*record["dns"], *pool.get("dns", [])})

    def release(self, nic_records: list[dict[str, Any]]) -> None:
        """Give back the addresses of these NICs."""
        for record in nic_records:
            for address in record.get("addresses", []):
                self.pools.release(address["pool"], address["address"])

    # -- what the modes need -------------------------------------------------------------
    @staticmethod
    def _nic(vm_id: str, vm_name: str, index: int, record: dict[str, Any]) -> Nic:
        return Nic(vm_id, vm_name, index, record["mac"],
                   [Address(**a) for a in record.get("addresses", [])],
                   list(record.get("dns", [])), record.get("mtu"),
                   dict(record.get("options", {})))

    def nics(self, vm: VMRecord) -> list[tuple[NetworkRecord, Nic]]:
        out = []
        for index, record in enumerate(vm.get("interfaces", [])):
            network = self.networks.get(record["network"])
            if network is not None:
                out.append((network, self._nic(vm["id"], vm["name"], index, record)))
        return out

    def apply(self, vm: VMRecord, builder: DomainBuilder) -> None:
        """Add every NIC to ``builder``; direct-boot guests also get their network
        configuration on the kernel command line (``hvp.*`` tokens, see guest_tokens)."""
        for network, nic in self.nics(vm):
            self.networks.mode(network).apply(builder, nic)
        if builder.kernel and vm.get("interfaces"):
            tokens = guest_tokens(self.guest_interfaces(vm))
            builder.cmdline = " ".join(filter(None, [builder.cmdline or "", *tokens]))

    def attach(self, vm: VMRecord, node_id: str) -> None:
        node = self.nodes.context(node_id)
        for network, nic in self.nics(vm):
            self.networks.mode(network).attach(node, nic)

    def detach(self, vm: VMRecord, node_id: str) -> None:
        node = self.nodes.context(node_id)
        for network, nic in self.nics(vm):
            self.networks.mode(network).detach(node, nic)

    def attach_one(self, vm: VMRecord, index: int) -> None:
        network, nic = self.nics(vm)[index]
        self.networks.mode(network).attach(self.nodes.context(vm["node"]), nic)

    def detach_one(self, vm: VMRecord, index: int) -> None:
        network, nic = self.nics(vm)[index]
        self.networks.mode(network).detach(self.nodes.context(vm["node"]), nic)

    def add_address(self, vm: VMRecord, record: dict[str, Any], request: dict[str, Any]
                    ) -> dict[str, Any]:
        """The NIC record with one more address: ``ip`` and/or ``pool`` as asked, else
        the next free address of the network's first pool with one."""
        network = self.networks.require(record["network"])
        if not self.networks.mode(network).uses_ip_pools:
            raise Invalid(f"network {network['name']!r} takes no addresses from IP pools",
                          code="pools_not_used")
        pool = self.pools.require(request["pool"]) if "pool" in request else \
            self.pools.pool_for(network["id"], None, request["ip"]) if "ip" in request else \
            next((p for p in self.pools.of_network(network["id"])
                  if self.pools.usage(p)["free"] > 0), None)
        if pool is None or pool["network"] != network["id"]:
            raise Invalid(f"no IP pool of network {network['name']!r} fits", code=(
                "address_outside_pool" if "ip" in request else "pool_exhausted"))
        grown = {**record, "addresses": list(record.get("addresses", []))}
        with self.store.locked():
            self._take(grown, pool["id"], vm["id"], request.get("ip"))
            try:
                self._within_quota(vm["id"])
            except BaseException:
                self.release([{"addresses": grown["addresses"][-1:]}])
                raise
        return grown

    def _within_quota(self, vm_id: str) -> None:
        """Refuse when the VM's owner now holds more addresses than their ``ips`` quota.
        Called under the store lock right after the addresses were taken, so two
        concurrent requests cannot both get the last address of a quota."""
        vm = self.store.get(TABLE, vm_id)
        owner = vm.get("owner") if vm else None
        maximum = limits.limit(self.users(owner), "ips") if owner else None
        if maximum is None:
            return
        mine = {v["id"] for v in self.store.raw_values(TABLE) if v.get("owner") == owner}
        if self.pools.held_by(mine) > maximum:
            raise Forbidden(limits.exceeded("ips", maximum), code="quota_exceeded")

    def guest_interfaces(self, vm: VMRecord) -> list[GuestInterface]:
        return [self.networks.mode(network).guest_config(nic)
                for network, nic in self.nics(vm)]

    def network_config(self, vm: VMRecord) -> dict[str, Any]:
        """The guest's network configuration as cloud-init network-config v2."""
        return {"version": 2, "ethernets": {g.name: g.netplan()
                                            for g in self.guest_interfaces(vm)}}


def guest_tokens(interfaces: list[GuestInterface]) -> list[str]:
    """The network configuration for a direct-boot guest's init, as kernel arguments:
    ``hvp.net=IF,MAC,static|dhcp``, ``hvp.addr=IF,CIDR``, ``hvp.gw=IF,ADDRESS``,
    ``hvp.dns=ADDRESS``, ``hvp.mtu=IF,MTU`` (OS templates use cloud-init instead)."""
    tokens: list[str] = []
    dns: list[str] = []
    for g in interfaces:
        tokens.append(f"hvp.net={g.name},{g.mac},{'dhcp' if g.dhcp4 else 'static'}")
        # With DHCP the guest learns its IPv4 address and gateway from the server; static
        # IPv6 addresses are still given.
        tokens += [f"hvp.addr={g.name},{cidr}" for cidr in g.addresses
                   if not (g.dhcp4 and ":" not in cidr)]
        tokens += [f"hvp.gw={g.name},{gw}" for gw in (g.gateway4, g.gateway6)
                   if gw and not (g.dhcp4 and gw == g.gateway4)]
        if g.mtu:
            tokens.append(f"hvp.mtu={g.name},{g.mtu}")
        dns += [d for d in g.nameservers if d not in dns]
    return tokens + [f"hvp.dns={d}" for d in dns]
