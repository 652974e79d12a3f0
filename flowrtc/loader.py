"""Load the object a ``path/to/app.py[:name]`` reference names (for the ``flowrtc`` command)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from flowrtc.errors import ConfigurationError

__all__ = ["load_object", "DEFAULT_NAMES"]

# Tried in order when the reference names no attribute.
DEFAULT_NAMES = ("stream", "app", "graph", "handler")


def load_object(reference: str) -> Any:
    """Import ``path.py`` and return its attribute ``name`` (``path.py:name``).

    Without ``:name``, the first of ``stream``, ``app``, ``graph``, ``handler``
    that the module defines is used. Errors name the path or attribute at fault.
    """
    path_text, _, name = reference.partition(":")
    path = Path(path_text)
    if path.suffix != ".py":
        raise ConfigurationError(f"expected a Python file like app.py or app.py:stream, got {reference!r}")
    if not path.is_file():
        raise ConfigurationError(f"no such file: {path}")
    module_name = f"flowrtc_app_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigurationError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.resolve().parent))
    if name:
        if not hasattr(module, name):
            found = ", ".join(n for n in vars(module) if not n.startswith("_")) or "nothing"
            raise ConfigurationError(f"{path} has no attribute {name!r} (it defines: {found})")
        return getattr(module, name)
    for candidate in DEFAULT_NAMES:
        if hasattr(module, candidate):
            return getattr(module, candidate)
    raise ConfigurationError(f"{path} defines none of {', '.join(DEFAULT_NAMES)}; name one as {path}:NAME")
