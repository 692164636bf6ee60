"""The ``kiln`` logger.

Library code logs through ``logging.getLogger("kiln")`` (or a child of it). Debug output is off by
default; ``kiln.set_debug(True)``, the environment variable ``KILN_DEBUG=1`` or
``kiln.compile(..., debug=True)`` turn it on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

logger = logging.getLogger("kiln")

_handler: logging.Handler | None = None


def set_debug(enabled: bool = True) -> None:
    """Turns Kiln's debug logging on or off.

    When on, the ``kiln`` logger logs at DEBUG level to stderr (a handler is added once, unless the
    application has configured one for ``kiln`` itself). When off, the logger goes back to
    inheriting its level from the root logger.
    """
    global _handler
    if not isinstance(enabled, bool):
        raise TypeError(f"kiln.set_debug expects a bool, got {type(enabled).__name__}")
    if enabled:
        logger.setLevel(logging.DEBUG)
        if _handler is None and not logger.handlers:
            _handler = logging.StreamHandler()
            _handler.setFormatter(logging.Formatter("[kiln %(levelname)s] %(message)s"))
            logger.addHandler(_handler)
    else:
        logger.setLevel(logging.NOTSET)
        if _handler is not None:
            logger.removeHandler(_handler)
            _handler = None


def is_debug() -> bool:
    """True when the ``kiln`` logger emits DEBUG records."""
    return logger.isEnabledFor(logging.DEBUG)


@contextlib.contextmanager
def debug_logging(enabled: bool) -> Iterator[None]:
    """Debug logging for the duration of a block (e.g. one ``kiln.compile(debug=True)`` call)."""
    if not enabled or is_debug():
        yield
        return
    set_debug(True)
    try:
        yield
    finally:
        set_debug(False)


@contextlib.contextmanager
def torchscript_warnings_silenced() -> Iterator[None]:
    """Kiln's saved format is TorchScript by design: torch's deprecation notices for
    torch.jit.script/trace/save/load, and TorchScript's notes on GraphModule attributes it skips,
    say nothing the user can act on, so Kiln's own TorchScript calls do not show them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The TorchScript type system doesn't support instance-level annotations")
        yield


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


if _env_flag("KILN_DEBUG"):
    set_debug(True)
