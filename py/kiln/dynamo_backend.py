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

:class:`DynamoCompiledModule` is what ``kiln.compile(ir="torch_compile")`` returns: the module
under torch.compile with this backend, its engines built when kiln.compile returns.
"""

from __future__ import annotations

import contextlib
import operator

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
from kiln.fx_partition import SUMMARY_ATTR, compile_graph, decomposition_table
from kiln.input import Input

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
    return _FrozenGraph(gm, example_inputs, _parse_options(options), on_build=None).run


class _FrozenGraph:
    """One dynamo graph, built into engines with its module tensors frozen.

    Dynamo passes parameters and buffers as graph inputs without guarding on which tensors they
    are, so it reuses a graph for another module of the same code: the part after a graph break
    inside a transformer layer's forward runs for every layer, each with its own weights. The
    graph is built once per set of module tensors (told apart by identity, each set kept alive
    while the graph is); a run with a new set builds it again.
    """

    def __init__(
        self,
        gm: fx.GraphModule,
        example_inputs: Sequence[Any],
        opts: Mapping[str, Any],
        on_build: Callable[[fx.GraphModule], None] | None,
    ) -> None:
        dynamic_dim_max = opts["dynamic_dim_max"]
        if isinstance(dynamic_dim_max, bool) or not isinstance(dynamic_dim_max, int) or dynamic_dim_max < 1:
            raise ValueError(f"option dynamic_dim_max must be a positive int, got {dynamic_dim_max!r}")
        self._gm = gm
        self._dynamic_dim_max = dynamic_dim_max
        self._on_build = on_build
        self._settings = build_settings(
            min_block_size=opts["min_block_size"],
            torch_executed_ops=opts["torch_executed_ops"],
            require_full_compilation=opts["require_full_compilation"],
            backend=backend_for_device(_device_of(example_inputs)),
            debug=opts["debug"],
            allow_tf32=opts["allow_tf32"],
        )
        compiled, self._kept = self._build(example_inputs)
        # Which arguments are frozen depends on their sources alone, the same for every build.
        self._frozen = [i for i in range(len(example_inputs)) if i not in self._kept]
        self._builds = [(self._frozen_tensors(example_inputs), compiled)]

    def _frozen_tensors(self, args: Sequence[Any]) -> tuple[torch.Tensor, ...]:
        return tuple(args[i] for i in self._frozen)

    def _build(self, example_inputs: Sequence[Any]) -> tuple[fx.GraphModule, list[int]]:
        """The graph built with these arguments' module tensors, and the indices of the
        arguments it takes at run time."""
        with debug_logging(self._settings.debug):
            logger.debug("torch.compile(backend='kiln'): dynamo graph\n%s", self._gm.code)
            try:
                traced, constants, kept = _lower_to_aten(self._gm, example_inputs)
            except Exception as error:
                raise RuntimeError(
                    f"Kiln could not lower the graph torch.compile captured to aten ops: {error}"
                ) from error
            logger.debug("torch.compile(backend='kiln'): aten graph\n%s", traced.code)
            compiled = compile_graph(
                traced,
                constants,
                SymbolRanges.of_graph(traced, dynamic_dim_max=self._dynamic_dim_max),
                self._settings,
            )
        if self._on_build is not None:
            self._on_build(compiled)
        return compiled, kept

    def run(self, *args: Any) -> Any:
        frozen = self._frozen_tensors(args)
        for tensors, compiled in self._builds:
            if all(map(operator.is_, frozen, tensors)):
                break
        else:
            logger.info("torch.compile(backend='kiln'): a graph runs with other module tensors; building it for them")
            compiled, _ = self._build(args)
            self._builds.append((frozen, compiled))
        return compiled(*[args[i] for i in self._kept])


class DynamoCompiledModule(torch.nn.Module):
    """A module under ``torch.compile`` with Kiln as its backend, as ``kiln.compile(ir=
    "torch_compile")`` returns it. Dynamo splits the forward where it cannot capture it whole
    (data-dependent control flow such as ``if not torch.isfinite(x).all():``, unsupported Python):
    those parts run in Python, each captured graph runs in Kiln engines. ``graphs`` holds each
    compiled graph with its engines, for kiln.inspect, kiln.profile and kiln.summary. A shape
    outside the inputs' ranges makes dynamo capture and Kiln build again, as torch.compile does.
    It cannot be saved: its Python parts are not TorchScript (compile with ``ir="ts"`` to save).
    """

    def __init__(self, module: torch.nn.Module, options: Mapping[str, Any], dynamic: bool) -> None:
        super().__init__()
        self.graphs = torch.nn.ModuleList()
        self.compiled = torch.compile(
            module, backend=self._compile_graph, options=dict(options), dynamic=None if dynamic else False
        )

    def _compile_graph(
        self, gm: fx.GraphModule, example_inputs: Sequence[Any], *, options: Mapping[str, Any] | None = None
    ) -> Callable[..., Any]:
        return _FrozenGraph(gm, example_inputs, _parse_options(options), on_build=self.graphs.append).run

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.compiled(*args, **kwargs)

    def summary(self) -> dict[str, Any]:
        """The compile summaries of every graph, summed; ``graphs`` counts them."""
        summaries = [getattr(graph, SUMMARY_ATTR) for graph in self.graphs]
        return {
            "graphs": len(summaries),
            "engines": sum(s["engines"] for s in summaries),
            "ops_in_kiln": sum(s["ops_in_kiln"] for s in summaries),
            "ops_in_torch": sum(s["ops_in_torch"] for s in summaries),
            "fallback": [entry for s in summaries for entry in s["fallback"]],
        }


def compile_module(
    module: torch.nn.Module,
    specs: Sequence[Input],
    runs: Sequence[Sequence[torch.Tensor]],
    options: Mapping[str, Any],
) -> DynamoCompiledModule:
    """``module`` under torch.compile with this backend, run on each list of example arguments
    in ``runs`` (one tensor per spec), so that its engines are built now. The first run's
    examples are marked dynamic in their specs' dynamic dims, with their ranges (the others may
    hold sizes of 1, which dynamo specializes). Runs at several sizes build what
    later calls in the ranges need: dynamo captures a graph that resumes after a graph break with
    static shapes and makes a dim dynamic at its second size, and it specializes dims of size 1.
    """
    compiled = DynamoCompiledModule(module, options, dynamic=any(spec.is_dynamic for spec in specs))
    for spec, example in zip(specs, runs[0]):
        for d in spec.dynamic_dims:
            torch._dynamo.mark_dynamic(example, d, min=spec.min_shape[d], max=spec.max_shape[d])
    for examples in runs:
        with torch.no_grad():
            compiled(*examples)
    if not compiled.graphs:
        raise RuntimeError(
            "kiln.compile(ir='torch_compile'): torch.compile captured no graph from the module, "
            "so nothing runs in Kiln"
        )
    return compiled
