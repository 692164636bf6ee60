"""kiln.save / kiln.load: compiled modules as TorchScript files.

A file written by kiln.save is an ordinary TorchScript archive whose engines are
``torch.classes.kiln.Engine`` attributes; it loads with ``kiln.load``, with ``torch.jit.load``
after ``import kiln``, or from C++ with ``torch::jit::load`` linked against libkiln_runtime.so.
"""

from __future__ import annotations

import copy
import os
import zipfile
from collections.abc import Sequence

import torch
import torch.fx as fx

from kiln import _C  # noqa: F401 - loads libkiln_runtime.so: the Engine class and execute_engine
from kiln._logging import logger, torchscript_warnings_silenced
from kiln.dynamo_backend import DynamoCompiledModule
from kiln.input import Input

PathLike = str | os.PathLike[str]


def _script_graph_module(module: fx.GraphModule) -> torch.jit.ScriptModule:
    """Scripts an aten-level GraphModule: TorchScript resolves ``torch.ops.aten.view`` but not
    ``torch.ops.aten.view.default``, so the copy calls overload packets (TorchScript picks the
    overload from the argument types)."""
    graph = copy.deepcopy(module.graph)
    for node in graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            node.target = node.target.overloadpacket
    scriptable = fx.GraphModule(module, graph)
    return torch.jit.script(scriptable)


def _trace_graph_module(
    module: fx.GraphModule, inputs: Sequence[Input | torch.Tensor]
) -> torch.jit.ScriptModule:
    if isinstance(inputs, (Input, torch.Tensor)):
        inputs = [inputs]
    examples = []
    for i, item in enumerate(inputs):
        if isinstance(item, torch.Tensor):
            examples.append(item)
        elif isinstance(item, Input):
            examples.append(item.example_tensor("opt"))
        else:
            raise TypeError(f"inputs[{i}] must be a kiln.Input or a torch.Tensor, got {type(item).__name__}")
    with torch.no_grad():
        return torch.jit.trace(module, tuple(examples), check_trace=False, strict=False)


def save(
    module: torch.nn.Module,
    path: PathLike,
    inputs: Sequence[Input | torch.Tensor] | None = None,
) -> None:
    """Saves a module from kiln.compile as a TorchScript file.

    A ScriptModule (``ir="ts"``) is saved as it is. A GraphModule (``ir="dynamo"``) is scripted;
    if that fails it is traced with ``inputs`` (kiln.Input or example tensors at the shapes to
    trace; the parts left to PyTorch are then fixed to those shapes), which are then required.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    with torchscript_warnings_silenced():
        _save(module, path, inputs)


def _save(
    module: torch.nn.Module, path: PathLike, inputs: Sequence[Input | torch.Tensor] | None
) -> None:
    if isinstance(module, torch.jit.ScriptModule):
        torch.jit.save(module, path)
        return
    if isinstance(module, DynamoCompiledModule):
        raise TypeError(
            "kiln.save: a module compiled with ir='torch_compile' (or by ir='default' when "
            "torch.export could not capture it) runs Python between its engines and cannot be "
            "saved; compile it with ir='ts' to save it"
        )
    if not isinstance(module, fx.GraphModule):
        raise TypeError(
            f"kiln.save expects a module returned by kiln.compile (a ScriptModule or a "
            f"torch.fx.GraphModule), got {type(module).__name__}"
        )
    try:
        scripted = _script_graph_module(module)
    except Exception as error:  # noqa: BLE001 - any scripting failure means: trace instead
        if inputs is None:
            raise ValueError(
                "kiln.save: this module cannot be scripted, so it must be traced; pass the "
                "example inputs: kiln.save(module, path, inputs=[...]) (scripting failed: "
                f"{str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__})"
            ) from error
        logger.info("kiln.save: scripting failed (%s); tracing with the given inputs", error)
        scripted = _trace_graph_module(module, inputs)
    torch.jit.save(scripted, path)


def _check_archive(path: PathLike) -> None:
    """Refuses files that are not TorchScript archives, saying what they look like instead."""
    shown = repr(os.fspath(path))
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"kiln.load: {shown} is not a saved module: kiln.save writes a TorchScript zip "
            "archive, and this file is not a zip archive (it is truncated, or another kind of file)"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"kiln.load: {shown} is a damaged zip archive ({error})") from error
    if any("/code/" in name for name in names):
        return
    if any(name.endswith("data.pkl") for name in names):
        raise ValueError(
            f"kiln.load: {shown} was written by torch.save (a checkpoint or a pickled module), "
            "not by kiln.save or torch.jit.save; load it with torch.load"
        )
    raise ValueError(f"kiln.load: {shown} is a zip archive but not a TorchScript module")


def load(
    path: PathLike,
    map_location: str | torch.device | None = None,
    *,
    allow_other_gpu: bool = False,
) -> torch.jit.ScriptModule:
    """Loads a module saved by kiln.save (any TorchScript file, in fact).

    CUDA engines are specific to the GPU they were built on: one built for a GPU of another
    compute capability is refused (rebuild it), unless ``allow_other_gpu=True``, which loads it
    with a warning.

    Raises FileNotFoundError for a missing file and ValueError for a file that is not a
    TorchScript module, or whose engines cannot be loaded (the message says why: a truncated,
    corrupt or foreign engine plan, or one from a newer Kiln).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"kiln.load: no such file: {os.fspath(path)!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"kiln.load: {os.fspath(path)!r} is a directory, not a saved module")
    _check_archive(path)
    previous = torch.ops.kiln.allow_other_gpu(bool(allow_other_gpu))
    try:
        with torchscript_warnings_silenced():
            return torch.jit.load(path, map_location=map_location)
    except RuntimeError as error:
        raise ValueError(f"kiln.load: loading {os.fspath(path)!r} failed: {error}") from error
    finally:
        torch.ops.kiln.allow_other_gpu(previous)
