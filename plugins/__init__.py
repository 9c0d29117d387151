"""Built-in capability plugins, installed as ``hypervisor_panel_plugins``."""
