"""The worker protocol: one JSON request per line on stdin, one JSON reply per line on stdout (standard library)."""

from __future__ import annotations

import importlib.metadata
import json
import sys
from typing import Callable


def serve(handlers: dict[str, Callable[..., dict]]) -> None:
    """The worker's loop: for each JSON line ``{"op": op, **arguments}`` on stdin, print
    ``handlers[op](**arguments)`` as one JSON line; ends with its input."""
    for line in sys.stdin:
        request = json.loads(line)
        op = request.pop("op")
        if op not in handlers:
            raise ValueError(f"unknown request {op!r}")
        print(json.dumps(handlers[op](**request)), flush=True)


def package_versions(*packages: str) -> dict[str, str]:
    """The installed version of each of ``packages``, by distribution name."""
    return {name: importlib.metadata.version(name) for name in packages}
