"""Goal (issue 10): a recipe's output reaches the task log within 1 s of being printed.

* Setup: the project's own sshd on 127.0.0.1 (``scripts/services/sshd.sh``) standing in for
  a guest, a key it accepts, its host key pinned; the panel's ``RecipeService`` on a fresh
  store (no libvirt involved: this measures the SSH runner and the task log).
* Measured: a recipe prints ``HVP-T <time>`` lines one second apart; the bench polls the
  task record every 10 ms and takes, for each line, the time it appeared in the task log
  minus the time the "guest" printed it (same machine, same clock).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from hypervisor_panel.events import EventLog
from hypervisor_panel.guest_ssh import GuestEndpoint
from hypervisor_panel.recipe_service import RecipeService
from hypervisor_panel.references import References
from hypervisor_panel.store import Store
from hypervisor_panel.tasks import TaskManager
from hypervisor_panel.vms.guest_keys import new_keypair

from ._support import REPO, BenchError, Report, fmt_ms, summarize

NAME = "recipe_latency"
GOAL = "recipe output reaches the task log within 1 s of being printed (max)"
LINES = 6
LIMIT = 1.0
SCRIPT = f"""#!/bin/sh
# metadata_begin
# recipe: bench_latency
# tags: any
# revision: 1
# metadata_end
for i in $(seq {LINES}); do echo "HVP-T $(date +%s.%N)"; sleep 1; done
"""
USER = {"id": "bench", "name": "bench", "role": "admin"}


def _sshd(folder: Path, command: str) -> dict[str, str]:
    proc = subprocess.run(["bash", str(REPO / "scripts" / "services" / "sshd.sh"), command,
                           str(folder)], capture_output=True, text=True, timeout=60,
                          check=False)
    if proc.returncode != 0:
        raise BenchError(f"sshd.sh {command}: {proc.stderr.strip()}")
    env = folder / "env"
    return dict(line.split("=", 1) for line in env.read_text().split()) if env.exists() else {}


def _latencies(store: Store, task_id: str, deadline: float) -> list[float]:
    seen: dict[str, float] = {}
    while time.monotonic() < deadline:
        task = store.get("tasks", task_id) or {}
        now = time.time()
        for line in task.get("log", []):
            if "HVP-T " in line and line not in seen:
                seen[line] = now - float(line.split("HVP-T ", 1)[1].split()[0])
        if task.get("state") in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.01)
    return list(seen.values())


def run(workdir: Path) -> Report:
    report = Report()
    folder = Path(tempfile.mkdtemp(prefix="hvps-", dir="/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    store = Store(workdir / "panel.db")
    tasks = TaskManager(store)
    try:
        env = _sshd(folder, "start")
        private, public = new_keypair("bench@recipe")
        key = folder / "client_key"
        key.write_text(private)
        key.chmod(0o600)
        with open(env["SSHD_AUTHORIZED_KEYS"], "a") as fh:
            fh.write(public + "\n")
        host_key = " ".join(Path(env["SSHD_HOST_KEY_PUB"]).read_text().split()[:2])
        endpoint = GuestEndpoint("127.0.0.1", int(env["SSHD_PORT"]), "root", key, host_key)
        recipes = RecipeService(store, tasks, EventLog(store), References(), {})
        recipe = recipes.add({"script": SCRIPT}, USER)
        task = recipes.run(endpoint, recipe["id"], {}, USER, "bench-vm")
        samples = _latencies(store, task["id"], time.monotonic() + LINES + 30)
        final = store.get("tasks", task["id"]) or {}
    finally:
        tasks.shutdown()
        store.close()
        _sshd(folder, "stop")
        shutil.rmtree(folder, ignore_errors=True)
    if len(samples) < LINES:
        raise BenchError(f"only {len(samples)} of {LINES} lines arrived "
                         f"(task {final.get('state')}: {final.get('error')})")
    stats = summarize(samples)
    report.check("print -> task log, worst of the lines", fmt_ms(stats.max), "max < 1 s",
                 stats.max < LIMIT)
    report.info("print -> task log", stats.ms())
    return report
