"""kiln.compile: a module -> the same module with its supported parts running in Kiln engines."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import sympy
import torch
import torch.fx as fx
from torch.export import Dim, ExportedProgram, ShapesCollection
from torch.export.graph_signature import InputKind, OutputKind
from torch.fx.graph import _PyTreeCodeGen, _PyTreeInfo

from kiln import _C
from kiln._logging import debug_logging, logger, torchscript_warnings_silenced
from kiln.fx_importer import SymbolRanges, bare_symbol
from kiln.fx_partition import (
    BuildSettings,
    attach_summary,
    compile_graph,
    decomposition_table,
    normalize_op_names,
)
from kiln.input import Input

_IRS = {
    "default": "dynamo",
    "dynamo": "dynamo",
    "ts": "ts",
    "torchscript": "ts",
    "torch_compile": "torch_compile",
}


def backend_for_device(device: str | torch.device | None) -> str:
    """The Kiln backend that runs on ``device``: ``"cpu"`` or ``"cuda"``."""
    if device is None:
        return "cpu"
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    try:
        device = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device {device!r} is not a valid torch device: {error}") from None
    if device.type == "cpu":
        return "cpu"
    if device.type == "cuda":
        if not _C.has_cuda():
            raise RuntimeError(
                "this Kiln was built without CUDA (no nvcc at build time, or a PyTorch without "
                "CUDA), so it cannot build CUDA engines; reinstall Kiln on a machine with the CUDA "
                "toolkit and a CUDA build of PyTorch, or compile with device='cpu'"
            )
        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' was asked for, but PyTorch sees no CUDA device")
        return "cuda"
    raise ValueError(f"Kiln runs on 'cpu' and 'cuda', not on {device.type!r}")


def infer_device(
    module: torch.nn.Module, inputs: list[tuple[Input, torch.Tensor | None]]
) -> torch.device:
    """Where the module runs: its example tensors' device, else its parameters', else the CPU."""
    for _, tensor in inputs:
        if tensor is not None:
            return tensor.device
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")


def check_precisions(
    enabled_precisions: Iterable[torch.dtype], inputs: list[tuple[Input, torch.Tensor | None]]
) -> None:
    """Engines compute in the model's own floating dtype (convert it with ``.half()`` for
    fp16): every float input dtype must be enabled, and reduced precision needs CUDA-built
    weights of that dtype."""
    if isinstance(enabled_precisions, torch.dtype):
        enabled_precisions = {enabled_precisions}
    precisions = set(enabled_precisions)
    if not precisions:
        raise ValueError("enabled_precisions is empty; use {torch.float32}")
    for dtype in precisions:
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"enabled_precisions must hold torch.dtype values, got {dtype!r}")
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise NotImplementedError(
                f"enabled_precisions holds {dtype}; Kiln builds float32, float16 and bfloat16 "
                "engines (int8 with calibration is not implemented yet)"
            )
    for i, (spec, _) in enumerate(inputs):
        if spec.dtype.is_floating_point and spec.dtype not in precisions:
            raise ValueError(
                f"inputs[{i}] is {spec.dtype}, which enabled_precisions "
                f"({sorted(str(d) for d in precisions)}) does not allow. Kiln's engines compute in "
                "the model's dtype: convert the model and inputs (e.g. model.half()) and enable "
                "that dtype. Lowering a float32 model to float16 inside the engine is not "
                "implemented yet."
            )


def build_settings(
    *,
    min_block_size: int,
    torch_executed_ops: Iterable[Any],
    require_full_compilation: bool,
    backend: str,
    debug: bool,
    allow_tf32: bool | None = None,
) -> BuildSettings:
    if isinstance(min_block_size, bool) or not isinstance(min_block_size, int):
        raise TypeError(f"min_block_size must be an int, got {type(min_block_size).__name__}")
    if min_block_size < 1:
        raise ValueError(f"min_block_size must be at least 1, got {min_block_size}")
    if not isinstance(require_full_compilation, bool):
        raise TypeError(
            f"require_full_compilation must be a bool, got {type(require_full_compilation).__name__}"
        )
    if not isinstance(debug, bool):
        raise TypeError(f"debug must be a bool, got {type(debug).__name__}")
    if allow_tf32 is not None and not isinstance(allow_tf32, bool):
        raise TypeError(f"allow_tf32 must be a bool or None, got {type(allow_tf32).__name__}")
    return BuildSettings(
        min_block_size=min_block_size,
        torch_executed_ops=tuple(normalize_op_names(torch_executed_ops)),
        require_full_compilation=require_full_compilation,
        backend=backend,
        debug=debug,
        # None: as PyTorch would run these ops now (by default TF32 convolutions, fp32 matmuls).
        tf32_convolutions=torch.backends.cudnn.allow_tf32 if allow_tf32 is None else allow_tf32,
        tf32_matmuls=torch.backends.cuda.matmul.allow_tf32 if allow_tf32 is None else allow_tf32,
    )


def _resolve_inputs(inputs: Any) -> list[tuple[Input, torch.Tensor | None]]:
    """Each forward argument as an Input and, when the user gave a tensor, that tensor."""
    if inputs is None:
        raise ValueError(
            "kiln.compile needs `inputs`: one kiln.Input or example tensor per forward argument, "
            "e.g. inputs=[kiln.Input(shape=(1, 3, 224, 224))]"
        )
    if isinstance(inputs, (Input, torch.Tensor)):
        inputs = [inputs]
    if not isinstance(inputs, Sequence) or isinstance(inputs, str):
        raise TypeError(
            f"inputs must be a list of kiln.Input or torch.Tensor, got {type(inputs).__name__}"
        )
    resolved = []
    for i, item in enumerate(inputs):
        if isinstance(item, Input):
            resolved.append((item, None))
        elif isinstance(item, torch.Tensor):
            resolved.append((Input.from_tensor(item), item))
        else:
            raise TypeError(
                f"inputs[{i}] must be a kiln.Input or a torch.Tensor, got {type(item).__name__}"
            )
    return resolved


def _check_input_devices(inputs: list[tuple[Input, torch.Tensor | None]], backend: str) -> None:
    for i, (_, tensor) in enumerate(inputs):
        if tensor is not None and backend_for_device(tensor.device) != backend:
            raise ValueError(
                f"inputs[{i}] is on {tensor.device}, but the module is compiled for {backend!r}"
            )


def compile(
    module: torch.nn.Module,
    ir: Literal["default", "dynamo", "ts", "torchscript", "torch_compile"] = "default",
    inputs: Sequence[Input | torch.Tensor] | None = None,
    *,
    enabled_precisions: Iterable[torch.dtype] = frozenset({torch.float32}),
    min_block_size: int = 3,
    torch_executed_ops: Iterable[Any] = (),
    require_full_compilation: bool = False,
    debug: bool = False,
    device: str | torch.device | None = None,
    allow_tf32: bool | None = None,
) -> torch.nn.Module:
    """Compiles ``module`` for inference: supported parts run in Kiln engines, the rest in PyTorch.

    Args:
        module: the model (put in eval mode). For ``ir="ts"`` it may already be a ScriptModule.
        ir: ``"dynamo"`` (torch.export, returns a ``torch.fx.GraphModule``), ``"ts"``
            (TorchScript: returns a ``torch.jit.ScriptModule``) or ``"torch_compile"``
            (torch.compile with Kiln as its backend, which splits the forward where dynamo
            cannot capture it: returns a :class:`kiln.dynamo_backend.DynamoCompiledModule`).
            ``"default"`` is ``"dynamo"``, and ``"torch_compile"`` when torch.export cannot
            capture the module whole (data-dependent control flow) and
            ``require_full_compilation`` is off; a warning says so.
        inputs: one :class:`kiln.Input` or example tensor per forward argument. Dynamic dims
            (``min_shape != max_shape``) give engines that accept every shape in the range.
        enabled_precisions: the float dtypes engines may use; they compute in the model's own
            dtype, so for fp16 convert the model and inputs with ``.half()`` and enable it.
        min_block_size: segments with fewer ops stay in PyTorch.
        torch_executed_ops: ops kept in PyTorch, e.g. ``{"aten::relu"}`` or
            ``{"aten.relu.default"}``.
        require_full_compilation: raise (naming the ops) unless everything runs in Kiln.
        debug: debug logging and engine-builder diagnostics for this call.
        device: ``"cpu"`` or ``"cuda"``; by default where the example inputs (else the module's
            parameters) are.
        allow_tf32: whether CUDA engines may run float32 convolutions and matmuls on TF32 tensor
            cores (10-bit mantissa inputs, float32 sums). ``None`` (default) does what PyTorch
            does now: ``torch.backends.cudnn.allow_tf32`` for convolutions (on by default),
            ``torch.backends.cuda.matmul.allow_tf32`` for matmuls (off by default).

    Weights are frozen into the engines: later changes to the module's parameters are not seen.
    ``kiln.summary(result)`` tells what ran where.
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"kiln.compile expects a torch.nn.Module, got {type(module).__name__}")
    if ir not in _IRS:
        raise ValueError(f"ir must be one of {sorted(_IRS)}, got {ir!r}")
    resolved_ir = _IRS[ir]
    if ir == "default" and isinstance(module, torch.jit.ScriptModule):
        resolved_ir = "ts"
    if resolved_ir != "ts" and isinstance(module, torch.jit.ScriptModule):
        raise TypeError(
            f"ir={ir!r} needs a Python nn.Module; a ScriptModule compiles with ir='ts'"
        )
    resolved_inputs = _resolve_inputs(inputs)
    check_precisions(enabled_precisions, resolved_inputs)
    if device is None:
        device = infer_device(module, resolved_inputs)
    backend = backend_for_device(device)
    _check_input_devices(resolved_inputs, backend)
    settings = build_settings(
        min_block_size=min_block_size,
        torch_executed_ops=torch_executed_ops,
        require_full_compilation=require_full_compilation,
        backend=backend,
        debug=debug,
        allow_tf32=allow_tf32,
    )
    with debug_logging(debug):
        logger.debug("kiln.compile: ir=%s, inputs=%s, %s", resolved_ir, [i for i, _ in resolved_inputs], settings)
        module.eval()
        if resolved_ir == "ts":
            with torchscript_warnings_silenced():
                return _compile_ts(module, resolved_inputs, settings)
        if resolved_ir == "torch_compile":
            return _compile_torch_compile(module, resolved_inputs, settings, allow_tf32)
        try:
            exported = _export(module, resolved_inputs)
        except ExportError as error:
            if ir != "default" or require_full_compilation:
                raise
            logger.warning(
                "kiln.compile: torch.export cannot capture the module whole (%s); compiling it "
                "with ir='torch_compile' instead, where the parts dynamo cannot capture run in "
                "Python between engines. Pass ir='dynamo' to get this error instead.",
                _first_line(error.__cause__),
            )
            return _compile_torch_compile(module, resolved_inputs, settings, allow_tf32)
        return _compile_dynamo(exported, resolved_inputs, settings)


# -- TorchScript -------------------------------------------------------------------------------


def _to_script(
    module: torch.nn.Module, inputs: list[tuple[Input, torch.Tensor | None]]
) -> torch.jit.ScriptModule:
    if isinstance(module, torch.jit.ScriptModule):
        return module
    try:
        return torch.jit.script(module)
    except Exception as error:  # noqa: BLE001 - any scripting failure means: trace instead
        logger.info(
            "kiln.compile(ir='ts'): torch.jit.script failed (%s); tracing with example inputs "
            "at the opt shapes instead. Control flow and shape-dependent code are fixed by "
            "tracing.",
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__,
        )
    device = _module_device(module)
    examples = tuple(t if t is not None else i.example_tensor("opt").to(device) for i, t in inputs)
    with torch.no_grad():
        return torch.jit.trace(module, examples)


def _compile_ts(
    module: torch.nn.Module,
    inputs: list[tuple[Input, torch.Tensor | None]],
    settings: BuildSettings,
) -> torch.jit.ScriptModule:
    scripted = _to_script(module, inputs)
    scripted.eval()
    compiled, summary = _C.compile_ts(
        scripted._c,
        [i.to_spec() for i, _ in inputs],
        settings.min_block_size,
        list(settings.torch_executed_ops),
        settings.require_full_compilation,
        settings.backend,
        settings.debug,
        settings.tf32_convolutions,
        settings.tf32_matmuls,
    )
    result = torch.jit._recursive.wrap_cpp_module(compiled)
    attach_summary(result, summary)
    return result


# -- torch.export ------------------------------------------------------------------------------


def _export_example(
    spec: Input, tensor: torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    """The example torch.export traces with.

    torch.export specializes a dim whose example size is 0 or 1 (it cannot tell it from a
    broadcast), so a dynamic dim is traced at ``max(opt, 2)`` (always within the range: a
    dynamic dim has ``max > min >= 1``). The engines still accept the whole ``[min, max]``.
    """
    if tensor is not None:
        return tensor
    shape = tuple(
        opt if lo == hi else max(opt, 2)
        for lo, opt, hi in zip(spec.min_shape, spec.opt_shape, spec.max_shape)
    )
    return Input(shape=shape, dtype=spec.dtype).example_tensor("opt").to(device)


def _module_device(module: torch.nn.Module) -> torch.device:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _dynamic_shapes(
    inputs: list[tuple[Input, torch.Tensor | None]], args: tuple[torch.Tensor, ...]
) -> ShapesCollection | None:
    """torch.export dims for the dynamic dims, keyed by example tensor (so any forward signature,
    ``*args`` included, works). ``Dim.DYNAMIC`` (not named Dims) lets export find dims that must
    be equal (two inputs' batch dims) and still errors if a dim gets specialized."""
    shapes = ShapesCollection()
    dynamic = False
    for (spec, _), example in zip(inputs, args):
        if spec.is_dynamic:
            shapes[example] = {
                d: Dim.DYNAMIC(min=spec.min_shape[d], max=spec.max_shape[d]) for d in spec.dynamic_dims
            }
            dynamic = True
    return shapes if dynamic else None


class ExportError(RuntimeError):
    """torch.export could not capture the module; the cause is torch.export's own error."""


def _first_line(error: BaseException | None) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _export(
    module: torch.nn.Module, inputs: list[tuple[Input, torch.Tensor | None]]
) -> ExportedProgram:
    device = _module_device(module)
    args = tuple(_export_example(spec, tensor, device) for spec, tensor in inputs)
    try:
        exported = torch.export.export(module, args, dynamic_shapes=_dynamic_shapes(inputs, args))
    except Exception as error:
        raise ExportError(
            f"kiln.compile(ir='dynamo'): torch.export could not capture the module: {error}\n"
            "Fix what torch.export reports, or try ir='torch_compile' (graph breaks allowed) or "
            "ir='ts'."
        ) from error
    return exported.run_decompositions(decomposition_table())


def _constants(exported: ExportedProgram) -> dict[str, torch.Tensor]:
    """Placeholder name -> tensor, for the parameters, buffers and constants of the program."""
    constants = {}
    for spec in exported.graph_signature.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            continue
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            value = exported.state_dict.get(spec.target)
            if value is None:
                value = exported.constants[spec.target]
            constants[spec.arg.name] = value.detach()
            continue
        raise NotImplementedError(
            f"kiln.compile(ir='dynamo'): the exported program has a {spec.kind.name} input "
            f"({spec.arg.name}); Kiln compiles programs whose inputs are tensors, parameters, "
            "buffers and constants"
        )
    for spec in exported.graph_signature.output_specs:
        if spec.kind != OutputKind.USER_OUTPUT:
            raise NotImplementedError(
                f"kiln.compile(ir='dynamo'): the module's forward updates state ({spec.kind.name} "
                f"of {spec.target}); Kiln compiles inference graphs without state updates"
            )
    return constants


def _symbol_overrides(
    user_nodes: list[fx.Node], inputs: list[tuple[Input, torch.Tensor | None]]
) -> dict[sympy.Symbol, tuple[int, int, int]]:
    """The kiln.Input range of each symbol of a user input's dims (intersected when export
    found that dims of several inputs are equal)."""
    overrides: dict[sympy.Symbol, tuple[int, int, int]] = {}
    for node, (spec, _) in zip(user_nodes, inputs):
        for d, size in enumerate(node.meta["val"].shape):
            symbol = bare_symbol(size)
            if symbol is None:
                continue
            lo, opt, hi = spec.min_shape[d], spec.opt_shape[d], spec.max_shape[d]
            if symbol in overrides:
                old_lo, old_opt, old_hi = overrides[symbol]
                lo, hi = max(lo, old_lo), min(hi, old_hi)
                if lo > hi:
                    raise ValueError(
                        f"kiln.compile: dim {d} of input {node.name} must equal a dim of another "
                        f"input, but their kiln.Input ranges do not overlap"
                    )
                opt = min(max(old_opt, lo), hi)
            overrides[symbol] = (lo, opt, hi)
    return overrides


def _restore_output_structure(gm: fx.GraphModule, exported: ExportedProgram) -> None:
    """Makes the module return what the original module returned (a tensor, a tuple, a dict...)
    instead of the program's flat tuple of outputs."""
    out_spec = exported.call_spec.out_spec
    output = next(n for n in reversed(gm.graph.nodes) if n.op == "output")
    flat = output.args[0]
    if out_spec is None:
        return
    if out_spec.is_leaf():
        output.args = (flat[0],)
    elif out_spec.type in (tuple, list) and all(c.is_leaf() for c in out_spec.children()):
        output.args = (out_spec.type(flat),)
    else:
        names = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
        gm.graph._codegen = _PyTreeCodeGen(_PyTreeInfo(names, exported.call_spec.in_spec, out_spec))
    gm.recompile()


def _compile_dynamo(
    exported: ExportedProgram,
    inputs: list[tuple[Input, torch.Tensor | None]],
    settings: BuildSettings,
) -> fx.GraphModule:
    gm = exported.graph_module
    constants = _constants(exported)
    user_nodes = [n for n in gm.graph.nodes if n.op == "placeholder" and n.name not in constants]
    if len(user_nodes) != len(inputs):
        raise ValueError(
            f"kiln.compile: the exported program takes {len(user_nodes)} input(s), but "
            f"{len(inputs)} were given in `inputs`"
        )
    overrides = _symbol_overrides(user_nodes, inputs)
    compiled = compile_graph(gm, constants, SymbolRanges.of_graph(gm, overrides), settings)
    _restore_output_structure(compiled, exported)
    return compiled


# -- torch.compile -----------------------------------------------------------------------------


def _compile_torch_compile(
    module: torch.nn.Module,
    inputs: list[tuple[Input, torch.Tensor | None]],
    settings: BuildSettings,
    allow_tf32: bool | None,
) -> torch.nn.Module:
    from kiln.dynamo_backend import compile_module  # it imports this module

    device = torch.device(settings.backend)
    specs = [spec for spec, _ in inputs]
    runs = [[_export_example(spec, tensor, device) for spec, tensor in inputs]]
    # Then the max and the min shapes, where they differ from what ran already.
    seen = {tuple(tuple(x.shape) for x in runs[0])}
    for which in ("max", "min"):
        shapes = tuple(tuple(spec.shape_at(which)) for spec in specs)
        if shapes not in seen:
            seen.add(shapes)
            runs.append(
                [tensor if tensor is not None else spec.example_tensor(which).to(device)
                 for spec, tensor in inputs]
            )
    options = {
        "min_block_size": settings.min_block_size,
        "torch_executed_ops": settings.torch_executed_ops,
        "require_full_compilation": settings.require_full_compilation,
        "debug": settings.debug,
        "allow_tf32": allow_tf32,
    }
    return compile_module(module, specs, runs, options)
