"""The network-mode contract (bridged, NAT, ...): implemented by plugins in a later issue."""

from __future__ import annotations

from typing import Any, ClassVar


class NetworkMode:
    """Base class for network modes registered via ``register_network_modes``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    options_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}

    def __init__(self, network: dict[str, Any]) -> None:
        self.network = network
        self.options: dict[str, Any] = network.get("options", {})

    def network_xml(self) -> str | None:
        """The libvirt network XML, or None when the mode uses an existing bridge."""
        raise NotImplementedError
