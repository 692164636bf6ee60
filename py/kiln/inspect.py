"""kiln.inspect: what the Kiln engines inside a compiled module are made of."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

ENGINE_TYPE = "__torch__.torch.classes.kiln.Engine"


def is_engine(value: Any) -> bool:
    """True for a ``torch.classes.kiln.Engine`` object."""
    return isinstance(value, torch.ScriptObject) and value._type().qualified_name() == ENGINE_TYPE


def find_engines(module: torch.nn.Module) -> Iterator[tuple[str, torch.ScriptObject]]:
    """(attribute path, engine) for every engine in ``module`` and its submodules."""
    if isinstance(module, torch.jit.ScriptModule):
        attributes = torch._C._jit_debug_module_iterators(module._c)["named_attributes_r"]
        for path, value in attributes:
            if is_engine(value):
                yield path, value
        return
    for prefix, submodule in module.named_modules():
        for name, value in vars(submodule).items():
            if is_engine(value):
                yield (f"{prefix}.{name}" if prefix else name), value


def inspect(module: torch.nn.Module) -> str:
    """The ``inspect()`` text of every Kiln engine in ``module`` (from kiln.compile, or loaded
    with kiln.load / torch.jit.load): its layers, fusions, precisions, tactics and profiles."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"kiln.inspect expects a module, got {type(module).__name__}")
    sections = []
    for path, engine in find_engines(module):
        header = (
            f"== {path}: engine '{engine.name()}', {engine.num_inputs()} input(s), "
            f"{engine.num_outputs()} output(s) =="
        )
        sections.append(f"{header}\n{engine.inspect().rstrip()}")
    if not sections:
        return "No Kiln engines: everything in this module runs in PyTorch."
    return "\n\n".join(sections) + "\n"
