"""The process-wide default client behind ``faramesh.govern`` and friends."""

from __future__ import annotations

import threading
from typing import Any

from ._client import Client

_lock = threading.Lock()
_client: Client | None = None


def default_client() -> Client:
    """The default ``Client`` (created on first use from the environment: ``FARAMESH_SOCKET``
    or the stack around the current directory, ``FARAMESH_AGENT``)."""
    global _client
    with _lock:
        if _client is None:
            _client = Client()
        return _client


def configure(**options: Any) -> Client:
    """Replaces the default client with ``Client(**options)`` and returns it."""
    global _client
    new = Client(**options)
    with _lock:
        old, _client = _client, new
    if old is not None:
        old.close()
    return new
