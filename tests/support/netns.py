"""Linux bridges, network namespaces and firewall snapshots for network tests.

Everything is named with :data:`PREFIX` plus a random suffix (parallel runs never collide)
and removed in ``finally`` blocks, even when a setup step fails.  Commands are argv lists,
never a shell.  Use only test ranges (198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32,
10.x): 192.0.2.0/24 is this machine's real uplink.
"""

from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

PREFIX = "hvpt-"
IFNAMSIZ = 15
Snapshot = dict[str, list[str]]


def unique_name(kind: str = "") -> str:
    """``hvpt-<kind><6 hex>``: unique per call, at most 15 characters (a valid ifname)."""
    name = f"{PREFIX}{kind}{secrets.token_hex(3)}"
    if len(name) > IFNAMSIZ:
        raise ValueError(f"{name!r} is longer than {IFNAMSIZ} characters")
    return name


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip [-n ns] args``; raise with its stderr when ``check`` and it fails."""
    argv = ["ip", *(["-n", ns] if ns else []), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _family(address: str) -> str:
    return "-6" if ":" in address else "-4"


def _no_dad(ifname: str, ns: str | None = None) -> None:
    """Set accept_dad=0 on ``ifname`` (``ip ... nodad`` fails on this kernel)."""
    key = f"net.ipv6.conf.{ifname}.accept_dad=0"
    argv = ["sysctl", "-qw", key]
    if ns:
        argv = ["ip", "netns", "exec", ns, *argv]
    subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)


@contextmanager
def bridge(name: str | None = None, addresses: Sequence[str] = ()) -> Iterator[str]:
    """A Linux bridge (up, STP off) with optional ``addr/prefix`` addresses; yields its name."""
    name = name or unique_name("b")
    if not name.startswith(PREFIX) or len(name) > IFNAMSIZ:
        raise ValueError(f"bridge name must start with {PREFIX!r}, <= {IFNAMSIZ} chars: {name!r}")
    _ip("link", "add", name, "type", "bridge")
    try:
        if any(":" in a for a in addresses):
            _no_dad(name)
        for address in addresses:
            _ip(_family(address), "addr", "add", address, "dev", name)
        _ip("link", "set", "dev", name, "up")
        yield name
    finally:
        _ip("link", "del", name, check=False)


@dataclass(frozen=True)
class Namespace:
    """A namespace joined to a bridge: ``ifname`` inside it, ``veth`` (host end) on the bridge."""

    name: str
    veth: str
    ifname: str
    addresses: tuple[str, ...]


@contextmanager
def namespace(bridge_name: str, addresses: Sequence[str] = (), gateways: Sequence[str] = (),
              ifname: str = "eth0", name: str | None = None) -> Iterator[Namespace]:
    """A netns whose ``ifname`` (veth) has ``addresses`` and its peer is on ``bridge_name``.

    ``gateways``: default routes (IPv4 and/or IPv6) via these addresses.  The namespace
    and both veth ends are removed on exit.
    """
    ns = name or unique_name("n")
    veth = unique_name("v")
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", veth, "type", "veth", "peer", "name", ifname, "netns", ns)
        try:
            _ip("link", "set", "dev", veth, "master", bridge_name)
            _ip("link", "set", "dev", veth, "up")
            _ip("link", "set", "dev", "lo", "up", ns=ns)
            _no_dad(ifname, ns)
            for address in addresses:
                _ip(_family(address), "addr", "add", address, "dev", ifname, ns=ns)
            _ip("link", "set", "dev", ifname, "up", ns=ns)
            for gateway in gateways:
                _ip(_family(gateway), "route", "add", "default", "via", gateway, "dev", ifname,
                    ns=ns)
            yield Namespace(ns, veth, ifname, tuple(addresses))
        finally:
            _ip("link", "del", veth, check=False)
    finally:
        _ip("netns", "del", ns, check=False)


def netns_exec(ns: str, argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside namespace ``ns`` (no shell); returns the finished process.

    Never raises for a non-zero exit; raises ``subprocess.TimeoutExpired`` after ``timeout``.
    """
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          timeout=timeout, check=False)


def ping(ns: str, address: str, count: int = 1, timeout: float = 2) -> bool:
    """True when ``busybox ping`` from ``ns`` to ``address`` (IPv4 or IPv6) gets a reply."""
    wait = str(max(1, round(timeout)))
    argv = ["busybox", "ping", *(["-6"] if ":" in address else []), "-c", str(count),
            "-W", wait, "-w", str(count * int(wait)), address]
    try:
        return netns_exec(ns, argv, timeout=count * timeout + 10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


_COUNTERS = re.compile(r"\s*\[\d+:\d+\]$")
# libvirt's global chains and the jumps into them stay after net-destroy: ignore them.
_LIBVIRT_GLOBAL = re.compile(r"^(:LIBVIRT_\S+ |-A (INPUT|FORWARD|OUTPUT|PREROUTING|POSTROUTING) "
                             r"-j LIBVIRT_\S+$)")


def _iptables_rules(tool: str, table: str) -> list[str]:
    proc = subprocess.run([tool, "-t", table], capture_output=True, text=True, timeout=30,
                          check=False)
    if proc.returncode != 0:
        return [f"! {tool} -t {table} failed: {proc.stderr.strip()}"]
    out = []
    for line in proc.stdout.splitlines():
        line = _COUNTERS.sub("", line.strip())
        if line and not line.startswith("#") and not _LIBVIRT_GLOBAL.match(line):
            out.append(line)
    return out


def _nwfilter_bindings() -> list[str]:
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        conn = libvirt.open("qemu:///system")
    except libvirt.libvirtError:
        return []
    try:
        return sorted(f"{b.portDev()} {b.filterName()}" for b in conn.listAllNWFilterBindings(0))
    except libvirt.libvirtError:
        return []
    finally:
        conn.close()


def firewall_snapshot(only: Iterable[str] = ()) -> Snapshot:
    """iptables/ip6tables nat+filter rules, nwfilter bindings and ``hvpt-`` links/netns.

    Rules come from ``iptables-save`` without counters, comments or libvirt's global
    ``LIBVIRT_*`` chain definitions and jumps.  With ``only``, just the entries containing
    one of those names (as whole words) are kept: a test's own devices, on a machine
    where other tests change the firewall at the same time.
    """
    snap: Snapshot = {}
    for tool in ("iptables-save", "ip6tables-save"):
        for table in ("nat", "filter"):
            snap[f"{tool} {table}"] = _iptables_rules(tool, table)
    snap["nwfilter bindings"] = _nwfilter_bindings()
    links = _ip("-o", "link", "show", check=False).stdout
    names = (m.group(1) for m in re.finditer(r"^\d+: ([^:@\s]+)", links, re.M))
    snap["links"] = sorted(n for n in names if n.startswith(PREFIX))
    netns = _ip("netns", "list", check=False).stdout.split("\n")
    snap["namespaces"] = sorted(n.split()[0] for n in netns if n.startswith(PREFIX))
    return filter_snapshot(snap, only) if only else snap


def filter_snapshot(snap: Snapshot, names: Iterable[str]) -> Snapshot:
    """Just the entries of ``snap`` that mention one of ``names`` as a whole word."""
    words = [re.compile(rf"(?<![\w.-]){re.escape(n)}(?![\w.-])") for n in names]
    return {k: [v for v in vs if any(w.search(v) for w in words)] for k, vs in snap.items()}


def snapshot_diff(before: Snapshot, after: Snapshot) -> dict[str, dict[str, list[str]]]:
    """What changed between two snapshots: ``{kind: {"added": [...], "removed": [...]}}``."""
    out: dict[str, dict[str, list[str]]] = {}
    for kind in sorted(set(before) | set(after)):
        old, new = before.get(kind, []), after.get(kind, [])
        added = [x for x in new if x not in old]
        removed = [x for x in old if x not in new]
        if added or removed:
            out[kind] = {"added": added, "removed": removed}
    return out
