"""IP pool arithmetic and the allocator index: pure, no store, no libvirt."""

from __future__ import annotations

import ipaddress

import pytest

from hypervisor_panel.ipam import PoolError, PoolIndex, PoolSpace


def space(**pool) -> PoolSpace:
    return PoolSpace.from_record({"subnet": "203.0.113.0/24", **pool})


def test_a_subnet_hands_out_its_hosts_but_not_the_gateway():
    pool = space(gateway="203.0.113.1")
    assert pool.size() == 253  # 254 hosts minus the gateway
    first = int(ipaddress.ip_address("203.0.113.1"))
    assert not pool.allowed(first) and pool.allowed(first + 1)
    assert not pool.allowed(int(ipaddress.ip_address("203.0.113.255")))  # broadcast


def test_ranges_and_exclusions_narrow_the_pool():
    pool = space(gateway="203.0.113.1", range={"start": "203.0.113.10", "end": "203.0.113.20"},
                 exclude=["203.0.113.12", "203.0.113.15-203.0.113.16"])
    assert pool.size() == 11 - 3
    allowed = [pool.address(v) for v in range(pool.first, pool.last + 1) if pool.allowed(v)]
    assert allowed[:3] == ["203.0.113.10", "203.0.113.11", "203.0.113.13"]


def test_ipv6_pools_skip_the_subnet_router_address():
    pool = PoolSpace.from_record({"subnet": "2001:db8::/64", "gateway": "2001:db8::1"})
    assert pool.version == 6
    assert not pool.allowed(int(ipaddress.ip_address("2001:db8::")))
    assert pool.allowed(int(ipaddress.ip_address("2001:db8::10")))


@pytest.mark.parametrize("pool, reason", [
    ({"subnet": "203.0.113.5/24"}, "not a valid CIDR"),
    ({"subnet": "203.0.113.0/33"}, "not a valid CIDR"),
    ({"subnet": "nonsense"}, "not a valid CIDR"),
    ({"subnet": "203.0.113.0/24", "gateway": "198.51.100.1"}, "not a host address"),
    ({"subnet": "203.0.113.0/24", "gateway": "203.0.113.0"}, "not a host address"),
    ({"subnet": "203.0.113.0/24", "range": {"start": "203.0.113.20", "end": "203.0.113.10"}},
     "reversed"),
    ({"subnet": "203.0.113.0/24", "range": {"start": "203.0.113.10", "end": "198.51.100.1"}},
     "not inside"),
    ({"subnet": "203.0.113.0/24", "exclude": ["198.51.100.1"]}, "outside"),
    ({"subnet": "203.0.113.0/24", "exclude": ["2001:db8::1"]}, "not IPv4"),
])
def test_pool_definitions_that_make_no_sense_are_refused(pool, reason):
    with pytest.raises(PoolError, match=reason):
        PoolSpace.from_record(pool)


def test_overlap_is_about_handed_out_addresses():
    a = space(range={"start": "203.0.113.10", "end": "203.0.113.20"})
    b = space(range={"start": "203.0.113.21", "end": "203.0.113.30"})
    c = space(range={"start": "203.0.113.20", "end": "203.0.113.25"})
    assert not a.overlaps(b) and a.overlaps(c) and c.overlaps(b)
    assert not a.overlaps(PoolSpace.from_record({"subnet": "2001:db8::/64"}))


def test_the_index_hands_out_each_address_once_and_says_when_it_is_exhausted():
    index = PoolIndex(space(range={"start": "203.0.113.10", "end": "203.0.113.13"}))
    got = []
    while (value := index.next_free()) is not None:
        index.take(value)
        got.append(index.space.address(value))
    assert got == ["203.0.113.10", "203.0.113.11", "203.0.113.12", "203.0.113.13"]
    assert index.free() == 0
    index.give_back(int(ipaddress.ip_address("203.0.113.11")))
    assert index.space.address(index.next_free()) == "203.0.113.11"


def test_an_index_rebuilt_from_taken_addresses_skips_them():
    pool = space(range={"start": "203.0.113.10", "end": "203.0.113.12"})
    taken = {int(ipaddress.ip_address("203.0.113.10")), int(ipaddress.ip_address("203.0.113.12"))}
    index = PoolIndex(pool, taken)
    assert index.free() == 1 and index.space.address(index.next_free()) == "203.0.113.11"
