"""The ``http`` source: an index served over HTTP(S); Range requests resume downloads.

TLS certificates are always verified (against the system's CAs, or ``ca_file``).
Redirects are followed to http(s) URLs only.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, BinaryIO, ClassVar

from hypervisor_panel.os_templates import (
    INDEX_MAX_BYTES,
    OSTemplateSource,
    SourceUnavailable,
    TemplateEntry,
    check_relative_path,
    parse_index,
)

USER_AGENT = "hypervisor-panel"
CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


class _Response:
    """A body stream: a broken connection reads as OSError; close() also aborts a read."""

    def __init__(self, resp: http.client.HTTPResponse) -> None:
        self.resp = resp

    def read(self, size: int = -1) -> bytes:
        try:
            return self.resp.read(size)
        except http.client.HTTPException as exc:
            raise ConnectionError(f"the connection broke: {exc!r}") from exc

    def close(self) -> None:
        sock = getattr(getattr(self.resp, "fp", None), "raw", None)
        sock = getattr(sock, "_sock", None)
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.resp.close()


class HttpSource(OSTemplateSource):
    """An ``index.json`` at an HTTP(S) URL; files are fetched relative to it."""

    name: ClassVar[str] = "http"
    description: ClassVar[str] = "An index.json served over HTTP or HTTPS"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["url"],
        "properties": {
            "url": {"type": "string", "title": "Index URL", "pattern": r"^https?://[^\s]+$",
                    "maxLength": 2048},
            "ca_file": {"type": "string", "title": "CA certificates (PEM file)",
                        "pattern": r"^/", "maxLength": 1024,
                        "description": "trust these CAs instead of the system's"},
            "timeout": {"type": "number", "title": "Timeout (s)", "minimum": 1,
                        "maximum": 300, "default": 15},
        },
    }

    def _open(self, options: dict[str, Any], url: str,
              headers: dict[str, str]) -> http.client.HTTPResponse:
        try:
            context = ssl.create_default_context(cafile=options.get("ca_file"))
        except OSError as exc:
            raise SourceUnavailable(f"cannot read the CA file: {exc}") from exc
        opener = urllib.request.OpenerDirector()
        for handler in (urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(
                context=context), urllib.request.HTTPRedirectHandler(),
                urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor()):
            opener.add_handler(handler)
        request = urllib.request.Request(  # noqa: S310 - the opener speaks http(s) only
            url, headers={"User-Agent": USER_AGENT, **headers})
        try:
            return opener.open(request, timeout=options.get("timeout", 15))
        except urllib.error.HTTPError as exc:
            exc.close()
            raise SourceUnavailable(f"{url}: HTTP {exc.code} {exc.reason}") from exc
        except urllib.error.URLError as exc:
            raise SourceUnavailable(f"cannot reach {url}: {exc.reason}") from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise SourceUnavailable(f"cannot reach {url}: {exc}") from exc

    def read_index(self, options: dict[str, Any]) -> list[TemplateEntry]:
        url = options["url"]
        with self._open(options, url, {}) as resp:
            try:
                data = resp.read(INDEX_MAX_BYTES + 1)
            except (OSError, http.client.HTTPException) as exc:
                raise SourceUnavailable(f"reading {url} failed: {exc!r}") from exc
        return parse_index(data, url)

    def file_url(self, options: dict[str, Any], entry: TemplateEntry) -> str:
        path = urllib.parse.quote(check_relative_path(entry["file"]))
        return urllib.parse.urljoin(options["url"], path)

    def open(self, options: dict[str, Any], entry: TemplateEntry,
             offset: int = 0) -> tuple[BinaryIO, int]:
        url = self.file_url(options, entry)
        resp = self._open(options, url, {"Range": f"bytes={offset}-"} if offset else {})
        stream = _Response(resp)
        match = CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
        if resp.status == 206 and match and int(match.group(1)) == offset:
            return stream, int(match.group(3))  # type: ignore[return-value]
        length = resp.headers.get("Content-Length")
        if resp.status != 200 or length is None:
            stream.close()
            raise SourceUnavailable(f"{url}: unexpected answer {resp.status} without a "
                                    "usable length")
        skipped = 0
        while skipped < offset:  # the server ignored the Range header: skip what we have
            block = stream.read(min(1 << 20, offset - skipped))
            if not block:
                raise ConnectionError("the connection broke while skipping to the offset")
            skipped += len(block)
        return stream, int(length)  # type: ignore[return-value]
