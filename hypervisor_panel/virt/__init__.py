"""libvirt access: connections with events and reconnects, and XML builders."""
