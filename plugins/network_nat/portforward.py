"""Port forwards from a node's own addresses to a VM on a NAT network (iptables, IPv4).

The plugin owns two chains, hooked once per node and removed when their last rule goes:
``HVP_NAT_PF`` (nat table; from PREROUTING and OUTPUT for packets to a local address,
loopback excluded) holds one DNAT rule per forward; ``HVP_FWD`` (filter table; first rule
of FORWARD) accepts the forwarded connections (``--ctstate DNAT``) that libvirt's own
LIBVIRT_FWI chain would reject. Every rule carries a comment naming network, VM and NIC,
so detach removes exactly its own rules. libvirt's LIBVIRT_* chains are never touched.
"""

from __future__ import annotations

import ipaddress
import shlex
import threading
from dataclasses import dataclass

from hypervisor_panel.errors import PanelError
from hypervisor_panel.network import NetworkError, NodeContext

NAT_CHAIN = "HVP_NAT_PF"
FWD_CHAIN = "HVP_FWD"
IPTABLES = ["iptables", "-w"]
#: (table, chain, match) of each hook: a jump into one of our chains.
HOOKS = (("nat", "PREROUTING", ["-m", "addrtype", "--dst-type", "LOCAL"], NAT_CHAIN),
         ("nat", "OUTPUT", ["!", "-d", "127.0.0.0/8", "-m", "addrtype", "--dst-type",
                            "LOCAL"], NAT_CHAIN),
         ("filter", "FORWARD", [], FWD_CHAIN))
CHAINS = (("nat", NAT_CHAIN), ("filter", FWD_CHAIN))
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


@dataclass(frozen=True)
class Forward:
    protocol: str  # tcp | udp
    host_port: int
    guest_port: int


def network_tag(network: str) -> str:
    """The start of the comment on every rule of one network."""
    return f"hvp-pf:{network}:"


def tag(network: str, vm_id: str, index: int) -> str:
    """The comment on every rule of one NIC's forwards."""
    return f"{network_tag(network)}vm={vm_id}:nic={index}"


def node_lock(node: NodeContext) -> threading.Lock:
    """One lock per node: chains are created and removed by whoever changes them."""
    with _locks_guard:
        return _locks.setdefault(node.node_id, threading.Lock())


def _run(node: NodeContext, argv: list[str]) -> str:
    """``node.run`` with every failure as a NetworkError (the message names the node)."""
    try:
        return node.run(argv)
    except NetworkError:
        raise
    except PanelError as exc:
        raise NetworkError(exc.message) from exc


def _ipt(node: NodeContext, table: str, *args: str) -> str:
    return _run(node, [*IPTABLES, "-t", table, *args])


def _rules(node: NodeContext, table: str) -> tuple[set[str], list[list[str]]]:
    """The table's chains and its rules as argv (``-A CHAIN ...``), from ``iptables -S``."""
    chains, rules = set(), []
    for line in _ipt(node, table, "-S").splitlines():
        words = shlex.split(line)
        if words[:1] in (["-N"], ["-P"]):
            chains.add(words[1])
        elif words[:1] == ["-A"]:
            rules.append(words)
    return chains, rules


def _comment(rule: list[str]) -> str | None:
    return rule[rule.index("--comment") + 1] if "--comment" in rule else None


def _ensure_chains(node: NodeContext) -> None:
    for table, chain in CHAINS:
        if chain not in _rules(node, table)[0]:
            _ipt(node, table, "-N", chain)
    for table, hook, match, chain in HOOKS:
        in_hook = [r for r in _rules(node, table)[1] if r[1] == hook]
        jumps = [r for r in in_hook if r[-2:] == ["-j", chain]]
        if hook == "FORWARD" and jumps and in_hook[0] is not jumps[0]:
            for rule in jumps:  # someone (libvirtd at start) put its jumps before ours
                _ipt(node, table, "-D", *rule[1:])
            jumps = []
        if not jumps:
            position = ["-I", hook, "1"] if hook == "FORWARD" else ["-A", hook]
            _ipt(node, table, *position, *match, "-j", chain)


def _drop_chains_if_empty(node: NodeContext) -> None:
    rules = {table: _rules(node, table) for table in ("nat", "filter")}
    if any(r[1] == chain for table, chain in CHAINS for r in rules[table][1]):
        return
    for table, hook, _match, chain in HOOKS:
        for rule in rules[table][1]:
            if rule[1] == hook and rule[-2:] == ["-j", chain]:
                _ipt(node, table, "-D", *rule[1:])
    for table, chain in CHAINS:
        if chain in rules[table][0]:
            _ipt(node, table, "-X", chain)


def _delete_tagged(node: NodeContext, matches: str, prefix: bool = False) -> int:
    count = 0
    for table, chain in CHAINS:
        for rule in _rules(node, table)[1]:
            comment = _comment(rule) or ""
            if rule[1] == chain and (comment.startswith(matches) if prefix
                                     else comment == matches):
                _ipt(node, table, "-D", *rule[1:])
                count += 1
    return count


def _listening(node: NodeContext, protocol: str) -> set[int]:
    """Ports a service of the node listens on, beyond loopback (a DNAT would hide it)."""
    out = _run(node, ["ss", "-H", "-l", "-n", "-t" if protocol == "tcp" else "-u"])
    found = set()
    for line in out.splitlines():
        words = line.split()
        if len(words) < 4:
            continue
        host, _, port = words[3].rpartition(":")
        if port.isdigit() and not _is_loopback(host.strip("[]").split("%")[0]):
            found.add(int(port))
    return found


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*": every address


def refuse_node_services(node: NodeContext, forwards: list[Forward]) -> None:
    """Refuse a host port that a service of the node (sshd, dnsmasq, ...) listens on:
    the DNAT rule would hide it."""
    for protocol in {f.protocol for f in forwards}:
        busy = _listening(node, protocol)
        for f in forwards:
            if f.protocol == protocol and f.host_port in busy:
                raise NetworkError(f"node {node.name}: port {f.host_port}/{protocol} is "
                                   "taken by a service of the node", code="port_in_use")


def install(node: NodeContext, label: str, address: str, bridge: str,
            forwards: list[Forward]) -> None:
    """Replace the rules tagged ``label`` by one DNAT + one accept rule per forward
    (check the ports with :func:`refuse_node_services` first)."""
    with node_lock(node):
        _ensure_chains(node)
        _delete_tagged(node, label)
        for f in forwards:
            comment = ["-m", "comment", "--comment", label]
            _ipt(node, "nat", "-A", NAT_CHAIN, "-p", f.protocol, "--dport", str(f.host_port),
                 *comment, "-j", "DNAT", "--to-destination", f"{address}:{f.guest_port}")
            _ipt(node, "filter", "-A", FWD_CHAIN, "-d", f"{address}/32", "-o", bridge,
                 "-p", f.protocol, "--dport", str(f.guest_port), "-m", "conntrack",
                 "--ctstate", "DNAT", *comment, "-j", "ACCEPT")
        _drop_chains_if_empty(node)


def remove(node: NodeContext, label: str, prefix: bool = False) -> int:
    """Delete the rules tagged ``label`` (or starting with it); chains go when empty."""
    with node_lock(node):
        chains = {table: _rules(node, table)[0] for table in ("nat", "filter")}
        if not any(chain in chains[table] for table, chain in CHAINS):
            return 0
        count = _delete_tagged(node, label, prefix)
        _drop_chains_if_empty(node)
        return count
