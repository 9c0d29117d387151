"""Nodes: the libvirt hosts of the cluster, their connections, facts and kvm verdicts."""

from .join import NodeJoiner
from .local import DEMO_NOTICE, LOCAL_URI
from .manager import NodeManager
from .records import TABLE, NodeRecord

__all__ = ["DEMO_NOTICE", "LOCAL_URI", "TABLE", "NodeJoiner", "NodeManager", "NodeRecord"]
