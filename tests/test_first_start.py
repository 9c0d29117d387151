"""The first minutes of a real admin: the demo-node notice, and the local libvirtd offered
as a node once it answers (a data directory made on the demo node keeps only that node)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from hypervisor_panel import cli, nodes
from tests.conftest import node_uri_for
from tests.support.realvirt import ensure_libvirtd, served_panel


def test_without_a_libvirtd_one_clear_line_names_the_demo_node(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture):
    # No libvirtd answers at this URI (as on a machine without libvirt installed).
    monkeypatch.setattr(nodes.local, "LOCAL_URI", f"qemu+unix:///system?socket={tmp_path}/none")
    monkeypatch.setenv("HVP_ADMIN_PASSWORD", "first-start-password")
    args = argparse.Namespace(data_dir=str(tmp_path / "data"), node_uri=None)
    panel = cli.build_panel(args)
    try:
        out, err = capfd.readouterr()
        assert nodes.DEMO_NOTICE in out
        assert "XML-RPC error" not in err and "Failed to connect socket" not in err
        assert [n["kind"] for n in panel.store.all("nodes")] == ["demo"]
        assert panel.nodes.local_candidate() == {"uri": nodes.local.LOCAL_URI, "answers": False,
                                                 "node_exists": False, "offer": False}
    finally:
        panel.close()


@pytest.mark.slow
def test_a_local_libvirtd_that_answers_later_is_offered_and_added(tmp_path: Path):
    ensure_libvirtd()
    with served_panel(tmp_path / "data", node_uri_for(tmp_path)) as (panel, admin):
        offer = admin.get("/api/v1/nodes/local-libvirt")
        assert offer.status == 200 and offer.body["offer"] is True, offer
        added = admin.post("/api/v1/nodes/local-libvirt")
        assert added.status == 201, added
        node = added.body
        assert (node["name"], node["kind"], node["uri"]) == ("local", "local",
                                                             "qemu:///system")
        assert node["status"] == "online"
        again = admin.post("/api/v1/nodes/local-libvirt")
        assert again.status == 409 and again.body["error"]["code"] == "already_exists"
        assert admin.get("/api/v1/nodes/local-libvirt").body["offer"] is False
        kinds = sorted(n["kind"] for n in admin.get("/api/v1/nodes").body["items"])
        assert kinds == ["demo", "local"]  # the demo node stays until the admin removes it
        assert admin.delete(f"/api/v1/nodes/{node['id']}").status == 204
        assert admin.get("/api/v1/nodes/local-libvirt").body["offer"] is True
