"""The web layer: JSON API under /api/v1, the browser UI, and the WSGI server."""
