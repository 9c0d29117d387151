"""Placement and quotas: pure functions, no libvirt."""

from __future__ import annotations

from hypervisor_panel.vms.placement import (
    NodeRoom,
    Usage,
    choose_node,
    quota_problem,
    usage_of,
)


def test_the_node_with_the_most_memory_left_wins():
    rooms = [NodeRoom("a", 8192, 6144), NodeRoom("b", 4096, 0), NodeRoom("c", 16384, 15000)]
    assert choose_node(rooms, 1024, 1.0) == "b"  # 4096 left beats 2048 and 1384


def test_overcommit_makes_room_and_nothing_fits_without_it():
    full = [NodeRoom("a", 8192, 8192)]
    assert choose_node(full, 512, 1.0) is None
    assert choose_node(full, 512, 1.5) == "a"  # 12288 promised, 8192 placed
    assert choose_node([], 16, 10.0) is None


def test_ties_go_to_the_first_candidate_and_exact_fits_count():
    rooms = [NodeRoom("a", 2048), NodeRoom("b", 2048)]
    assert choose_node(rooms, 2048, 1.0) == "a"
    assert choose_node(rooms, 2049, 1.0) is None


def test_usage_sums_vm_records():
    vms = [{"vcpus": 2, "memory_mib": 1024, "disk_gib": 10},
           {"vcpus": 1, "memory_mib": 512, "disk_gib": 5}]
    assert usage_of(vms) == Usage(vms=2, vcpus=3, memory_mib=1536, disk_gib=15)
    assert usage_of([]) == Usage()


def test_quota_names_the_first_limit_a_new_vm_would_cross():
    used = Usage(vms=1, vcpus=2, memory_mib=1024, disk_gib=10)
    one = Usage(vms=1, vcpus=2, memory_mib=1024, disk_gib=10)
    assert quota_problem({}, used, one) is None
    assert quota_problem({"vms": 2, "vcpus": 4}, used, one) is None  # exactly at the limit
    assert quota_problem({"vms": 1}, used, one) == "quota exceeded: at most 1 VMs"
    assert quota_problem({"memory_mib": 1536}, used, one) == \
        "quota exceeded: at most 1536 MiB of RAM"
    assert quota_problem({"disk_gib": 15}, used, one) == "quota exceeded: at most 15 GiB of disk"
