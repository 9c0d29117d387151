"""``python app.py backup-panel OUT_FILE`` and ``restore-panel ARCHIVE``: panel backups offline.

The passphrase never comes from the command line: ``--passphrase-file FILE`` (its first
line) or the environment variable ``HVP_BACKUP_PASSPHRASE``. Without one, ``backup-panel``
writes an unencrypted archive (mode 0600) and ``restore-panel`` only opens unencrypted ones.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..backup import PARTIAL_PREFIX, ArchiveWriter, TargetEntry
from ..errors import PanelError
from ..store import Store
from .panel_archive import restore_panel_archive, write_panel_archive
from .panel_format import PanelBackupError

PASSPHRASE_ENV = "HVP_BACKUP_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
READ_CHUNK = 1 << 20


class FileArchiveWriter(ArchiveWriter):
    """An archive written to a local file: ``.partial-NAME`` (0600), renamed on publish."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(PARTIAL_PREFIX + path.name)
        fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._fh = os.fdopen(fd, "wb")
        self.published = False

    def write(self, data: bytes) -> None:
        self._fh.write(data)
        self.offset += len(data)

    def publish(self, expected_size: int) -> TargetEntry:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        size = self.partial.stat().st_size
        if size != expected_size:
            raise PanelBackupError(f"{self.partial} holds {size} bytes, not {expected_size}")
        if self.path.exists():
            raise PanelBackupError(f"{self.path} appeared meanwhile: not replaced")
        os.rename(self.partial, self.path)
        self.published = True
        return TargetEntry(self.path.name, size)

    def abort(self, keep_partial: bool = False) -> None:
        if not self._fh.closed:
            self._fh.close()
        if not keep_partial:
            self.partial.unlink(missing_ok=True)


def read_passphrase(path: str | None) -> str | None:
    """The passphrase from ``path`` (first line) or the environment, else None."""
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise PanelBackupError(f"cannot read the passphrase file: {exc}") from None
        lines = text.splitlines()
        passphrase = lines[0] if lines else ""
    else:
        passphrase = os.environ.get(PASSPHRASE_ENV)
        if passphrase is None:
            return None
    if not passphrase:
        raise PanelBackupError("the passphrase is empty")
    return passphrase


def cmd_backup_panel(args: argparse.Namespace) -> int:
    """Write a backup of the data directory to OUT_FILE (the panel should be stopped)."""
    data_dir, out = Path(args.data_dir), Path(args.out_file)
    store_path = data_dir / "panel.db"
    if not (store_path.exists() or store_path.with_name("panel.db.journal").exists()):
        raise PanelBackupError(f"{data_dir} holds no panel data (no panel.db)")
    if os.path.lexists(out):
        raise PanelBackupError(f"{out} already exists: choose another name")
    passphrase = read_passphrase(args.passphrase_file)
    store = Store(store_path)
    try:
        with FileArchiveWriter(out) as writer:
            manifest = write_panel_archive(data_dir, store, writer, passphrase)
    finally:
        store.close()
    size = manifest["archive"]["size"]
    kind = "encrypted" if passphrase else "unencrypted"
    print(f"Panel backup written to {out}: {len(manifest['files'])} files, {size} bytes, "
          f"{kind}", flush=True)
    return 0


def _chunks(path: Path) -> Any:
    with open(path, "rb") as fh:
        while data := fh.read(READ_CHUNK):
            yield data


def cmd_restore_panel(args: argparse.Namespace) -> int:
    """Restore ARCHIVE into the data directory (verified first; the panel must be stopped)."""
    archive, data_dir = Path(args.archive), Path(args.data_dir)
    if not archive.is_file():
        raise PanelBackupError(f"{archive} is not a file")
    result = restore_panel_archive(_chunks(archive), data_dir,
                                   read_passphrase(args.passphrase_file), force=args.force)
    print(f"Restored the panel backup of {result['created']} (panel "
          f"{result['panel_version']}, {len(result['files'])} files) into "
          f"{result['restored_to']}", flush=True)
    if result["previous"]:
        print(f"The previous data directory is kept as {result['previous']}", flush=True)
    return 0


def _run(func: Callable[[argparse.Namespace], int],
         default_dir: Callable[[], Path]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        args.data_dir = args.data_dir or str(default_dir())
        try:
            return func(args)
        except PanelError as exc:
            print(f"error: {exc.message}", file=sys.stderr, flush=True)
            return 1

    return run


def add_commands(sub: Any, default_dir: Callable[[], Path]) -> None:
    """Add ``backup-panel`` and ``restore-panel`` to the CLI's subparsers."""
    backup = sub.add_parser("backup-panel", help="back the panel's data directory up to a "
                            "file (offline: stop the panel first)")
    backup.add_argument("out_file", metavar="OUT_FILE")
    restore = sub.add_parser("restore-panel", help="restore a panel backup into the data "
                             "directory (verified before anything is replaced)")
    restore.add_argument("archive", metavar="ARCHIVE")
    restore.add_argument("--force", action="store_true",
                         help="replace a non-empty data directory (kept as DIR.old-TIME)")
    for parser, func in ((backup, cmd_backup_panel), (restore, cmd_restore_panel)):
        parser.add_argument("--data-dir", default=None,
                            help="the panel's data directory (env HVP_DATA_DIR)")
        parser.add_argument("--passphrase-file", default=None, metavar="FILE",
                            help=f"file whose first line is the passphrase (else env "
                                 f"{PASSPHRASE_ENV}; never on the command line)")
        parser.set_defaults(func=_run(func, default_dir))
