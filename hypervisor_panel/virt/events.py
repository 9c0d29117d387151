"""The process-wide libvirt event loop (needed for domain events and keep-alives)."""

from __future__ import annotations

import threading

import libvirt

_started = False
_guard = threading.Lock()


def ensure_event_loop() -> None:
    """Register libvirt's default event implementation once and run it in a daemon thread.

    Must run before the first connection is opened, or that connection gets no events.
    """
    global _started
    with _guard:
        if _started:
            return
        # libvirt prints every error to stderr by default; the panel reports them itself.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _started = True
