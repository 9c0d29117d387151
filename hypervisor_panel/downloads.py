"""Getting an image file right: a resumable, verified download, decompression, checks.

* :func:`download` writes ``DEST.part``, resumes it from its size after a broken
  connection (and across attempts: a ``.part`` left by an earlier one is hashed, then
  continued), computes the SHA-256 over every byte, and renames the file to ``DEST`` only
  once the hash matched; a mismatch deletes it.
* :func:`decompress` streams gzip, xz or zstd into a file, refusing corrupt or truncated
  data and output past a limit (a decompression bomb).
* :func:`inspect_image` asks ``qemu-img`` what a file is: the format must be the one the
  metadata names, a qcow2 must pass ``qemu-img check`` and may not point at another file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from .errors import BadRequest, Invalid, PanelError, Unavailable

CHUNK = 1024 * 1024
OUT_CHUNK = 4 * 1024 * 1024
ZSTD_IN_CHUNK = 2048  # zstd has no output limit per call: small inputs bound the output
QEMU_IMG_TIMEOUT = 600

Opener = Callable[[int], tuple[BinaryIO, int]]  # offset -> (stream from there, whole size)
Progress = Callable[[int, int], None]  # (bytes done, bytes in all)
Check = Callable[[], None]  # raises to stop (a cancelled task)
Watch = Callable[[Callable[[], None]], Callable[[], None]]  # TaskContext.on_cancel


class ChecksumMismatch(Invalid):
    code = "checksum_mismatch"


class DownloadFailed(Unavailable):
    """The connection kept breaking; the ``.part`` file stays, so a retry resumes."""

    code = "download_failed"


class CorruptImage(Invalid):
    code = "corrupt_image"


class _Broken(Exception):
    """The source's connection broke (open or read failed, or the stream ended early)."""


def _noop(*_args: object) -> None:
    return None


def _sha256_of(path: Path, hasher: Any = None) -> Any:
    hasher = hasher or hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            hasher.update(block)
    return hasher


def _check_space(folder: Path, size: int) -> None:
    if shutil.disk_usage(folder).free < size:
        raise Invalid(f"{size} bytes do not fit in {folder}", code="no_space")


@dataclass
class _State:
    hasher: Any  # a hashlib.sha256 object
    done: int
    total: int | None = None


def download(open_at: Opener, dest: Path, sha256: str, size: int | None = None, *,
             progress: Progress = _noop, check: Check = _noop, watch: Watch | None = None,
             retries: int = 5, delay: float = 1.0) -> Path:
    """Fetch into ``dest`` (see the module docstring); returns ``dest``.

    ``open_at(offset)`` opens the source at an offset. After ``retries`` breaks in a row
    without progress, DownloadFailed (the ``.part`` is kept for the next attempt).
    ``check`` is called between chunks; whatever it raises ends the download and
    removes the ``.part``; ``watch`` registers a callback that aborts a blocked read.
    """
    part = dest.with_name(dest.name + ".part")
    if dest.exists():
        if _sha256_of(dest).hexdigest() == sha256:
            return dest
        dest.unlink()
    state = _State(hashlib.sha256(), 0, size)
    if part.exists() and (size is None or part.stat().st_size <= size):
        _sha256_of(part, state.hasher)
        state.done = part.stat().st_size
    elif part.exists():
        part.unlink()
    _check_space(dest.parent, (size or 0) - state.done)
    try:
        with open(part, "ab") as out:
            _fetch_all(open_at, out, state, progress, check, watch, retries, delay)
            out.flush()
            os.fsync(out.fileno())
    except DownloadFailed:
        raise
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    digest = state.hasher.hexdigest()
    if digest != sha256:
        part.unlink()
        raise ChecksumMismatch(f"the downloaded file's SHA-256 is {digest}, not {sha256} as "
                               "the index says; nothing was kept")
    os.replace(part, dest)
    return dest


def _fetch_all(open_at: Opener, out: BinaryIO, state: _State, progress: Progress,
               check: Check, watch: Watch | None, retries: int, delay: float) -> None:
    failures = 0
    while state.total is None or state.done < state.total:
        before = state.done
        try:
            _fetch(open_at, out, state, progress, check, watch)
            return
        except _Broken as exc:
            check()
            failures = 1 if state.done > before else failures + 1
            if failures > retries:
                raise DownloadFailed(f"the download broke off after {state.done} bytes "
                                     f"({exc}); import again to resume") from None
            time.sleep(delay * min(failures, 4))


def _fetch(open_at: Opener, out: BinaryIO, state: _State, progress: Progress, check: Check,
           watch: Watch | None) -> None:
    try:
        stream, total = open_at(state.done)
    except (OSError, Unavailable) as exc:
        raise _Broken(getattr(exc, "message", None) or str(exc) or type(exc).__name__) \
            from exc
    if state.total is not None and total != state.total:
        stream.close()
        raise Invalid(f"the repository serves {total} bytes where the index says "
                      f"{state.total}", code="size_mismatch")
    state.total = total
    forget = watch(stream.close) if watch else _noop
    try:
        while state.done < total:
            try:
                block = stream.read(min(CHUNK, total - state.done))
            except (OSError, ValueError) as exc:  # ValueError: read from a closed stream
                raise _Broken(str(exc) or type(exc).__name__) from exc
            if not block:
                raise _Broken(f"the stream ended at byte {state.done} of {total}")
            out.write(block)
            state.hasher.update(block)
            state.done += len(block)
            progress(state.done, total)
            check()
    finally:
        forget()
        with contextlib.suppress(OSError):
            stream.close()


def receive(stream: BinaryIO, dest: Path, length: int, sha256: str | None = None, *,
            progress: Progress = _noop) -> str:
    """Copy ``length`` bytes of ``stream`` (a request body) into ``dest``; its SHA-256.

    A stream that ends early or breaks (BadRequest ``short_upload``) or a hash other than
    ``sha256`` (ChecksumMismatch) removes ``dest``.
    """
    hasher, received = hashlib.sha256(), 0
    _check_space(dest.parent, length)
    try:
        with open(dest, "wb") as out:
            while received < length:
                block = stream.read(min(CHUNK, length - received))
                if not block:
                    raise BadRequest(f"the upload ended after {received} of {length} bytes",
                                     code="short_upload")
                out.write(block)
                hasher.update(block)
                received += len(block)
                progress(received, length)
    except OSError as exc:
        dest.unlink(missing_ok=True)
        raise BadRequest(f"the upload broke off: {exc}", code="short_upload") from exc
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    if sha256 and hasher.hexdigest() != sha256:
        dest.unlink()
        raise ChecksumMismatch(f"the upload's SHA-256 is {hasher.hexdigest()}, not {sha256}; "
                               "nothing was kept")
    return hasher.hexdigest()


class Metered:
    """A file whose reads report progress and call ``check`` (e.g. an upload to a volume)."""

    def __init__(self, fh: BinaryIO, total: int, progress: Progress, check: Check = _noop
                 ) -> None:
        self.fh, self.total, self.progress, self.check, self.done = fh, total, progress, check, 0

    def read(self, size: int = -1) -> bytes:
        self.check()
        block = self.fh.read(size)
        self.done += len(block)
        self.progress(self.done, self.total)
        return block


def stage(report: Callable[[int, str | None], None], low: int, high: int,
          verb: str) -> Progress:
    """Progress in bytes as ``report(percent, message)`` calls: ``low..high`` percent,
    only when the percent grows, with a message ("downloaded 3.0 of 12.0 MiB") per quarter."""
    last = {"percent": -1, "quarter": 0}

    def progress(done: int, total: int) -> None:
        share = done / total if total else 1.0
        percent, quarter = low + int((high - low) * share), int(share * 4)
        if quarter > last["quarter"]:
            last["quarter"] = quarter
            report(percent, f"{verb} {done / 2**20:.1f} of {total / 2**20:.1f} MiB")
        elif percent > last["percent"]:
            report(percent, None)
        last["percent"] = percent

    return progress


# -- decompression ------------------------------------------------------------------------
def _gzip(data: bytes, box: list) -> Iterator[bytes]:
    while data:
        if box[0] is None or box[0].eof:
            box[0] = zlib.decompressobj(wbits=31)  # a gzip file may have several members
        d = box[0]
        yield d.decompress(data, OUT_CHUNK)
        data = d.unused_data if d.eof else d.unconsumed_tail


def _xz(data: bytes, box: list) -> Iterator[bytes]:
    while True:
        d = box[0]
        if d is None or d.eof:
            data = (d.unused_data if d else b"") + data
            if not data:
                return
            d = box[0] = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        yield d.decompress(data, OUT_CHUNK)
        data = b""
        if d.needs_input and not d.eof:
            return


def _zstd(data: bytes, box: list) -> Iterator[bytes]:
    for start in range(0, len(data), ZSTD_IN_CHUNK):
        piece = data[start:start + ZSTD_IN_CHUNK]
        while piece:
            if box[0] is None or box[0].eof:
                box[0] = zstandard.ZstdDecompressor().decompressobj()
            yield box[0].decompress(piece)
            piece = box[0].unused_data if box[0].eof else b""


_DECODERS = {"gzip": _gzip, "xz": _xz, "zstd": _zstd}
_ERRORS = (zlib.error, lzma.LZMAError, zstandard.ZstdError, EOFError)


def _finished(compression: str, box: list) -> bool:
    d = box[0]
    if d is None:
        return False
    if compression == "gzip":
        return d.eof and not d.unconsumed_tail
    return d.eof


def decompress(src: Path, dest: Path, compression: str, *, limit: int,
               expected: int | None = None, progress: Progress = _noop,
               check: Check = _noop) -> Path:
    """Stream ``src`` (gzip, xz or zstd) into ``dest``; CorruptImage when the data is
    corrupt, truncated, longer than ``limit`` or not ``expected`` bytes long."""
    decoder = _DECODERS.get(compression)
    if decoder is None:
        raise Invalid(f"unsupported compression {compression!r}", code="bad_compression")
    total, written, box = src.stat().st_size, 0, [None]
    try:
        with open(src, "rb") as fh, open(dest, "wb") as out:
            while block := fh.read(CHUNK):
                for piece in decoder(block, box):
                    written += len(piece)
                    if written > limit:
                        raise CorruptImage(f"the {compression} data unpacks to more than "
                                           f"{limit} bytes", code="too_large")
                    out.write(piece)
                progress(fh.tell(), total)
                check()
            if compression == "gzip" and box[0] is not None:
                written += out.write(box[0].flush())
        if not _finished(compression, box):
            raise CorruptImage(f"the {compression} data is truncated")
    except _ERRORS as exc:
        dest.unlink(missing_ok=True)
        raise CorruptImage(f"the {compression} data is corrupt: {exc}") from exc
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    if expected is not None and written != expected:
        dest.unlink(missing_ok=True)
        raise CorruptImage(f"the image unpacks to {written} bytes, not {expected} as the "
                           "metadata says", code="size_mismatch")
    return dest


# -- image checks --------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageInfo:
    format: str  # qcow2, raw or iso
    virtual_size: int  # bytes the guest sees
    file_size: int


def _qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["qemu-img", *args], capture_output=True, text=True,
                              timeout=QEMU_IMG_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PanelError(f"cannot run qemu-img: {exc}", code="qemu_img_failed") from exc


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def _check_iso(path: Path) -> None:
    with open(path, "rb") as fh:
        fh.seek(0x8001)
        if fh.read(5) != b"CD001":
            raise CorruptImage("the file is not an ISO 9660 image", code="format_mismatch")


def inspect_image(path: Path, fmt: str) -> ImageInfo:
    """What ``path`` is; CorruptImage when it is not a sound, self-contained ``fmt``."""
    size = path.stat().st_size
    if fmt == "iso":
        _check_iso(path)
        return ImageInfo("iso", size, size)
    proc = _qemu_img("info", "--output=json", str(path))
    if proc.returncode != 0:
        raise CorruptImage(f"qemu-img cannot read the image: {_last_line(proc.stderr)}")
    info = json.loads(proc.stdout)
    found = info.get("format")
    if found != fmt:
        raise CorruptImage(f"the image is {found}, not {fmt} as its metadata says",
                           code="format_mismatch")
    data = (info.get("format-specific") or {}).get("data") or {}
    if info.get("backing-filename") or data.get("data-file"):
        raise CorruptImage("the image refers to another file (backing or data file)",
                           code="unsafe_image")
    if fmt == "qcow2":
        checked = _qemu_img("check", "--output=json", "-f", "qcow2", str(path))
        if checked.returncode not in (0, 3):  # 3: leaked clusters only (harmless)
            detail = _check_summary(checked)
            raise CorruptImage(f"the qcow2 image is damaged (qemu-img check: {detail})")
    return ImageInfo(fmt, int(info["virtual-size"]), size)


def _check_summary(proc: subprocess.CompletedProcess[str]) -> str:
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        return _last_line(proc.stderr)
    return (f"{report.get('corruptions', 0)} corruptions, "
            f"{report.get('check-errors', 0)} check errors")


def convert_to_raw(src: Path, dest: Path) -> Path:
    """A raw copy of the qcow2 ``src`` (for storages that hold raw volumes only)."""
    proc = _qemu_img("convert", "-f", "qcow2", "-O", "raw", str(src), str(dest))
    if proc.returncode != 0:
        dest.unlink(missing_ok=True)
        raise CorruptImage(f"qemu-img convert failed: {_last_line(proc.stderr)}")
    return dest
