"""A recipe run's record while it runs: lines to the task log at once (secrets masked),
the last lines and the end state saved to the run record every second and at the end."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .errors import PanelError
from .tasks import TaskCancelled

MAX_KEPT_LINES = 2000
MAX_LINE_CHARS = 4000
SAVE_EVERY = 1.0  # seconds between saves of a running script's kept lines


class OutputLog:
    """A script run's record: lines masked by ``redact`` go to ``log`` at once; the last
    ``MAX_KEPT_LINES`` and the end state to ``write`` every second and at the end."""

    def __init__(self, log: Callable[[str], None], write: Callable[[dict[str, Any]], None],
                 redact: Callable[[str], str]) -> None:
        self.log, self.write, self.redact = log, write, redact
        self.lines: list[str] = []
        self.dropped = 0
        self.saved = time.monotonic()

    def line(self, text: str) -> None:
        text = self.redact(text)[:MAX_LINE_CHARS]
        self.log(text)
        self.lines.append(text)
        if len(self.lines) > MAX_KEPT_LINES:
            self.dropped += len(self.lines) - MAX_KEPT_LINES
            del self.lines[:-MAX_KEPT_LINES]
        if time.monotonic() - self.saved >= SAVE_EVERY:
            self.save()

    def save(self, **fields: Any) -> None:
        head = [f"panel: ({self.dropped} earlier lines dropped)"] if self.dropped else []
        self.write({**fields, "log": head + self.lines})
        self.saved = time.monotonic()

    def failed(self, exc: Exception, stopped: bool) -> Exception:
        """Save how the run ended; the exception to raise instead, secrets masked."""
        if isinstance(exc, TaskCancelled) or stopped:
            self.save(state="cancelled", finished=time.time(),
                      error={"code": "cancelled", "message": "cancelled"})
            return TaskCancelled()
        known = exc if isinstance(exc, PanelError) else \
            PanelError(str(exc) or repr(exc), code="recipe_run_failed")
        clean = PanelError(self.redact(known.message), code=known.code, details=known.details)
        code = clean.details.get("exit_code") if isinstance(clean.details, dict) else None
        self.save(state="failed", finished=time.time(), exit_code=code,
                  error={"code": clean.code, "message": clean.message})
        return clean
