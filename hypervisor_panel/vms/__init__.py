"""VMs: create from a template on a node and storage, lifecycle, migration, live state."""

from .records import TABLE, DiskRecord, VMRecord
from .service import VMService

__all__ = ["TABLE", "DiskRecord", "VMRecord", "VMService"]
