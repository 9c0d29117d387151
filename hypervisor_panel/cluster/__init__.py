"""Cluster nodes reached over SSH: host-key pinning, node checks, joining."""
