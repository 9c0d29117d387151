"""Hypervisor panel: a plugin-based control panel for KVM hosts through libvirt."""

__version__ = "0.1.0"
