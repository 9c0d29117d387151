"""The ``rbd`` back end: a Ceph RBD pool; disks are RBD images; clones are RBD clones.

The cephx key goes into a libvirt secret on every node (usage ``client.USER hvp-NAME``), so
neither pool nor domain XML carries it; the API never returns it (``writeOnly``).
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any, BinaryIO, ClassVar

import libvirt

from hypervisor_panel.errors import Invalid, Unavailable
from hypervisor_panel.storage import STREAM_CHUNK, Disk, StorageBackend, call_libvirt

from .checks import check_cluster, cluster_session, decode_key, rados_available

RBD_NS = "http://libvirt.org/schemas/storagepool/rbd/1.0"
ZEROS = bytes(STREAM_CHUNK)
DEFAULT_PORT = 6789
#: librados timeouts (seconds) so that a lost cluster fails tasks instead of hanging them.
TIMEOUTS = {"client_mount_timeout": "10", "rados_mon_op_timeout": "10",
            "rados_osd_op_timeout": "30"}
HOST = r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})"
#: The snapshot every clone of an image is made from (protected while clones exist).
CLONE_SNAPSHOT = "hvp-clone-base"
MONITOR_PATTERN = rf"^{HOST}(:[0-9]{{1,5}})?$"


class RBDStorage(StorageBackend):
    """Ceph RBD: shared by every node, thin, copy-on-write clones of images."""

    name: ClassVar[str] = "rbd"
    description: ClassVar[str] = "Ceph RBD pool (network storage, copy-on-write clones)"
    shared: ClassVar[bool] = True
    copy_on_write: ClassVar[bool] = True
    volume_format: ClassVar[str] = ""
    delete_flags: ClassVar[int] = libvirt.VIR_STORAGE_VOL_DELETE_WITH_SNAPSHOTS
    options_schema: ClassVar[dict] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["monitors"],
        "properties": {
            "monitors": {
                "type": "array",
                "title": "Monitors",
                "description": f"host or host:port of each Ceph monitor (port {DEFAULT_PORT})",
                "items": {"type": "string", "pattern": MONITOR_PATTERN},
                "minItems": 1,
                "maxItems": 16,
                "uniqueItems": True,
            },
            "pool": {"type": "string", "title": "Ceph pool", "default": "rbd",
                     "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"},
            "user": {"type": "string", "title": "Ceph user (without client.)",
                     "default": "libvirt", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
            "key": {"type": "string", "title": "cephx key (base64)", "writeOnly": True,
                    "format": "password", "pattern": r"^[A-Za-z0-9+/=]{16,128}$",
                    "description": "leave empty for a cluster without cephx"},
        },
    }

    # -- pure parts ------------------------------------------------------------------
    @property
    def monitors(self) -> list[tuple[str, int]]:
        out = []
        for item in self.options["monitors"]:
            host, _, port = item.partition(":")
            out.append((host, int(port) if port else DEFAULT_PORT))
        return out

    @property
    def secret_usage(self) -> str:
        return f"client.{self.options.get('user', 'libvirt')} hvp-{self.storage['name']}"

    def pool_xml(self) -> str:
        pool = ET.Element("pool", type="rbd")
        ET.SubElement(pool, "name").text = self.pool_name
        source = ET.SubElement(pool, "source")
        ET.SubElement(source, "name").text = self.options.get("pool", "rbd")
        for host, port in self.monitors:
            ET.SubElement(source, "host", name=host, port=str(port))
        if self.options.get("key"):
            auth = ET.SubElement(source, "auth", type="ceph",
                                 username=self.options.get("user", "libvirt"))
            ET.SubElement(auth, "secret", usage=self.secret_usage)
        opts = ET.SubElement(pool, f"{{{RBD_NS}}}config_opts")
        for name, value in TIMEOUTS.items():
            ET.SubElement(opts, f"{{{RBD_NS}}}option", name=name, value=value)
        return ET.tostring(pool, encoding="unicode")

    def secret_xml(self) -> str:
        secret = ET.Element("secret", ephemeral="no", private="yes")
        ET.SubElement(secret, "description").text = f"cephx key of storage {self.storage['name']}"
        usage = ET.SubElement(secret, "usage", type="ceph")
        ET.SubElement(usage, "name").text = self.secret_usage
        return ET.tostring(secret, encoding="unicode")

    def volume_name(self, vm: dict[str, Any], index: int = 0) -> str:
        return f"{vm['domain_name']}-disk{index}"

    def thin_provisioned(self) -> bool:
        return True

    def disk(self, volume: libvirt.virStorageVol, target: str = "vda") -> Disk:
        """A network disk: libvirt 9.0 refuses ``type='volume'`` disks in rbd pools."""
        key = self.options.get("key")
        return Disk(
            source_type="network",
            source={"protocol": "rbd", "name": f"{self.options.get('pool', 'rbd')}/"
                                               f"{volume.name()}"},
            driver_type="raw",
            target=target,
            hosts=[(h, p) for h, p in self.monitors],
            auth_username=self.options.get("user", "libvirt") if key else None,
            auth_secret_usage=self.secret_usage if key else None,
            auth_type="ceph",
        )

    @classmethod
    def public_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        out = super().public_options(options)
        out["key_set"] = bool(options.get("key"))
        return out

    # -- side effects ----------------------------------------------------------------
    def prepare(self, conn: libvirt.virConnect) -> None:
        """Check the cluster answers to this key, then put the key in a libvirt secret."""
        key = self.options.get("key")
        raw = decode_key(key) if key else None
        check_cluster(self.monitors, self.options.get("user", "libvirt"), key,
                      self.options.get("pool", "rbd"))
        if raw is None:
            return
        secret = call_libvirt(conn.secretDefineXML, self.secret_xml(), 0,
                              what="define the Ceph secret")
        call_libvirt(secret.setValue, raw, 0, what="store the Ceph key")

    def cleanup(self, conn: libvirt.virConnect) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            conn.secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_CEPH,
                                     self.secret_usage).undefine()

    # -- clones: one protected snapshot per image, then an RBD clone --------------------
    def _clone(self, pool: libvirt.virStoragePool, source: libvirt.virStorageVol, name: str,
               size: int) -> libvirt.virStorageVol:
        """An RBD copy-on-write clone of ``source``, in constant time.

        libvirt's own ``createXMLFrom`` looks for a reusable snapshot by diffing every
        snapshot against the image, which takes time proportional to the image's size on
        images without fast-diff; librbd's clone of a fixed protected snapshot does not.
        """
        if not rados_available():
            return super()._clone(pool, source, name, size)
        import rbd

        with self._ioctx() as ioctx:
            with rbd.Image(ioctx, source.name()) as parent:
                snaps = {snap["name"] for snap in parent.list_snaps()}
                if CLONE_SNAPSHOT not in snaps:
                    parent.create_snap(CLONE_SNAPSHOT)
                if not parent.is_protected_snap(CLONE_SNAPSHOT):
                    parent.protect_snap(CLONE_SNAPSHOT)
            try:
                rbd.RBD().clone(ioctx, source.name(), CLONE_SNAPSHOT, ioctx, name,
                                features=rbd.RBD_FEATURE_LAYERING)
            except rbd.ImageExists as exc:
                raise Invalid(f"volume {name!r} already exists", code="volume_exists") from exc
        call_libvirt(pool.refresh, 0, what=f"refresh pool {self.pool_name}")
        return call_libvirt(pool.storageVolLookupByName, name, what=f"find clone {name}")

    # -- streaming: libvirt's rbd pool has no upload/download, librbd does it -----------
    @contextlib.contextmanager
    def _ioctx(self) -> Iterator[Any]:
        """An I/O context on the Ceph pool, through librbd on the panel's machine."""
        if not rados_available():
            raise Unavailable("this needs python3-rados and python3-rbd on the panel's "
                              "machine", code="rbd_library_unavailable")
        with cluster_session(self.monitors, self.options.get("user", "libvirt"),
                             self.options.get("key")) as cluster, \
                cluster.open_ioctx(self.options.get("pool", "rbd")) as ioctx:
            yield ioctx

    @contextlib.contextmanager
    def _image(self, name: str) -> Iterator[Any]:
        import rbd

        with self._ioctx() as ioctx, rbd.Image(ioctx, name) as image:
            yield image

    def download(self, conn: libvirt.virConnect, name: str) -> Iterator[bytes]:
        self.lookup_volume(conn, name)
        with self._image(name) as image:
            size = image.size()
            offset = 0
            while offset < size:
                chunk = image.read(offset, min(STREAM_CHUNK, size - offset))
                offset += len(chunk)
                yield chunk

    def upload(self, conn: libvirt.virConnect, name: str, source: BinaryIO, length: int,
               fresh: bool = False) -> None:
        """Write into the image; into a ``fresh`` one, all-zero chunks are not written, so
        the image stays thin (a restore's holes take no objects)."""
        vol = self.lookup_volume(conn, name)
        if length > vol.info()[1]:
            raise Invalid(f"{length} bytes do not fit in volume {name!r} "
                          f"({vol.info()[1]} bytes)", code="too_large")
        with self._image(name) as image:
            offset = 0
            while offset < length:
                chunk = source.read(min(STREAM_CHUNK, length - offset))
                if not chunk:
                    raise Invalid(f"the upload ended after {offset} of {length} bytes",
                                  code="short_upload")
                if not (fresh and chunk == ZEROS[:len(chunk)]):
                    image.write(chunk, offset)
                offset += len(chunk)
            image.flush()
