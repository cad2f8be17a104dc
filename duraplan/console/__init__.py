"""The web console: static pages at ``/ui`` that drive the ``/v1`` HTTP API with a tenant's API key.

The pages hold no server-side logic of their own: every read and action is a ``/v1`` request carrying
the key, so the console sees exactly what the API lets that tenant see. See ``static/README.md``.
"""

from duraplan.console.router import CONSOLE_PATH, STATIC_DIR, mount_console

__all__ = ["CONSOLE_PATH", "STATIC_DIR", "mount_console"]
