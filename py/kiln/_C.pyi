"""Type stub of the extension kiln._C (built from py/kiln/csrc, converters/, lowering/).

Value ids and node ids are ints handed out by OpGraph. Shapes are lists of dims, each dim a
tuple (min, opt, max, symbol): symbol "" for a static dim (min == opt == max); dims that share a
symbol are equal for every input.
"""

from typing import Any

import torch

SymDim = tuple[int, int, int, str]

class OpGraph:
    def __init__(self) -> None: ...
    # The device the engines run on; `x.to(device=...)` to it converts, to others stays in torch.
    device: torch.device
    # A runtime tensor (graph input or node output).
    def add_tensor_value(self, name: str, dtype: torch.dtype, shape: list[SymDim]) -> int: ...
    # A build-time constant: tensor, int, float, bool, None, str, list of those, dtype, device...
    def add_constant_value(self, name: str, value: Any) -> int: ...
    # An int computed from input shapes only: its range and symbol ("" when static).
    def add_shape_int_value(self, name: str, dim: SymDim) -> int: ...
    # A list assembled from other values; kind is "Tensor", "int", "float" or "bool".
    def add_list_value(self, name: str, kind: str, elements: list[int]) -> int: ...
    # A runtime value that is not a tensor (an int computed from data, say): opaque to Kiln.
    def add_opaque_value(self, name: str) -> int: ...
    # A node with its full schema (str(op._schema)); inputs in schema order, defaults filled.
    def add_node(self, schema: str, inputs: list[int], outputs: list[int]) -> int: ...
    # A node Kiln must leave to PyTorch (no schema, or not importable), with the reason.
    def add_unsupported_node(self, op: str, inputs: list[int], outputs: list[int], reason: str) -> int: ...
    def add_input(self, value: int) -> None: ...
    def add_output(self, value: int) -> None: ...
    def num_nodes(self) -> int: ...
    def node_name(self, node: int) -> str: ...  # "aten::add.Tensor"
    def node_folded(self, node: int) -> bool: ...  # computed at build time by fold_constants
    def value_constant(self, value: int) -> Any: ...  # the build-time value, or None
    def __str__(self) -> str: ...

class Segment:
    nodes: list[int]
    inputs: list[int]  # runtime values the segment reads, in engine binding order
    outputs: list[int]  # values it produces for the rest of the graph, in binding order

class Partition:
    segments: list[Segment]
    # Execution order of the rewritten graph: ("node", node_id) for a node left to PyTorch,
    # ("segment", index) for a segment that becomes one execute_engine call.
    order: list[tuple[str, int]]
    # node id -> why it stays in PyTorch.
    fallback_reasons: dict[int, str]

def fold_constants(graph: OpGraph, max_folded_bytes: int = ...) -> int: ...
def partition(
    graph: OpGraph,
    min_block_size: int,
    torch_executed_ops: list[str],
    require_full_compilation: bool,
) -> Partition: ...

# Converts the segment's nodes to a Network, builds an engine on `backend` ("cpu" or "cuda")
# and returns it as a torch.classes.kiln.Engine.
def build_engine(
    graph: OpGraph,
    segment: Segment,
    name: str,
    backend: str,
    debug: bool,
    tf32_convolutions: bool = False,
    tf32_matmuls: bool = False,
) -> torch.ScriptObject: ...

# The TorchScript front end: lowers (freeze, inline, remove no-ops), imports with the shapes
# seen at each input's min/opt/max, partitions, builds the engines and returns the rewritten
# module, plus a summary dict (engines, ops converted, ops left to PyTorch with reasons).
def compile_ts(
    module: torch._C.ScriptModule,
    input_specs: list[dict[str, Any]],  # {"min": [...], "opt": [...], "max": [...], "dtype": torch.dtype}
    min_block_size: int,
    torch_executed_ops: list[str],
    require_full_compilation: bool,
    backend: str,
    debug: bool,
    tf32_convolutions: bool = False,
    tf32_matmuls: bool = False,
) -> tuple[torch._C.ScriptModule, dict[str, Any]]: ...

# The device an engine built now for `backend` ("cpu" or "cuda") runs on.
def engine_device(backend: str) -> torch.device: ...

# Every op schema a converter is registered for, sorted.
def supported_ops() -> list[str]: ...

def has_cuda() -> bool:
    """Whether this build can build and run CUDA engines."""
