"""kiln.inspect: what the Kiln engines inside a compiled module are made of; kiln.profile:
where their time goes, layer by layer."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
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


def inspect(module: torch.nn.Module, profile: bool = False,
            inputs: Sequence[torch.Tensor] | None = None, iters: int = 20) -> str:
    """The ``inspect()`` text of every Kiln engine in ``module`` (from kiln.compile, or loaded
    with kiln.load / torch.jit.load): its layers, fusions, precisions, tactics and profiles.
    With ``profile=True``, the module is run on ``inputs`` and each engine's per-layer times
    (see :func:`kiln.profile`) follow."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"kiln.inspect expects a module, got {type(module).__name__}")
    if profile:
        if inputs is None:
            raise ValueError("kiln.inspect(profile=True) needs inputs=[...] to run the module on")
        return _describe_engines(module) + "\n" + str(_profile_module(module, inputs, iters))
    return _describe_engines(module)


def _describe_engines(module: torch.nn.Module) -> str:
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


@dataclass
class LayerTime:
    """One layer of an engine, as kiln.profile measured it."""

    name: str
    kind: str
    kernel: str
    precision: str
    milliseconds: float


@dataclass
class EngineProfile:
    """One engine's layers, slowest first, and its measured time per run."""

    path: str
    name: str
    backend: str
    iterations: int
    layers: list[LayerTime] = field(default_factory=list)
    run_milliseconds: float = 0.0  # a whole run of the engine, timed as the module runs it

    @property
    def layer_milliseconds(self) -> float:
        return sum(layer.milliseconds for layer in self.layers)

    def __str__(self) -> str:
        clock = "CUDA events per layer" if self.backend == "CUDA" else "wall clock per layer"
        lines = [
            f"== {self.path}: engine '{self.name}' ({self.backend}), {len(self.layers)} layer(s), "
            f"mean of {self.iterations} run(s), {clock} ==",
            f"layers sum to {self.layer_milliseconds:.3f} ms; a whole run takes "
            f"{self.run_milliseconds:.3f} ms",
        ]
        rows = [("ms", "share", "layer", "kind", "kernel", "precision")]
        total = self.layer_milliseconds or 1.0
        for layer in self.layers:
            rows.append((f"{layer.milliseconds:.4f}", f"{100 * layer.milliseconds / total:.1f}%",
                         layer.name, layer.kind, layer.kernel, layer.precision))
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
        for row in rows:
            cells = [row[0].rjust(widths[0]), row[1].rjust(widths[1])]
            cells += [row[c].ljust(widths[c]) for c in range(2, len(row))]
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)


@dataclass
class Profile:
    """What kiln.profile returns: one EngineProfile per engine of the module."""

    engines: list[EngineProfile]

    def __str__(self) -> str:
        if not self.engines:
            return "No Kiln engines: everything in this module runs in PyTorch.\n"
        return "\n\n".join(str(engine) for engine in self.engines) + "\n"


def _synchronize(engine: torch.ScriptObject) -> None:
    if engine.backend() == "CUDA":
        torch.cuda.synchronize()


def profile(module: torch.nn.Module, *inputs: torch.Tensor, iters: int = 20) -> Profile:
    """Times every layer of every Kiln engine in ``module`` on the inputs the engine gets when
    the module runs on ``inputs``: after a warm-up run, ``iters`` runs layer by layer (CUDA
    events around each layer on the GPU, without a CUDA graph; the wall clock on the CPU). Each
    engine's layers come slowest first with their kernel and precision, beside the time of a
    whole run of the engine (its CUDA graph on the GPU), which their sum should be near."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"kiln.profile expects a module, got {type(module).__name__}")
    return _profile_module(module, inputs, iters)


def _profile_module(module: torch.nn.Module, inputs: Sequence[torch.Tensor], iters: int) -> Profile:
    if iters < 1:
        raise ValueError(f"kiln.profile needs iters >= 1, got {iters}")
    engines = list(find_engines(module))
    for _, engine in engines:
        engine.set_capture_inputs(True)
    try:
        with torch.no_grad():
            module(*inputs)
        captured = [engine.captured_inputs() for _, engine in engines]
    finally:
        for _, engine in engines:
            engine.set_capture_inputs(False)
    results = []
    for (path, engine), engine_inputs in zip(engines, captured):
        if not engine_inputs and engine.num_inputs() > 0:
            continue  # this engine did not run for these inputs
        layers = [LayerTime(*row) for row in engine.profile(engine_inputs, iters)]
        layers.sort(key=lambda layer: layer.milliseconds, reverse=True)
        with torch.no_grad():
            torch.ops.kiln.execute_engine(engine_inputs, engine)  # warm-up (captures a graph)
            _synchronize(engine)
            start = time.perf_counter()
            for _ in range(iters):
                torch.ops.kiln.execute_engine(engine_inputs, engine)
            _synchronize(engine)
        run_ms = (time.perf_counter() - start) * 1e3 / iters
        results.append(EngineProfile(path, engine.name(), engine.backend(), iters, layers, run_ms))
    return Profile(results)
