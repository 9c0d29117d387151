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


def test_the_journal_stays_bounded_across_restarts(tmp_path: Path):
    """A panel restarted more often than every ``compact_every`` writes still compacts:
    the lines found at open count, and an over-full journal is compacted at open."""
    path, journal = tmp_path / "db.json", tmp_path / "db.json.journal"
    for restart in range(20):
        store = Store(path, compact_every=10)
        for i in range(3):
            store.insert("t", {"id": f"{restart}-{i}", "n": i})
        store.update("t", "0-0", {"restarts": restart})
        store.close()
        assert len(journal.read_bytes().splitlines()) < 10, f"restart {restart}"
    store = Store(path, compact_every=10)
    assert store.count("t") == 60 and store.get("t", "0-0")["restarts"] == 19
    assert len(journal.read_bytes().splitlines()) < 10
    store.close()
    # A journal already past the threshold (written with a bigger one) is compacted at open.
    big = Store(path, compact_every=1000)
    for i in range(30):
        big.insert("u", {"id": str(i)})
    big.close()
    Store(path, compact_every=10).close()
    assert journal.read_bytes() == b"" and json.loads(path.read_text())["tables"]["u"]


def test_the_name_index_follows_inserts_renames_deletes_and_restarts(tmp_path: Path):
    path = tmp_path / "db.json"
    store = Store(path)
    store.insert("t", {"id": "a", "name": "one"})
    assert store.find_one("t", name="one")["id"] == "a"  # the index is built here
    store.insert("t", {"id": "b", "name": "two"})
    store.insert("t", {"id": "c", "name": ["not", "hashable"]})
    store.insert("t", {"id": "d"})
    assert store.find_one("t", name="two")["id"] == "b"
    store.update("t", "b", {"name": "deux"})
    assert store.find("t", name="two") == [] and store.find_one("t", name="deux")["id"] == "b"
    store.update("t", "b", {"size": 3})  # a change of another field keeps the index
    assert store.find_one("t", name="deux")["size"] == 3
    assert store.find("t", name=["not", "hashable"])[0]["id"] == "c"  # scans
    assert [d["id"] for d in store.find("t", name=None)] == ["d"]
    store.insert("t", {"id": "e", "name": "one"})  # the store does not enforce uniqueness
    store.update("t", "a", {"x": 1})
    assert [d["id"] for d in store.find("t", name="one")] == ["a", "e"]  # table order
    assert store.find("t", name="one", x=1) == [{"id": "a", "name": "one", "x": 1}]
    store.delete("t", "a")
    assert [d["id"] for d in store.find("t", name="one")] == ["e"]
    store.delete_many("t", ["e", "missing"])
    assert store.find("t", name="one") == []
    store.insert("t", {"id": "f", "name": "one"})
    store.close()
    again = Store(path)
    assert again.find_one("t", name="one")["id"] == "f"
    assert again.find_one("t", name="deux")["id"] == "b" and again.find("t", name="two") == []
    assert again.find_one("t", name="missing") is None and again.find("nothing", name="x") == []
    again.close()


KILLER = r'''
import sys
sys.path.insert(0, sys.argv[2])
from hypervisor_panel.store import Store
store = Store(sys.argv[1], compact_every=40)
n = store.count("items")
print("loaded", n, flush=True)
while True:
    store.insert("items", {"id": f"k{n}", "n": n, "pad": "x" * 100})
    print(n, flush=True)   # acknowledged: the write returned
    n += 1
'''


@pytest.mark.slow
def test_sigkill_50_times_during_a_stream_of_writes_loses_nothing(tmp_path: Path):
    """50 SIGKILLs at random moments: every restart loads, 0 acknowledged writes lost."""
    import random

    path, acked, rng = tmp_path / "db.json", set(), random.Random(12)
    for _ in range(50):
        proc = subprocess.Popen([sys.executable, "-c", KILLER, str(path), os.getcwd()],
                                stdout=subprocess.PIPE, text=True)
        loaded = proc.stdout.readline().split()  # the store loaded (none may be lost)
        assert loaded and loaded[0] == "loaded", "a restart did not load"
        assert int(loaded[1]) >= len(acked)
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        acked.update(int(line) for line in out.split())
    store = Store(path)
    missing = [i for i in sorted(acked) if store.get("items", f"k{i}") is None]
    assert missing == [] and len(acked) > 50
    store.close()
