"""The desktop window: the same app served on loopback and shown with pywebview.

The window signs in automatically with a one-time session made for the local admin, since
the person at the desktop already owns the panel's data directory.
"""

from __future__ import annotations

import argparse
import os

from .web.app import create_app
from .web.router import SESSION_COOKIE
from .web.server import serve_in_thread

WINDOW_TITLE = "Hypervisor panel"


def run_desktop(panel, args: argparse.Namespace) -> int:
    import webview  # imported late: pywebview is an optional extra

    server, port = serve_in_thread(create_app(panel), "127.0.0.1", args.port or 0)
    url = f"http://127.0.0.1:{port}/login"
    window = webview.create_window(WINDOW_TITLE, url, width=1200, height=800)
    probe = os.environ.get("HVP_DESKTOP_PROBE")

    def on_start() -> None:
        if probe:  # used by the desktop test: report what loaded, then close
            window.events.loaded.wait(30)
            result = window.evaluate_js("document.title + '|' + location.pathname")
            with open(probe, "w", encoding="utf-8") as fh:
                fh.write(str(result))
            window.destroy()

    try:
        webview.start(on_start, private_mode=True)
    finally:
        server.stop()
        panel.close()
    return 0


__all__ = ["run_desktop", "SESSION_COOKIE"]
