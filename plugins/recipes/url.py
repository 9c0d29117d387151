"""Recipe source ``url``: an HTTP(S) URL of an archive, of an index, or of one script.

* an archive (``.tar.gz``, ``.tgz``, ``.tar``, ``.zip``; told by its bytes): its ``*.sh``
  members (``archive.py``: unsafe members refuse the whole archive);
* an index: JSON ``{"recipes": [{"url": "hello.sh", "sha256": "<hex>"}, ...]}`` (entries
  may also be plain URL strings), or text with one ``URL [SHA256]`` per line (``#``
  comments). URLs are relative to the index; a given SHA-256 must match the script;
* a single recipe script (it has a metadata block).

Every download is size-limited and only http(s) is followed, redirects included.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, ClassVar
from urllib.parse import urljoin, urlparse

from hypervisor_panel.recipes import (
    MAX_DOWNLOAD_BYTES,
    MAX_RECIPE_BYTES,
    MAX_RECIPES,
    RecipeSource,
    RecipeSourceUnavailable,
    RecipeText,
    UnsafeSource,
)

from .archive import kind_of, read_archive

TIMEOUT = 30.0
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def fetch(url: str, limit: int, sha256: str | None = None) -> bytes:
    """The body at ``url`` (http/https only), at most ``limit`` bytes, checked when a
    SHA-256 is given."""
    if urlparse(url).scheme not in ("http", "https"):
        raise UnsafeSource(f"{url[:200]!r} is not an http(s) URL", code="unsafe_url")
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url, headers={"User-Agent": "hypervisor-panel"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as resp:  # noqa: S310
            if urlparse(resp.geturl()).scheme not in ("http", "https"):
                raise UnsafeSource(f"{url} redirects away from http(s)", code="unsafe_url")
            data = resp.read(limit + 1)
    except urllib.error.HTTPError as exc:
        raise RecipeSourceUnavailable(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise RecipeSourceUnavailable(f"cannot fetch {url}: {reason}") from exc
    if len(data) > limit:
        raise UnsafeSource(f"{url} is larger than {limit} bytes", code="download_too_big")
    if sha256 and hashlib.sha256(data).hexdigest() != sha256.lower():
        raise UnsafeSource(f"{url}: the SHA-256 does not match the index",
                           code="checksum_mismatch")
    return data


def parse_index(data: bytes, base: str) -> list[tuple[str, str | None]]:
    """(absolute URL, SHA-256 or None) of every script an index lists."""
    text = data.decode("utf-8", errors="replace")
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if doc is not None:
        entries = doc.get("recipes") if isinstance(doc, dict) else doc
        if not isinstance(entries, list):
            raise UnsafeSource("a JSON index needs a 'recipes' list", code="bad_index")
        pairs = [(e, None) if isinstance(e, str) else
                 (e.get("url"), e.get("sha256")) if isinstance(e, dict) else (None, None)
                 for e in entries]
    else:
        pairs = []
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if words:
                pairs.append((words[0], words[1] if len(words) > 1 else None))
    out = []
    for url, digest in pairs:
        if not isinstance(url, str) or not url or (digest is not None and not (
                isinstance(digest, str) and SHA256.match(digest.lower()))):
            raise UnsafeSource(f"bad index entry {url!r} (give a URL and an optional "
                               "64-digit SHA-256)", code="bad_index")
        out.append((urljoin(base, url), digest))
    if len(out) > MAX_RECIPES:
        raise UnsafeSource(f"the index lists more than {MAX_RECIPES} recipes",
                           code="too_many_recipes")
    return out


class UrlSource(RecipeSource):
    name: ClassVar[str] = "url"
    description: ClassVar[str] = ("An HTTP(S) URL of a recipe archive (.tar.gz, .zip), of an "
                                  "index listing script URLs, or of one script")
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["url"],
        "properties": {
            "url": {"type": "string", "pattern": "^https?://", "maxLength": 2048},
            "sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$",
                       "description": "SHA-256 of the archive or index, checked when given"},
        },
    }

    def recipes(self, options: dict[str, Any]) -> Iterator[RecipeText]:
        url = options["url"]
        data = fetch(url, MAX_DOWNLOAD_BYTES, options.get("sha256"))
        path = urlparse(url).path
        if kind_of(data, path):
            yield from read_archive(data, path)
        elif b"metadata_begin" in data[:MAX_RECIPE_BYTES]:
            yield RecipeText(data.decode("utf-8", errors="replace"), url)
        else:
            for script_url, digest in parse_index(data, url):
                raw = fetch(script_url, MAX_RECIPE_BYTES, digest)
                yield RecipeText(raw.decode("utf-8", errors="replace"), script_url)
