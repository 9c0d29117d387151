"""The core's API routes, declared on a framework-free route table like plugin routes."""

from __future__ import annotations

from ..host import PanelHost
from ..routes import RouteTable
from . import (
    account,
    audit,
    backups,
    interfaces,
    networks,
    nodes,
    os_templates,
    recipes,
    snapshots,
    storages,
    system,
    templates,
    vms,
)


def core_routes(panel: PanelHost) -> RouteTable:
    """Every core route (the web glue serves them; OpenAPI describes them)."""
    table = RouteTable()
    for module in (system, account, nodes, templates, storages, networks, os_templates,
                   recipes, vms, interfaces, snapshots, backups, audit):
        module.declare(table, panel)
    return table
