"""Core API routes, registered on the panel's ApiRouter like plugin routes are."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import account, resources, system, vms, volumes

if TYPE_CHECKING:
    from ...panel import Panel


def register_core_routes(panel: Panel) -> None:
    for module in (system, account, resources, vms, volumes):
        module.register(panel)
