"""The one way to turn a libvirt error into a message for people."""

from __future__ import annotations

import libvirt


def libvirt_message(exc: libvirt.libvirtError) -> str:
    """libvirt's own message, stripped (its str() repeats the function name)."""
    return (exc.get_error_message() or str(exc)).strip()
