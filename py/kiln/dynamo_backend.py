"""``torch.compile(model, backend="kiln")``.

Registered through the ``torch_dynamo_backends`` entry point, so it works without importing kiln
first. For each graph dynamo captures:

1. Placeholders that dynamo took from the module (parameters, buffers, module attributes: their
   source goes through an nn.Module) are frozen: their current values become constants of the
   engines, as TensorRT does. The other tensor placeholders are runtime inputs.
2. The graph is lowered to aten ops with make_fx over dynamo's own FakeTensors (so dynamo's
   ShapeEnv, its symbols and their ranges, carry over), with torch.export's decomposition table
   minus the ops Kiln converts, and functionalized (in-place writes become out-of-place ops).
3. The shared FX path partitions, builds the engines and rewrites the graph.

Options (``torch.compile(model, backend="kiln", options={...})``): ``min_block_size``,
``torch_executed_ops``, ``require_full_compilation``, ``debug``, and ``dynamic_dim_max``: the
largest size given to a dynamic dim that has no upper bound (dynamo's dynamic dims are
``[2, oo)``), default :data:`kiln.fx_importer.DEFAULT_DYNAMIC_DIM_MAX`; engines refuse larger
inputs with a message naming their profile.

Compilation errors are raised, not hidden behind a fallback to eager. The compiled graph is for
inference: it does not record autograd history.
"""

from __future__ import annotations

import contextlib

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.fx as fx
from torch._dynamo.source import NNModuleSource, ParamBufferSource, UnspecializedParamBufferSource
from torch._guards import detect_fake_mode
from torch.export.exported_program import (
    _override_composite_implicit_decomp,
    _split_decomp_table_to_cia_and_python_decomp,
)
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.node import map_arg

from kiln._logging import debug_logging, logger
from kiln.compile import backend_for_device, build_settings
from kiln.fx_importer import DEFAULT_DYNAMIC_DIM_MAX, SymbolRanges
from kiln.fx_partition import compile_graph, decomposition_table

_OPTIONS = {
    "min_block_size": 3,
    "torch_executed_ops": (),
    "require_full_compilation": False,
    "debug": False,
    "allow_tf32": None,
    "dynamic_dim_max": DEFAULT_DYNAMIC_DIM_MAX,
}

_MODULE_SOURCES = (NNModuleSource, ParamBufferSource, UnspecializedParamBufferSource)


def _is_frozen(node: fx.Node, example: Any) -> bool:
    """True for a tensor dynamo read from a module (a parameter, buffer or attribute)."""
    if not isinstance(example, torch.Tensor):
        return False
    if isinstance(example, torch.nn.Parameter):
        return True
    source = getattr(node.meta.get("grapharg"), "source", None)
    while source is not None:
        if isinstance(source, _MODULE_SOURCES):
            return True
        source = getattr(source, "base", None)
    return False


def _fold_item_of_frozen(graph: fx.Graph, frozen: Mapping[fx.Node, torch.Tensor]) -> None:
    """Replaces ``t.item()`` of a frozen tensor by its value. (With dynamic shapes dynamo passes
    float module attributes such as BatchNorm's eps as 0-d tensors and reads them with item().)"""
    for node in list(graph.nodes):
        if node.op == "call_method" and node.target == "item" and node.args[0] in frozen:
            value = frozen[node.args[0]].item()
            for user in list(node.users):
                user.args = map_arg(user.args, lambda n: value if n is node else n)
                user.kwargs = map_arg(user.kwargs, lambda n: value if n is node else n)
            graph.erase_node(node)


def _lower_to_aten(
    gm: fx.GraphModule, example_inputs: Sequence[Any]
) -> tuple[fx.GraphModule, dict[str, torch.Tensor], list[int]]:
    """The aten-level graph, its constants (placeholder name -> tensor) and the indices of the
    arguments the compiled graph still takes."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(example_inputs):
        raise RuntimeError(
            f"internal error: dynamo's graph has {len(placeholders)} placeholders but "
            f"{len(example_inputs)} example inputs"
        )
    frozen = {
        i: example.detach()
        for i, (node, example) in enumerate(zip(placeholders, example_inputs))
        if _is_frozen(node, example)
    }

    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    output = graph.graph_copy(gm.graph, env)
    graph.output(output)
    new_placeholders = [env[n] for n in placeholders]
    _fold_item_of_frozen(graph, {new_placeholders[i]: t for i, t in frozen.items()})
    module = fx.GraphModule(gm, graph)

    fake_args = [n.meta.get("example_value", ex) for n, ex in zip(placeholders, example_inputs)]
    fake_mode = detect_fake_mode(fake_args)
    cia_to_decomp, python_decomp = _split_decomp_table_to_cia_and_python_decomp(
        decomposition_table().materialize()
    )
    with (
        fake_mode if fake_mode is not None else contextlib.nullcontext(),
        _override_composite_implicit_decomp(cia_to_decomp),
        torch.no_grad(),
    ):
        # Functionalized as torch.export's graphs are: dynamo keeps in-place writes (a mask
        # built by slice assignment: copy_ into views of a fresh tensor), which become
        # slice_scatter and friends here, so no mutation reaches the partitioner.
        traced = make_fx(
            torch.func.functionalize(module),
            decomposition_table=python_decomp,
            tracing_mode="symbolic",
            _allow_non_fake_inputs=True,
        )(*fake_args)
    traced.graph.eliminate_dead_code()
    traced.recompile()

    traced_placeholders = [n for n in traced.graph.nodes if n.op == "placeholder"]
    constants = {traced_placeholders[i].name: tensor for i, tensor in frozen.items()}
    kept = [i for i in range(len(placeholders)) if i not in frozen]
    return traced, constants, kept


def _parse_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    if options is None:
        return dict(_OPTIONS)
    if not isinstance(options, Mapping):
        raise TypeError(f"the kiln backend's options must be a dict, got {type(options).__name__}")
    unknown = set(options) - set(_OPTIONS)
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for torch.compile(backend='kiln'); "
            f"valid options: {sorted(_OPTIONS)}"
        )
    return {**_OPTIONS, **options}


def _device_of(example_inputs: Sequence[Any]) -> torch.device:
    devices = {t.device for t in example_inputs if isinstance(t, torch.Tensor)}
    if len(devices) > 1:
        raise ValueError(f"the graph's inputs are on several devices ({sorted(map(str, devices))})")
    return devices.pop() if devices else torch.device("cpu")


def kiln_backend(
    gm: fx.GraphModule,
    example_inputs: Sequence[Any],
    *,
    options: Mapping[str, Any] | None = None,
    mode: str | None = None,
) -> Callable[..., Any]:
    """The torch.compile backend: compiles one dynamo graph with Kiln."""
    if mode not in (None, "default"):
        raise ValueError(
            f"torch.compile(backend='kiln') takes no mode (got {mode!r}); "
            "pass Kiln settings through options={...}"
        )
    opts = _parse_options(options)
    dynamic_dim_max = opts["dynamic_dim_max"]
    if isinstance(dynamic_dim_max, bool) or not isinstance(dynamic_dim_max, int) or dynamic_dim_max < 1:
        raise ValueError(f"option dynamic_dim_max must be a positive int, got {dynamic_dim_max!r}")
    settings = build_settings(
        min_block_size=opts["min_block_size"],
        torch_executed_ops=opts["torch_executed_ops"],
        require_full_compilation=opts["require_full_compilation"],
        backend=backend_for_device(_device_of(example_inputs)),
        debug=opts["debug"],
        allow_tf32=opts["allow_tf32"],
    )
    with debug_logging(settings.debug):
        logger.debug("torch.compile(backend='kiln'): dynamo graph\n%s", gm.code)
        try:
            traced, constants, kept = _lower_to_aten(gm, example_inputs)
        except Exception as error:
            raise RuntimeError(
                f"Kiln could not lower the graph torch.compile captured to aten ops: {error}"
            ) from error
        logger.debug("torch.compile(backend='kiln'): aten graph\n%s", traced.code)
        compiled = compile_graph(
            traced, constants, SymbolRanges.of_graph(traced, dynamic_dim_max=dynamic_dim_max), settings
        )

    def run(*args: Any) -> Any:
        return compiled(*[args[i] for i in kept])

    run.kiln_module = compiled  # type: ignore[attr-defined]
    return run
