"""Kiln: compiles PyTorch models into inference engines and runs them inside PyTorch.

>>> import kiln, torch
>>> compiled = kiln.compile(model, ir="dynamo", inputs=[kiln.Input(shape=(1, 3, 224, 224))])
>>> print(kiln.summary(compiled))
>>> kiln.save(compiled, "model.ts", inputs=[torch.randn(1, 3, 224, 224)])
>>> fast = torch.compile(model, backend="kiln")
"""

from __future__ import annotations

from importlib import metadata as _metadata
from typing import Any

import torch

from kiln import _C  # loads libkiln_runtime.so: torch.classes.kiln.Engine, torch.ops.kiln.*
from kiln._logging import set_debug
from kiln.compile import compile
from kiln.input import Input
from kiln.inspect import inspect, profile
from kiln.save_load import load, save

__all__ = [
    "Input",
    "compile",
    "inspect",
    "load",
    "profile",
    "save",
    "set_debug",
    "summary",
    "supported_ops",
    "__version__",
]

try:
    __version__ = _metadata.version("kiln")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"


def summary(module: torch.nn.Module) -> dict[str, Any]:
    """What kiln.compile did to ``module``: ``{"engines": int, "ops_in_kiln": int,
    "ops_in_torch": int, "fallback": [(op, reason), ...]}``.

    Kept on the module returned by kiln.compile (not in saved files)."""
    from kiln.dynamo_backend import DynamoCompiledModule
    from kiln.fx_partition import SUMMARY_ATTR

    if isinstance(module, DynamoCompiledModule):
        return module.summary()
    found = getattr(module, SUMMARY_ATTR, None)
    if found is None:
        raise ValueError(
            "kiln.summary: this module carries no compile summary; pass the module returned by "
            "kiln.compile (summaries are not saved with kiln.save)"
        )
    return dict(found)


def supported_ops() -> list[str]:
    """The schema of every aten op Kiln can convert, sorted."""
    return list(_C.supported_ops())


def _register_dynamo_backend() -> None:
    """Makes torch.compile(backend="kiln") work when Kiln runs from a source tree. An installed
    Kiln registers the backend through its torch_dynamo_backends entry point instead."""
    from torch._dynamo.backends.registry import _COMPILER_FNS, register_backend

    installed = any(
        ep.name == "kiln" for ep in _metadata.entry_points(group="torch_dynamo_backends")
    )
    if installed or "kiln" in _COMPILER_FNS:
        return
    from kiln.dynamo_backend import kiln_backend

    register_backend(compiler_fn=kiln_backend, name="kiln")


_register_dynamo_backend()
