"""Errors that map to the API's JSON error shape ``{"error": {"code", "message"}}``."""

from __future__ import annotations


class PanelError(Exception):
    """Base error: carries an HTTP status and a snake_case code for the API."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, details: object = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details

    def to_dict(self) -> dict:
        body: dict = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return {"error": body}


class BadRequest(PanelError):
    status, code = 400, "bad_request"


class Unauthorized(PanelError):
    status, code = 401, "unauthorized"


class Forbidden(PanelError):
    status, code = 403, "forbidden"


class NotFound(PanelError):
    status, code = 404, "not_found"


class Conflict(PanelError):
    status, code = 409, "conflict"


class Invalid(PanelError):
    """Input that is well-formed JSON but violates the schema or a business rule."""

    status, code = 422, "validation_error"


class Unavailable(PanelError):
    """A remote thing (node, storage, server) cannot be reached right now."""

    status, code = 503, "unavailable"


class PluginLoadError(RuntimeError):
    """A plugin failed to load; the message names it. Start-up stops."""


class MethodNotAllowed(PanelError):
    status, code = 405, "method_not_allowed"


class NodeCommandError(PanelError):
    """A fixed command run on a node failed (the message names the node and the command)."""

    status, code = 422, "node_command_failed"


def error_record(exc: BaseException, default_code: str) -> dict[str, str]:
    """``{code, message}`` of a failure, for a record that keeps why it failed (a panel
    error or a cancelled task keeps its own code)."""
    code = getattr(exc, "code", None)
    if isinstance(code, str):
        return {"code": code, "message": str(exc) or code}
    return {"code": default_code, "message": str(exc) or type(exc).__name__}
