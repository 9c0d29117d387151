"""Issue 3: provisioning a VM disk from a 2 GiB and a 20 GiB image, on dir and on RBD.

Copy-on-write means the time does not grow with the image: the goal is a 20 GiB / 2 GiB
time ratio of at most 1.2, and under 1 s each. Measured on the real libvirtd (dir pool,
qcow2 backing-file clones) and on a real single-node Ceph cluster (RBD clones), twice:
the storage operation alone (``clone_volume``) and a whole VM creation through the API
(the task's own start-to-finish time). The images are thin (mostly unwritten); the first
64 MiB of each hold data so that the clone has something to share.

Issue 10 adds a third measurement on dir: a VM created with ``os_template`` from an OS
template of 2 vs 20 GiB (qcow2 images with 64 MiB of data, uploaded through the API): the
task clones the image, grows the clone to the VM template's 20 GiB disk and writes the
cloud-init seed.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import subprocess
import time
import uuid
from pathlib import Path

from hypervisor_panel.panel import Panel
from hypervisor_panel.storage import GIB
from hypervisor_panel.web.app import create_app
from hypervisor_panel.web.server import serve_in_thread

from ._support import ADMIN_PASSWORD, BenchError, JsonClient, Report, fmt_ms, summarize

NAME = "provision"
GOAL = ("VM disk from a 2 GiB vs 20 GiB image (dir, RBD) and VM from a 2 vs 20 GiB OS "
        "template (dir): ratio <= 1.2 and < 1 s each")
ROUNDS = 7
OS_ROUNDS = 11  # the OS-template case is noisier (seed, resize): more rounds
MAX_RATIO = 1.2
LIMIT = 1.0
SIZES = (2, 20)


def _ensure_libvirtd() -> str:
    repo = Path(__file__).resolve().parents[1]
    subprocess.run(["bash", str(repo / "scripts/services/libvirtd.sh"), "start"], check=True,
                   capture_output=True, timeout=120)
    return "qemu:///system"


def _measure(report: Report, panel: Panel, client: JsonClient, storage: dict,
             label: str) -> None:
    node_id = next(iter(storage["nodes"]))
    conn = panel.nodes.connection(node_id).get()
    backend = panel.storages.backend(panel.storages.require(storage["id"]))
    seed = b"HVP-BENCH-IMAGE" * (64 * 1024 * 1024 // 15)
    for size in SIZES:
        name = f"img{size}"
        backend.create_volume(conn, name, size * GIB, "raw" if backend.volume_formats else None)
        backend.upload(conn, name, _Bytes(seed), len(seed))
    template = client.call("POST", "/api/v1/vm-templates",
                           {"name": f"bench-{label}", "memory_mib": 64, "vcpus": 1,
                            "disk_gib": 1}, expect=(201,))["id"]
    # Sizes alternate, and which goes first flips every round, so both see pools with as
    # many volumes on average (refresh cost grows with it) and neither always runs second.
    clone_times: dict[int, list[float]] = {size: [] for size in SIZES}
    vm_times: dict[int, list[float]] = {size: [] for size in SIZES}
    for i in range(ROUNDS):
        for size in (SIZES if i % 2 == 0 else SIZES[::-1]):
            started = time.perf_counter()
            backend.clone_volume(conn, f"img{size}", f"c{size}-{i}")
            clone_times[size].append(time.perf_counter() - started)
            body = client.call("POST", "/api/v1/vms", {
                "name": f"p{label}{size}-{i}", "vm_template": template,
                "storage": storage["id"], "image": f"img{size}"}, expect=(202,))
            (task,) = client.wait_tasks([body["task"]["id"]])
            if task["state"] != "succeeded":
                raise BenchError(f"VM creation failed: {task['error']}")
            vm_times[size].append(task["finished"] - task["started"])
    clone_medians = {size: summarize(clone_times[size]) for size in SIZES}
    vm_medians = {size: summarize(vm_times[size]) for size in SIZES}
    for size in SIZES:
        report.info(f"{label}: clone_volume from a {size} GiB image", clone_medians[size].ms())
        report.info(f"{label}: VM create task from a {size} GiB image", vm_medians[size].ms())
    for what, medians in (("clone", clone_medians), ("VM create", vm_medians)):
        small, big = medians[SIZES[0]].median, medians[SIZES[1]].median
        ratio = big / small
        report.check(f"{label}: {what} time 20 GiB / 2 GiB", f"{ratio:.2f}x "
                     f"({fmt_ms(big)} vs {fmt_ms(small)})", f"<= {MAX_RATIO}x",
                     ratio <= MAX_RATIO)
        report.check(f"{label}: {what} from the 20 GiB image", fmt_ms(big), f"< {LIMIT:.0f} s",
                     big < LIMIT)
    for vm in client.call("GET", "/api/v1/vms")["items"]:
        body = client.call("DELETE", f"/api/v1/vms/{vm['id']}", expect=(202,))
        client.wait_tasks([body["task"]["id"]])
    for size in SIZES:
        for i in range(ROUNDS):
            backend.delete_volume(conn, f"c{size}-{i}")
    for size in SIZES:
        backend.delete_volume(conn, f"img{size}")


def _upload_template(client: JsonClient, storage: dict, size: int, workdir: Path) -> str:
    """An OS template of ``size`` GiB (qcow2, 64 MiB written) uploaded through the API."""
    image = workdir / f"os{size}.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), f"{size}G"],
                   check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -q -P 0x5a 0 64M", str(image)],
                   check=True, capture_output=True)
    data = image.read_bytes()
    image.unlink()
    made = client.call("POST", "/api/v1/os-templates/uploads", {
        "name": f"bench-os{size}", "os_family": "bench", "format": "qcow2",
        "storage": storage["id"], "sha256": hashlib.sha256(data).hexdigest()}, expect=(201,))
    conn = http.client.HTTPConnection(client.host, client.port, timeout=300)
    try:
        conn.request("PUT", f"/api/v1/os-templates/{made['id']}/content", body=data,
                     headers={"Authorization": f"Bearer {client.token}",
                              "Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        payload = resp.read()
    finally:
        conn.close()
    if resp.status != 202:
        raise BenchError(f"upload of a {size} GiB OS template -> {resp.status}: {payload[:300]!r}")
    (task,) = client.wait_tasks([json.loads(payload)["task"]["id"]])
    if task["state"] != "succeeded":
        raise BenchError(f"OS template upload failed: {task['error']}")
    return made["id"]


def _measure_templates(report: Report, client: JsonClient, storage: dict,
                       workdir: Path) -> None:
    templates = {size: _upload_template(client, storage, size, workdir) for size in SIZES}
    vm_template = client.call("POST", "/api/v1/vm-templates", {
        "name": "bench-os", "memory_mib": 256, "vcpus": 1, "disk_gib": SIZES[-1]},
        expect=(201,))["id"]
    times: dict[int, list[float]] = {size: [] for size in SIZES}
    for i in range(OS_ROUNDS):
        for size in SIZES:
            body = client.call("POST", "/api/v1/vms", {
                "name": f"os{size}-{i}", "vm_template": vm_template, "storage": storage["id"],
                "os_template": templates[size]}, expect=(202,))
            (task,) = client.wait_tasks([body["task"]["id"]])
            if task["state"] != "succeeded":
                raise BenchError(f"VM creation from an OS template failed: {task['error']}")
            times[size].append(task["finished"] - task["started"])
    medians = {size: summarize(times[size]) for size in SIZES}
    for size in SIZES:
        report.info(f"dir: VM create task from a {size} GiB OS template", medians[size].ms())
    small, big = medians[SIZES[0]].median, medians[SIZES[1]].median
    report.check("dir: VM from OS template time 20 GiB / 2 GiB",
                 f"{big / small:.2f}x ({fmt_ms(big)} vs {fmt_ms(small)})", f"<= {MAX_RATIO}x",
                 big / small <= MAX_RATIO)
    report.check("dir: VM from the 20 GiB OS template", fmt_ms(big), f"< {LIMIT:.0f} s",
                 big < LIMIT)
    for vm in client.call("GET", "/api/v1/vms")["items"]:
        body = client.call("DELETE", f"/api/v1/vms/{vm['id']}", expect=(202,))
        client.wait_tasks([body["task"]["id"]])
    for template_id in templates.values():
        client.call("DELETE", f"/api/v1/os-templates/{template_id}", expect=(204,))
    client.call("DELETE", f"/api/v1/vm-templates/{vm_template}", expect=(204,))


def _remove_all(client: JsonClient, storage: dict) -> None:
    """Best effort, also after a failed measurement: VMs, OS templates, volumes, storage."""
    for vm in client.call("GET", "/api/v1/vms")["items"]:
        status, payload = client.raw("DELETE", f"/api/v1/vms/{vm['id']}")
        if status == 202:
            client.wait_tasks([json.loads(payload)["task"]["id"]])
    for template in client.call("GET", "/api/v1/os-templates")["items"]:
        client.raw("DELETE", f"/api/v1/os-templates/{template['id']}")
    base = f"/api/v1/storages/{storage['id']}/volumes"
    for vol in client.call("GET", base)["items"]:
        client.raw("DELETE", f"{base}/{vol['name']}")
    client.raw("DELETE", f"/api/v1/storages/{storage['id']}")


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int) -> bytes:
        chunk = self.data[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk


def run(workdir: Path) -> Report:
    report = Report()
    workdir.mkdir(parents=True, exist_ok=True)
    uri = _ensure_libvirtd()
    tag = uuid.uuid4().hex[:6]
    panel = Panel(workdir / "data", local_uri=uri, default_storage_path=None)
    panel.start(admin_password=ADMIN_PASSWORD)
    server, port = serve_in_thread(create_app(panel))
    client = JsonClient(port).login()
    cluster_dir = None
    try:
        path = f"/var/lib/libvirt/images/hvp-bench-{tag}"
        storage = client.call("POST", "/api/v1/storages", {
            "name": f"bench-{tag}", "backend": "dir", "options": {"path": path}}, expect=(201,))
        try:
            _measure(report, panel, client, storage, "dir")
            _measure_templates(report, client, storage, workdir)
        finally:
            _remove_all(client, storage)
            subprocess.run(["rm", "-rf", path], check=False)
        try:
            from tests.support.ceph import start_ceph
        except ImportError as exc:
            raise BenchError(f"RBD part needs tests/support/ceph.py: {exc}") from exc
        cluster_dir = Path(subprocess.run(["mktemp", "-d", "/tmp/hvpbc-XXXXXX"], check=True,
                                          capture_output=True, text=True).stdout.strip())
        started = time.perf_counter()
        ceph = start_ceph(cluster_dir)
        report.info("setup: single-node Ceph cluster (memstore OSD)",
                    fmt_ms(time.perf_counter() - started))
        storage = client.call("POST", "/api/v1/storages", {
            "name": f"rbd-{tag}", "backend": "rbd",
            "options": {"monitors": [ceph.mon_addr], "pool": ceph.pool,
                        "user": ceph.libvirt_user, "key": ceph.libvirt_key}}, expect=(201,))
        _measure(report, panel, client, storage, "rbd")
        client.call("DELETE", f"/api/v1/storages/{storage['id']}", expect=(204,))
    finally:
        if cluster_dir is not None:
            from tests.support.ceph import stop_ceph

            stop_ceph(cluster_dir)
            subprocess.run(["rm", "-rf", str(cluster_dir)], check=False)
        client.close()
        server.stop()
        panel.close()
    return report
