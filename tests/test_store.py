"""The embedded store: concurrent writers, SIGKILL at any moment, torn journal tails."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hypervisor_panel.errors import Conflict, NotFound
from hypervisor_panel.store import CorruptStore, Store

WRITER = r'''
import sys
sys.path.insert(0, sys.argv[2])
from hypervisor_panel.store import Store
store = Store(sys.argv[1], compact_every=50)
i = 0
while True:
    store.insert("items", {"id": f"k{i}", "n": i, "pad": "x" * 200})
    if i % 3 == 0:
        store.update("items", f"k{i // 2}", {"touched": i})
    print(i, flush=True)   # acknowledged: the write returned
    i += 1
'''


def test_basic_crud_and_reload(tmp_path: Path):
    store = Store(tmp_path / "db.json")
    store.insert("vms", {"id": "a", "name": "one", "disk": {"size": 1}})
    with pytest.raises(Conflict):
        store.insert("vms", {"id": "a", "name": "dup"})
    store.update("vms", "a", {"state": "running"})
    store.insert("vms", {"id": "b", "name": "two"})
    store.delete("vms", "b")
    with pytest.raises(NotFound):
        store.update("vms", "b", {"x": 1})
    assert store.find("vms", name="one")[0]["state"] == "running"
    store.close()
    again = Store(tmp_path / "db.json")
    assert again.all("vms") == [{"id": "a", "name": "one", "disk": {"size": 1},
                                 "state": "running"}]


def test_concurrent_writers_lose_nothing(tmp_path: Path):
    store = Store(tmp_path / "db.json", compact_every=100)

    def work(t: int) -> None:
        for i in range(150):
            store.insert("items", {"id": f"{t}-{i}", "n": i})
            store.update("items", f"{t}-{i}", {"seen": True})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert store.count("items") == 1200
    store.close()
    reloaded = Store(tmp_path / "db.json")
    items = reloaded.all("items")
    assert len(items) == 1200 and all(item["seen"] for item in items)


@pytest.mark.parametrize("delay", [0.15, 0.4, 0.9])
def test_sigkill_keeps_every_acknowledged_write(tmp_path: Path, delay: float):
    path = tmp_path / "db.json"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), os.getcwd()],
                            stdout=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # the writer is running (start-up is slow under load)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate()
    acked = [int(line) for line in (first + out).split()]
    assert acked, "the writer acknowledged nothing"
    last = acked[-1]
    store = Store(path)
    for i in range(last + 1):
        doc = store.get("items", f"k{i}")
        assert doc is not None and doc["n"] == i, f"acknowledged write k{i} lost"
    for i in range(0, last + 1, 3):
        assert store.get("items", f"k{i // 2}")["touched"] >= i


def test_torn_tail_is_ignored_but_damage_in_the_middle_is_refused(tmp_path: Path):
    path = tmp_path / "db.json"
    store = Store(path)
    store.insert("t", {"id": "a", "v": 1})
    store.insert("t", {"id": "b", "v": 2})
    store.close()
    journal = Path(str(path) + ".journal")
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines) + lines[-1][:20])  # a write cut short by a crash
    reopened = Store(path)
    assert {d["id"] for d in reopened.all("t")} == {"a", "b"}
    # The torn bytes are cut off: writes after the crash are appended to whole lines only.
    reopened.insert("t", {"id": "c", "v": 3})
    reopened.insert("t", {"id": "d", "v": 4})
    reopened.close()
    assert {d["id"] for d in Store(path).all("t")} == {"a", "b", "c", "d"}
    lines = journal.read_bytes().splitlines(keepends=True)[:2]
    broken = lines[0][:12] + b"X" + lines[0][13:]
    journal.write_bytes(broken + lines[1])
    with pytest.raises(CorruptStore):
        Store(path)


def test_compaction_writes_a_snapshot_and_empties_the_journal(tmp_path: Path):
    path = tmp_path / "db.json"
    store = Store(path, compact_every=10)
    for i in range(25):
        store.insert("t", {"id": str(i)})
    snapshot = json.loads(path.read_text())
    assert snapshot["seq"] == 20 and len(snapshot["tables"]["t"]) == 20
    assert len(Path(str(path) + ".journal").read_bytes().splitlines()) == 5
    store.close()
    assert Store(path).count("t") == 25
