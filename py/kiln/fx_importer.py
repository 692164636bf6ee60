"""The FX front end's importer: an aten-level torch.fx graph -> kiln._C.OpGraph.

The graph comes from torch.export (``ExportedProgram.run_decompositions()``) or from the
torch.compile backend (make_fx over dynamo's graph). Every node carries ``node.meta["val"]``:
FakeTensors whose sizes may be SymInts of the tracer's ShapeEnv.

How nodes are imported:

* placeholders: user inputs become OpGraph inputs (tensor values); placeholders named in
  ``constants`` (parameters, buffers, lifted constants) become constant values; SymInt
  placeholders (dynamo passes sizes as inputs) become shape ints.
* get_attr: tensor attributes become constants.
* call_function on an ``OpOverload``: ``add_node(str(op._schema), ...)`` with the inputs in schema
  order and defaults filled in. Python scalars and constant lists become constant values; lists
  holding nodes become list values.
* ``operator.getitem`` on a node with several results maps to that result's value (no node).
* size computations (``aten.sym_size.int``, SymInt arithmetic such as ``operator.mul``) become
  nodes left to PyTorch whose result is a shape int: its range and symbol, so converters read it
  at build time.
* anything else (Python functions, higher-order ops, ops whose arguments cannot be represented)
  becomes ``add_unsupported_node`` with the reason.

Tensor dims and shape ints are ``(min, opt, max, symbol)``: ``symbol`` is ``str`` of the sympy
expression (dims with the same expression are equal for every input), ``opt`` its value at the hint
(the example input), ``min``/``max`` from the symbols' value ranges (``bound_sympy``). A symbol
whose range has no upper bound (torch.compile's dynamic dims are ``[2, oo)``) is capped at
``dynamic_dim_max`` (default :data:`DEFAULT_DYNAMIC_DIM_MAX`); engines refuse larger inputs with a
message naming their profile.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sympy
import torch
import torch.fx as fx
from torch.utils._pytree import tree_flatten
from torch.utils._sympy.numbers import int_oo
from torch.utils._sympy.value_ranges import ValueRanges, bound_sympy

from kiln import _C
from kiln._logging import logger

SymDim = tuple[int, int, int, str]

# Upper bound given to a dynamic dim whose range has none (torch.compile with dynamic shapes).
DEFAULT_DYNAMIC_DIM_MAX = 4096

# Ops that read sizes, not data: their results are shape ints.
_SIZE_OPS = {
    torch.ops.aten.sym_size.int,
    torch.ops.aten.sym_numel.default,
    torch.ops.aten.sym_stride.int,
    torch.ops.aten.sym_storage_offset.default,
}

SHAPE_COMPUTATION = "computes sizes from input shapes"

_LIST_KINDS = {
    torch._C.TensorType: "Tensor",
    torch._C.IntType: "int",
    torch._C.SymIntType: "int",
    torch._C.FloatType: "float",
    torch._C.BoolType: "bool",
}


def _is_finite(bound: Any) -> bool:
    return bound not in (int_oo, -int_oo, sympy.oo, -sympy.oo)


class SymbolRanges:
    """Ranges of the symbols of one ShapeEnv, for tensor dims and shape ints.

    ``overrides`` maps a symbol to ``(min, opt, max)`` and wins over the ShapeEnv; the dynamo
    compile path uses it for the kiln.Input ranges, which are what the user asked for (the
    ShapeEnv of torch.export keeps its own, sometimes narrower, ranges: a dim exported with
    ``min=1`` is ``[2, max]`` there).
    """

    def __init__(
        self,
        shape_env: Any | None,
        overrides: Mapping[sympy.Symbol, tuple[int, int, int]] | None = None,
        dynamic_dim_max: int = DEFAULT_DYNAMIC_DIM_MAX,
    ) -> None:
        if dynamic_dim_max < 1:
            raise ValueError(f"dynamic_dim_max must be at least 1, got {dynamic_dim_max}")
        self.shape_env = shape_env
        self.overrides = dict(overrides or {})
        self.dynamic_dim_max = dynamic_dim_max

    @classmethod
    def of_graph(
        cls,
        gm: fx.GraphModule,
        overrides: Mapping[sympy.Symbol, tuple[int, int, int]] | None = None,
        dynamic_dim_max: int = DEFAULT_DYNAMIC_DIM_MAX,
    ) -> SymbolRanges:
        """Ranges over the ShapeEnv of the graph's symbolic sizes (none when all are static)."""
        return cls(_find_shape_env(gm), overrides, dynamic_dim_max)

    def symbol_range(self, symbol: sympy.Symbol) -> tuple[int, int, int]:
        if symbol in self.overrides:
            return self.overrides[symbol]
        lower, upper = 0, self.dynamic_dim_max
        hint = None
        if self.shape_env is not None:
            vr = self.shape_env.var_to_range.get(symbol)
            if vr is not None:
                if _is_finite(vr.lower):
                    lower = int(vr.lower)
                if _is_finite(vr.upper):
                    upper = int(vr.upper)
            hint = self.shape_env.backed_var_to_val.get(symbol)
        upper = max(min(upper, self.dynamic_dim_max), lower)
        # Unbacked symbols (sizes computed from data) have no hint.
        opt = int(hint) if hint is not None else max(lower, 1)
        return lower, min(max(opt, lower), upper), upper

    def bounds(self, expr: sympy.Expr) -> tuple[int, int, int]:
        """``(min, opt, max)`` of an integer expression over its symbols' ranges."""
        ranges = {}
        opts = {}
        for symbol in expr.free_symbols:
            lower, opt, upper = self.symbol_range(symbol)
            ranges[symbol] = ValueRanges(lower, upper)
            opts[symbol] = sympy.Integer(opt)
        vr = bound_sympy(expr, ranges)
        lower = int(vr.lower) if _is_finite(vr.lower) else 0
        upper = int(vr.upper) if _is_finite(vr.upper) else max(self.dynamic_dim_max, lower)
        at_opt = sympy.sympify(expr.xreplace(opts))
        opt = int(at_opt) if at_opt.is_number else lower
        return lower, min(max(opt, lower), upper), upper

    def dim(self, size: int | torch.SymInt) -> SymDim:
        """A size as ``(min, opt, max, symbol)``; ``symbol`` is ``""`` when it is static."""
        if isinstance(size, int):
            return size, size, size, ""
        expr = size.node.expr
        if expr.is_number:
            return int(expr), int(expr), int(expr), ""
        lower, opt, upper = self.bounds(expr)
        if lower == upper:
            return lower, lower, lower, ""
        return lower, opt, upper, str(expr)

    def is_backed(self, size: torch.SymInt) -> bool:
        """True when the size is a function of input shapes only (no data-dependent symbol)."""
        expr = size.node.expr
        if self.shape_env is None:
            return True
        return all(
            s in self.overrides or s in self.shape_env.backed_var_to_val for s in expr.free_symbols
        )


def _find_shape_env(gm: fx.GraphModule) -> Any | None:
    for node in gm.graph.nodes:
        for leaf in tree_flatten(node.meta.get("val"))[0]:
            if isinstance(leaf, torch.SymInt):
                return leaf.node.shape_env
            if isinstance(leaf, torch.Tensor):
                for size in leaf.shape:
                    if isinstance(size, torch.SymInt):
                        return size.node.shape_env
    return None


def bare_symbol(size: int | torch.SymInt) -> sympy.Symbol | None:
    """The symbol a size is, when it is exactly one symbol (``s0``, not ``2*s0``)."""
    if isinstance(size, torch.SymInt) and isinstance(size.node.expr, sympy.Symbol):
        return size.node.expr
    return None


@dataclass
class ImportedGraph:
    """An OpGraph and how it maps back to the FX graph it came from."""

    graph: _C.OpGraph
    # OpGraph node id -> FX node.
    nodes: list[fx.Node] = field(default_factory=list)
    # OpGraph value id -> the FX node that holds the value at run time (for a result of a node
    # with several results: the getitem node that takes it out).
    value_nodes: dict[int, fx.Node] = field(default_factory=dict)
    # OpGraph node ids of size computations (not counted as ops left to PyTorch).
    shape_nodes: set[int] = field(default_factory=set)


class _NotImportable(Exception):
    """A node's argument Kiln cannot represent; the node stays in PyTorch."""


def op_name(target: Any) -> str:
    """``aten::add.Tensor`` for an OpOverload (``aten::relu`` for a default overload); a readable
    name for anything else."""
    if isinstance(target, torch._ops.OpOverload):
        schema = target._schema
        return schema.name + (f".{schema.overload_name}" if schema.overload_name else "")
    if isinstance(target, torch._ops.HigherOrderOperator):
        return f"higher_order.{target.name()}"
    module = getattr(target, "__module__", None)
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or repr(target)
    return f"{module}.{name}" if module else name


def _list_kind(arg_type: Any) -> str | None:
    if isinstance(arg_type, torch._C.OptionalType):
        arg_type = arg_type.getElementType()
    if not isinstance(arg_type, torch._C.ListType):
        return None
    element = arg_type.getElementType()
    if isinstance(element, torch._C.OptionalType):
        element = element.getElementType()
    return _LIST_KINDS.get(type(element))


class _Importer:
    def __init__(
        self, gm: fx.GraphModule, constants: Mapping[str, torch.Tensor], ranges: SymbolRanges
    ) -> None:
        self.gm = gm
        self.constants = constants
        self.ranges = ranges
        self.result = ImportedGraph(_C.OpGraph())
        self.g = self.result.graph
        # FX node -> its value id, or the value ids of its results (a node with several results).
        self.values: dict[fx.Node, int | tuple[int, ...]] = {}

    def run(self) -> ImportedGraph:
        handlers: dict[str, Callable[[fx.Node], None]] = {
            "placeholder": self._placeholder,
            "get_attr": self._get_attr,
            "call_function": self._call_function,
            "output": self._output,
        }
        for node in self.gm.graph.nodes:
            handlers.get(node.op, self._other)(node)
        return self.result

    # -- values ------------------------------------------------------------------------------

    def _set(self, node: fx.Node, value: int | tuple[int, ...]) -> None:
        self.values[node] = value
        if isinstance(value, int):
            self.result.value_nodes[value] = node

    def _tensor_value(self, name: str, val: torch.Tensor) -> int:
        return self.g.add_tensor_value(name, val.dtype, [self.ranges.dim(s) for s in val.shape])

    def _result_value(self, name: str, val: Any) -> int:
        """The value of one result with meta value ``val``."""
        if isinstance(val, torch.Tensor):
            return self._tensor_value(name, val)
        if isinstance(val, torch.SymInt) and self.ranges.is_backed(val):
            return self.g.add_shape_int_value(name, self.ranges.dim(val))
        if isinstance(val, bool) or not isinstance(val, int):
            # Data-dependent scalars, SymFloat/SymBool, opaque objects: known only at run time.
            return self.g.add_opaque_value(name)
        return self.g.add_shape_int_value(name, (val, val, val, ""))

    def _results(self, node: fx.Node) -> tuple[int | tuple[int, ...], list[int]]:
        """The node's value (one id, or a tuple of ids for several results) and the flat ids."""
        val = node.meta.get("val")
        if isinstance(val, (tuple, list)):
            ids = tuple(self._result_value(f"{node.name}[{i}]", v) for i, v in enumerate(val))
            return ids, list(ids)
        value = self._result_value(node.name, val)
        return value, [value]

    def _node_value(self, node: fx.Node) -> int:
        value = self.values.get(node)
        if value is None:
            raise _NotImportable(f"it reads {node.name}, which Kiln did not import")
        if isinstance(value, tuple):
            raise _NotImportable(f"it reads all results of {node.name} at once")
        return value

    def _flat_node_inputs(self, node: fx.Node) -> list[int]:
        """Every value the node reads, for nodes left to PyTorch."""
        ids: list[int] = []
        for leaf in tree_flatten((node.args, node.kwargs))[0]:
            if isinstance(leaf, fx.Node) and leaf in self.values:
                value = self.values[leaf]
                for v in value if isinstance(value, tuple) else (value,):
                    if v not in ids:
                        ids.append(v)
        return ids

    def _constant(self, name: str, value: Any) -> int:
        if isinstance(value, torch.Tensor):
            value = value.detach()
        try:
            return self.g.add_constant_value(name, value)
        except (RuntimeError, TypeError, ValueError) as error:
            raise _NotImportable(f"argument {name} ({type(value).__name__}) is not importable: {error}")

    def _argument(self, name: str, value: Any, arg_type: Any) -> int:
        if isinstance(value, fx.Node):
            return self._node_value(value)
        if isinstance(value, (list, tuple)) and any(isinstance(v, fx.Node) for v in value):
            kind = _list_kind(arg_type)
            if kind is None:
                raise _NotImportable(f"argument {name} is a list of type {arg_type}")
            elements = [
                self._argument(f"{name}[{i}]", v, None) if isinstance(v, fx.Node)
                else self._constant(f"{name}[{i}]", v)
                for i, v in enumerate(value)
            ]
            return self.g.add_list_value(name, kind, elements)
        if isinstance(value, (list, tuple)):
            value = list(value)
        return self._constant(name, value)

    def _schema_inputs(self, node: fx.Node, schema: torch._C.FunctionSchema) -> list[int]:
        positional = [a for a in schema.arguments if not a.kwarg_only]
        if len(node.args) > len(positional):
            raise _NotImportable(
                f"it has {len(node.args)} positional arguments, the schema takes {len(positional)}"
            )
        unknown = set(node.kwargs) - {a.name for a in schema.arguments}
        if unknown:
            raise _NotImportable(f"unknown keyword argument(s) {sorted(unknown)}")
        inputs = []
        for i, arg in enumerate(schema.arguments):
            if not arg.kwarg_only and i < len(node.args):
                value = node.args[i]
            elif arg.name in node.kwargs:
                value = node.kwargs[arg.name]
            elif arg.has_default_value():
                value = arg.default_value
            elif isinstance(arg.type, torch._C.OptionalType):
                value = None
            else:
                raise _NotImportable(f"required argument '{arg.name}' is missing")
            if _list_kind(arg.type) == "int" and arg.N and isinstance(value, int):
                value = [value] * arg.N  # an int[2] argument given as one int
            inputs.append(self._argument(f"{node.name}.{arg.name}", value, arg.type))
        return inputs

    # -- nodes -------------------------------------------------------------------------------

    def _add_node(self, fx_node: fx.Node, add: Callable[[], int]) -> int:
        node_id = add()
        if node_id != len(self.result.nodes):
            raise RuntimeError("internal error: OpGraph node ids out of step with the importer")
        self.result.nodes.append(fx_node)
        return node_id

    def _unsupported(self, node: fx.Node, reason: str, outputs: list[int] | None = None) -> int:
        if outputs is None:
            value, outputs = self._results(node)
            self._set(node, value)
        inputs = self._flat_node_inputs(node)
        logger.debug("FX import: %s (%s) stays in PyTorch: %s", node.name, op_name(node.target), reason)
        return self._add_node(
            node, lambda: self.g.add_unsupported_node(op_name(node.target), inputs, outputs, reason)
        )

    def _placeholder(self, node: fx.Node) -> None:
        if node.name in self.constants:
            self._set(node, self._constant(node.name, self.constants[node.name]))
            return
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            value = self._tensor_value(node.name, val)
            self.g.add_input(value)
        else:
            value = self._result_value(node.name, val)
        self._set(node, value)

    def _get_attr(self, node: fx.Node) -> None:
        attr: Any = self.gm
        for part in str(node.target).split("."):
            attr = getattr(attr, part)
        if isinstance(attr, torch.Tensor):
            self._set(node, self._constant(node.name, attr))
        else:
            self._set(node, self.g.add_opaque_value(node.name))

    def _call_function(self, node: fx.Node) -> None:
        target = node.target
        if target is operator.getitem and isinstance(self.values.get(node.args[0]), tuple):
            results = self.values[node.args[0]]
            index = node.args[1]
            if isinstance(index, int) and -len(results) <= index < len(results):
                self._set(node, results[index])
                return
            self._unsupported(node, f"getitem with index {index!r}")
            return
        if target in _SIZE_OPS or self._is_size_arithmetic(node):
            value, outputs = self._results(node)
            self._set(node, value)
            self.result.shape_nodes.add(self._unsupported(node, SHAPE_COMPUTATION, outputs))
            return
        if not isinstance(target, torch._ops.OpOverload):
            self._unsupported(node, f"{op_name(target)} is not an ATen operator")
            return
        schema = target._schema
        try:
            inputs = self._schema_inputs(node, schema)
        except _NotImportable as error:
            self._unsupported(node, str(error))
            return
        value, outputs = self._results(node)
        self._set(node, value)
        try:
            self._add_node(node, lambda: self.g.add_node(str(schema), inputs, outputs))
        except RuntimeError as error:
            self._unsupported(node, f"its schema could not be imported: {error}", outputs)

    def _is_size_arithmetic(self, node: fx.Node) -> bool:
        """SymInt/SymBool arithmetic (``operator.mul``, ``torch.sym_max``, ...): no tensor in or
        out."""
        val = node.meta.get("val")
        if not isinstance(val, (torch.SymInt, torch.SymBool, torch.SymFloat, int, float, bool)):
            return False
        return all(
            not isinstance(leaf.meta.get("val"), torch.Tensor)
            for leaf in tree_flatten((node.args, node.kwargs))[0]
            if isinstance(leaf, fx.Node)
        )

    def _output(self, node: fx.Node) -> None:
        for leaf in tree_flatten(node.args[0])[0]:
            if not isinstance(leaf, fx.Node):
                continue
            value = self.values[leaf]
            for v in value if isinstance(value, tuple) else (value,):
                self.g.add_output(v)

    def _other(self, node: fx.Node) -> None:
        self._unsupported(node, f"{node.op} nodes are not imported (expected an aten-level graph)")


def import_graph(
    gm: fx.GraphModule, constants: Mapping[str, torch.Tensor], ranges: SymbolRanges
) -> ImportedGraph:
    """Imports an aten-level FX graph. ``constants`` maps placeholder names to the tensors they
    stand for (frozen parameters, buffers and lifted constants); other placeholders are inputs."""
    imported = _Importer(gm, constants, ranges).run()
    logger.debug("FX import: OpGraph\n%s", imported.graph)
    return imported
