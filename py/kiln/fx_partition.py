"""The FX path shared by ``kiln.compile(ir="dynamo")`` and ``torch.compile(backend="kiln")``.

aten-level GraphModule -> OpGraph (fx_importer) -> ``_C.partition`` -> one engine per segment
(``_C.build_engine``) -> a new GraphModule that runs each segment as one
``torch.ops.kiln.execute_engine`` call and everything else as before.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx

from kiln import _C
from kiln._logging import logger
from kiln.fx_cse import eliminate_common_subexpressions
from kiln.fx_importer import ImportedGraph, SymbolRanges, import_graph, op_name

SUMMARY_ATTR = "_kiln_summary"
ENGINE_PREFIX = "_kiln_engine_"
CONSTANT_PREFIX = "_kiln_constant_"


def normalize_op_names(ops: Iterable[Any]) -> list[str]:
    """Op names as the partitioner matches them: ``"aten::relu"``, ``"aten::add.Tensor"``.

    Accepts the TorchScript spelling (``"aten::relu"``, ``"aten::add.Tensor"``), the FX spelling
    (``"aten.relu.default"``, ``"aten.relu"``, ``"aten.add.Tensor"``) and op objects
    (``torch.ops.aten.relu``, ``torch.ops.aten.relu.default``).
    """
    if isinstance(ops, (str, torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        ops = [ops]
    names = []
    for op in ops:
        if isinstance(op, torch._ops.OpOverload):
            schema = op._schema
            names.append(schema.name + (f".{schema.overload_name}" if schema.overload_name else ""))
            continue
        if isinstance(op, torch._ops.OpOverloadPacket):
            names.append(op._qualified_op_name)
            continue
        if not isinstance(op, str):
            raise TypeError(
                "torch_executed_ops must hold op names such as 'aten::relu' or 'aten.relu.default' "
                f"(or torch.ops.aten.relu), got {type(op).__name__}"
            )
        name = op.strip()
        if "::" not in name:
            parts = name.split(".")
            if len(parts) not in (2, 3) or not all(parts):
                raise ValueError(
                    f"torch_executed_ops: cannot read op name {op!r}; use 'aten::relu', "
                    "'aten::add.Tensor' or 'aten.relu.default'"
                )
            name = f"{parts[0]}::{parts[1]}"
            if len(parts) == 3 and parts[2] != "default":
                name += f".{parts[2]}"
        elif name.endswith(".default"):
            name = name[: -len(".default")]
        names.append(name)
    return names


def converted_op_names() -> set[str]:
    """Qualified names (``aten::add.Tensor``, ``aten::relu``) of the ops Kiln has converters for."""
    return {schema.split("(", 1)[0] for schema in _C.supported_ops()}


def decomposition_table() -> Any:
    """torch.export's core-ATen decomposition table, minus the ops Kiln converts itself.

    Ops Kiln converts (``aten::linear``, ``aten::scaled_dot_product_attention``, ...) reach the
    converters whole, so the FX front end sees the same ops as the TorchScript one where it can,
    and fusions such as attention are not lost to a decomposition.
    """
    table = torch.export.default_decompositions()
    converted = converted_op_names()
    for op in list(table.keys()):
        if op_name(op) in converted:
            del table[op]
    return table


@dataclass(frozen=True)
class BuildSettings:
    """What kiln.compile and the torch.compile backend pass down to partitioning and building."""

    min_block_size: int = 3
    torch_executed_ops: tuple[str, ...] = ()
    require_full_compilation: bool = False
    backend: str = "cpu"
    debug: bool = False
    # float32 convolutions / matmuls on TF32 tensor cores (CUDA engines; see kiln.compile).
    tf32_convolutions: bool = False
    tf32_matmuls: bool = False


@dataclass
class Summary:
    """What a compile did: engines built, ops converted, ops left to PyTorch and why."""

    engines: int = 0
    ops_in_kiln: int = 0
    ops_in_torch: int = 0
    fallback: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "engines": self.engines,
            "ops_in_kiln": self.ops_in_kiln,
            "ops_in_torch": self.ops_in_torch,
            "fallback": list(self.fallback),
        }


def format_summary(summary: Mapping[str, Any]) -> str:
    lines = [
        f"Kiln: {summary['ops_in_kiln']} op(s) in {summary['engines']} engine(s), "
        f"{summary['ops_in_torch']} op(s) left to PyTorch"
    ]
    lines += [f"  {op}: {reason}" for op, reason in summary["fallback"]]
    return "\n".join(lines)


def attach_summary(module: torch.nn.Module, summary: Mapping[str, Any]) -> None:
    """Logs the summary at INFO and keeps it on the module for kiln.summary()."""
    summary = dict(summary)
    logger.info("%s", format_summary(summary))
    setattr(module, SUMMARY_ATTR, summary)


def _summarize(imported: ImportedGraph, partition: _C.Partition) -> Summary:
    summary = Summary(engines=len(partition.segments))
    summary.ops_in_kiln = sum(len(segment.nodes) for segment in partition.segments)
    for node_id, reason in sorted(partition.fallback_reasons.items()):
        if node_id in imported.shape_nodes:
            continue
        summary.fallback.append((imported.graph.node_name(node_id), reason))
    summary.ops_in_torch = len(summary.fallback)
    return summary


# A view that worked at trace time may not on the same values with other strides: engine outputs
# are contiguous where the traced tensor was not (sdpa's output has a layout its permute makes
# contiguous; fed from an engine it does not). In a functional inference graph reshape computes
# the same values, copying only when the strides need it.
_STRIDE_DEPENDENT_VIEWS = (torch.ops.aten.view.default, torch.ops.aten._unsafe_view.default)


class _Rebuilder:
    """Writes the partitioned graph as a new FX graph."""

    def __init__(
        self,
        gm: fx.GraphModule,
        constants: Mapping[str, torch.Tensor],
        imported: ImportedGraph,
        partition: _C.Partition,
        engines: list[torch.ScriptObject],
    ) -> None:
        self.gm = gm
        self.constants = constants
        self.imported = imported
        self.partition = partition
        self.engines = engines
        self.graph = fx.Graph()
        self.root = torch.nn.Module()
        self.env: dict[fx.Node, fx.Node] = {}

    def run(self) -> fx.GraphModule:
        old_nodes = list(self.gm.graph.nodes)
        for node in old_nodes:
            if node.op == "placeholder" and node.name not in self.constants:
                self.env[node] = self.graph.node_copy(node, self.lookup)
        for kind, index in self.partition.order:
            if kind == "node":
                node = self.imported.nodes[index]
                new = self.graph.node_copy(node, self.lookup)
                if new.op == "call_function" and new.target in _STRIDE_DEPENDENT_VIEWS:
                    new.target = torch.ops.aten.reshape.default
                self.env[node] = new
            else:
                self._segment(index)
        output = next(n for n in reversed(old_nodes) if n.op == "output")
        self.graph.node_copy(output, self.lookup)
        self.graph.eliminate_dead_code()
        self.graph.lint()
        return fx.GraphModule(self.root, self.graph, class_name="KilnModule")

    def lookup(self, node: fx.Node) -> fx.Node:
        """The new graph's node for an old one; getitems, get_attrs and constants are made on
        first use."""
        if node in self.env:
            return self.env[node]
        if node.op == "placeholder" and node.name in self.constants:
            new = self._constant(node.name, self.constants[node.name], node)
        elif node.op == "get_attr":
            attr: Any = self.gm
            for part in str(node.target).split("."):
                attr = getattr(attr, part)
            new = self._constant(node.name, attr, node)
        elif node.op == "call_function" and node.target is operator.getitem:
            new = self.graph.node_copy(node, self.lookup)
        else:
            raise RuntimeError(
                f"internal error: {node.format_node()} is used before it is computed in the "
                "partitioned graph; please report this model"
            )
        self.env[node] = new
        return new

    def _constant(self, name: str, value: Any, node: fx.Node) -> fx.Node:
        attr = f"{CONSTANT_PREFIX}{name}"
        if isinstance(value, torch.Tensor):
            self.root.register_buffer(attr, value.detach())
        else:
            setattr(self.root, attr, value)
        new = self.graph.get_attr(attr)
        new.meta = dict(node.meta)
        return new

    def _segment(self, index: int) -> None:
        segment = self.partition.segments[index]
        attr = f"{ENGINE_PREFIX}{index}"
        setattr(self.root, attr, self.engines[index])
        engine = self.graph.get_attr(attr)
        inputs = [self.lookup(self.imported.value_nodes[v]) for v in segment.inputs]
        call = self.graph.call_function(torch.ops.kiln.execute_engine.default, (inputs, engine))
        for i, value in enumerate(segment.outputs):
            old = self.imported.value_nodes[value]
            new = self.graph.call_function(operator.getitem, (call, i))
            if "val" in old.meta:
                new.meta["val"] = old.meta["val"]
            self.env[old] = new


def compile_graph(
    gm: fx.GraphModule,
    constants: Mapping[str, torch.Tensor],
    ranges: SymbolRanges,
    settings: BuildSettings,
) -> fx.GraphModule:
    """Partitions an aten-level graph, builds the engines and returns the rewritten module.

    ``constants`` maps placeholder names to the tensors they stand for; the returned module takes
    the other placeholders, in order, and holds the engines as ``_kiln_engine_<i>`` attributes.
    Its compile summary is logged and attached (kiln.summary).
    """
    gm, merged = eliminate_common_subexpressions(gm)
    logger.debug("Kiln: %d repeated computation(s) merged", merged)
    imported = import_graph(gm, constants, ranges)
    imported.graph.device = _C.engine_device(settings.backend)
    folded = _C.fold_constants(imported.graph)
    logger.debug("Kiln: %d op(s) folded into constants", folded)
    partition = _C.partition(
        imported.graph,
        settings.min_block_size,
        list(settings.torch_executed_ops),
        settings.require_full_compilation,
    )
    engines = []
    count = len(partition.segments)
    for i, segment in enumerate(partition.segments):
        logger.info("Kiln: building engine %d/%d (%d ops)", i + 1, count, len(segment.nodes))
        start = time.perf_counter()
        engines.append(
            _C.build_engine(
                imported.graph,
                segment,
                f"engine_{i}",
                settings.backend,
                settings.debug,
                settings.tf32_convolutions,
                settings.tf32_matmuls,
            )
        )
        logger.debug("Kiln: engine %d/%d built in %.2f s", i + 1, count, time.perf_counter() - start)
    module = _Rebuilder(gm, constants, imported, partition, engines).run()
    attach_summary(module, _summarize(imported, partition).as_dict())
    logger.debug("Kiln: partitioned graph\n%s", module.code)
    return module
