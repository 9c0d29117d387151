"""A panel restore asked for through the API, applied at the next start.

A running panel cannot swap its own data directory under its open store, so the restore
task downloads the archive next to the data directory (``.<name>.pending-restore``, 0600),
verifies it whole (hashes, authentication), and leaves it there with its passphrase (0600,
deleted after use). The next start restores it before the store is opened, exactly as
``python app.py restore-panel ARCHIVE --force`` would: the old data directory is kept as
``<name>.old-<time>``. A pending archive that fails to restore is renamed ``.failed`` and
the panel starts on the data it has.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .panel_archive import read_panel_manifest, restore_panel_archive

log = logging.getLogger(__name__)


def pending_paths(data_dir: Path) -> tuple[Path, Path]:
    """(the archive, its passphrase file) of a pending restore of ``data_dir``."""
    data_dir = Path(data_dir).absolute()
    base = data_dir.with_name(f".{data_dir.name}.pending-restore")
    return base, base.with_name(base.name + ".pass")


def _write_private(path: Path, chunks: Iterable[bytes]) -> int:
    tmp = path.with_name(path.name + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    size = 0
    with os.fdopen(fd, "wb") as fh:
        for chunk in chunks:
            fh.write(chunk)
            size += len(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return size


def stage(data_dir: Path, chunks: Iterable[bytes], passphrase: str | None) -> dict[str, Any]:
    """Download and verify an archive as the pending restore; its manifest."""
    archive, secret = pending_paths(data_dir)
    try:
        _write_private(archive, chunks)
        with open(archive, "rb") as fh:
            manifest = read_panel_manifest(fh, passphrase)
        if passphrase:
            _write_private(secret, [passphrase.encode()])
        else:
            secret.unlink(missing_ok=True)
    except BaseException:
        for path in (archive, secret, archive.with_name(archive.name + ".part")):
            path.unlink(missing_ok=True)
        raise
    return manifest


def apply_pending(data_dir: Path) -> dict[str, Any] | None:
    """At start, before the store opens: restore a pending archive (None when there is none)."""
    archive, secret = pending_paths(data_dir)
    if not archive.exists():
        return None
    passphrase = secret.read_text() if secret.exists() else None
    try:
        with open(archive, "rb") as fh:
            manifest = restore_panel_archive(fh, data_dir, passphrase, force=True)
    except Exception as exc:  # noqa: BLE001 - the panel must still start on its old data
        log.error("the pending panel restore failed, starting on the old data: %s", exc)
        with contextlib.suppress(OSError):
            archive.rename(archive.with_name(archive.name + ".failed"))
        secret.unlink(missing_ok=True)
        return None
    archive.unlink(missing_ok=True)
    secret.unlink(missing_ok=True)
    log.warning("restored the panel from a backup; the old data is in %s",
                manifest.get("previous"))
    return manifest
