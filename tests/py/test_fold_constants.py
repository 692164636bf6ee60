"""The constant-folding lowering pass (lowering/fold_constants.cpp) on small OpGraphs built by
hand: what folds, what must not (random ops, uninitialized memory, values mutated in place,
anything that reads a graph input, results over the size cap), and what it does to partitioning;
then end to end through both front ends."""

from __future__ import annotations

import pytest
import torch

import kiln
from kiln import _C

ZEROS = "aten::zeros(SymInt[] size, *, ScalarType? dtype=None, Layout? layout=None, Device? device=None, bool? pin_memory=None) -> Tensor"
RAND = "aten::rand(SymInt[] size, *, ScalarType? dtype=None, Layout? layout=None, Device? device=None, bool? pin_memory=None) -> Tensor"
EMPTY = "aten::empty.memory_format(SymInt[] size, *, ScalarType? dtype=None, Layout? layout=None, Device? device=None, bool? pin_memory=None, MemoryFormat? memory_format=None) -> Tensor"
ADD = "aten::add.Tensor(Tensor self, Tensor other, *, Scalar alpha=1) -> Tensor"
MUL = "aten::mul.Tensor(Tensor self, Tensor other) -> Tensor"
FILL_ = "aten::fill_.Scalar(Tensor(a!) self, Scalar value) -> Tensor(a!)"
SLICE = "aten::slice.Tensor(Tensor(a) self, int dim=0, SymInt? start=None, SymInt? end=None, SymInt step=1) -> Tensor(a)"
SLICE_SCATTER = "aten::slice_scatter(Tensor self, Tensor src, int dim=0, SymInt? start=None, SymInt? end=None, SymInt step=1) -> Tensor"
EXPAND = "aten::expand(Tensor(a) self, SymInt[] size, *, bool implicit=False) -> Tensor(a)"
INDEX = "aten::index.Tensor(Tensor self, Tensor?[] indices) -> Tensor"


class Builder:
    """A tiny OpGraph under construction, with helpers for the values tests need."""

    def __init__(self) -> None:
        self.g = _C.OpGraph()

    def const(self, value: object) -> int:
        return self.g.add_constant_value("c", value)

    def tensor(self, shape: list[int], dtype: torch.dtype = torch.float32) -> int:
        return self.g.add_tensor_value("t", dtype, [(size, size, size, "") for size in shape])

    def input(self, shape: list[int]) -> int:
        v = self.tensor(shape)
        self.g.add_input(v)
        return v

    def node(self, schema: str, inputs: list[int], shape: list[int], dtype: torch.dtype = torch.float32) -> tuple[int, int]:
        out = self.tensor(shape, dtype)
        return self.g.add_node(schema, inputs, [out]), out

    def factory(self, schema: str, shape: list[int]) -> tuple[int, int]:
        none = self.const(None)
        return self.node(schema, [self.const(shape), none, none, none, none], shape)


def test_folds_factories_and_functional_ops_on_constants() -> None:
    b = Builder()
    x = b.input([2, 3])
    zeros_node, zeros = b.factory(ZEROS, [2, 3])
    weight = torch.arange(6.0).reshape(2, 3)
    add_node, added = b.node(ADD, [zeros, b.const(weight), b.const(1)], [2, 3])
    # slice_scatter of a constant into a constant: swin's mask built by slice assignment.
    scatter_node, scattered = b.node(
        SLICE_SCATTER, [added, b.const(torch.full((2, 1), 7.0)), b.const(1), b.const(0), b.const(1), b.const(1)], [2, 3]
    )
    mul_node, out = b.node(MUL, [x, scattered], [2, 3])
    b.g.add_output(out)

    assert _C.fold_constants(b.g) == 3
    assert [b.g.node_folded(n) for n in (zeros_node, add_node, scatter_node, mul_node)] == [True, True, True, False]
    expected = weight.clone()
    expected[:, 0] = 7.0
    torch.testing.assert_close(b.g.value_constant(scattered), expected)
    assert b.g.value_constant(out) is None
    # The folded nodes are neither converted nor run: one engine of one op, nothing in PyTorch.
    partition = _C.partition(b.g, 1, [], True)
    assert [list(s.nodes) for s in partition.segments] == [[mul_node]]
    assert partition.order == [("segment", 0)]


def test_folds_index_of_a_constant_table() -> None:
    """swin's relative position bias: a parameter table indexed by a constant buffer."""
    b = Builder()
    table = torch.randn(5, 3)
    index = torch.tensor([4, 0, -1, 2])
    index_list = b.g.add_list_value("indices", "Tensor", [b.const(index)])
    index_node, gathered = b.node(INDEX, [b.const(table), index_list], [4, 3])
    assert _C.fold_constants(b.g) == 1
    assert b.g.node_folded(index_node)
    torch.testing.assert_close(b.g.value_constant(gathered), table[index])


def test_does_not_fold_random_uninitialized_or_input_dependent_ops() -> None:
    b = Builder()
    x = b.input([2, 3])
    rand_node, random = b.factory(RAND, [2, 3])
    empty_none = b.const(None)
    empty_node, _ = b.node(EMPTY, [b.const([2, 3])] + [empty_none] * 5, [2, 3])
    add_node, after_rand = b.node(ADD, [random, b.const(torch.ones(2, 3)), b.const(1)], [2, 3])
    mul_node, _ = b.node(MUL, [x, b.const(torch.ones(2, 3))], [2, 3])
    assert _C.fold_constants(b.g) == 0
    for n in (rand_node, empty_node, add_node, mul_node):
        assert not b.g.node_folded(n)
    assert b.g.value_constant(after_rand) is None


def test_does_not_fold_values_mutated_in_place() -> None:
    """zeros, then fill_ of a slice (a view) of it: the zeros' value is not what later ops read,
    so neither the zeros, the view nor any reader folds."""
    b = Builder()
    zeros_node, zeros = b.factory(ZEROS, [4])
    slice_node, view = b.node(SLICE, [zeros, b.const(0), b.const(1), b.const(3), b.const(1)], [2])
    fill_out = b.tensor([2])
    fill_node = b.g.add_node(FILL_, [view, b.const(5.0)], [fill_out])
    add_node, _ = b.node(ADD, [zeros, b.const(torch.ones(4)), b.const(1)], [4])
    # An unrelated constant subgraph still folds.
    other_node, _ = b.factory(ZEROS, [3])
    assert _C.fold_constants(b.g) == 1
    assert [b.g.node_folded(n) for n in (zeros_node, slice_node, fill_node, add_node, other_node)] == [
        False, False, False, False, True,
    ]


def test_size_cap() -> None:
    b = Builder()
    expand_node, big = b.node(EXPAND, [b.const(torch.ones(1)), b.const([1000]), b.const(False)], [1000])
    assert _C.fold_constants(b.g, max_folded_bytes=1000) == 0
    assert not b.g.node_folded(expand_node)
    assert _C.fold_constants(b.g, max_folded_bytes=4000) == 1
    assert b.g.value_constant(big).shape == (1000,)


def test_folded_value_read_by_pytorch_keeps_its_node() -> None:
    """A folded result that an op left to PyTorch reads (here the graph's output itself) is still
    computed there."""
    b = Builder()
    zeros_node, zeros = b.factory(ZEROS, [3])
    b.g.add_output(zeros)
    assert _C.fold_constants(b.g) == 1
    partition = _C.partition(b.g, 1, [], False)
    assert partition.order == [("node", zeros_node)]
    assert "folded" in partition.fallback_reasons[zeros_node]


class ShiftedWindowMask(torch.nn.Module):
    """swin's attention mask: zeros, slice assignments of counters, then a broadcast compare;
    and a table indexed by a constant buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(9, 2))
        self.register_buffer("index", torch.tensor([8, 0, 3, -1, 4, 4]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(6, 6)
        count = 0
        for h in (slice(0, 2), slice(2, 4), slice(4, None)):
            for w in (slice(0, 3), slice(3, None)):
                mask[h, w] = count
                count += 1
        bias = self.table[self.index]  # [6, 2]
        return (x + mask.masked_fill(mask > 2, -1.0)) @ bias


@pytest.mark.parametrize("ir", [
    "dynamo",
    # dynamo's graphs keep in-place writes; the backend functionalizes them (before, copy_ into
    # a view of the mask was converted as if nothing read the mask afterwards: wrong numbers).
    "torch.compile",
])
def test_end_to_end_mask_and_table_fold(ir: str) -> None:
    torch.manual_seed(0)
    model = ShiftedWindowMask().eval()
    x = torch.randn(3, 6, 6)
    with torch.no_grad():
        expected = model(x)
        if ir == "torch.compile":
            torch._dynamo.reset()
            compiled = torch.compile(model, backend="kiln", fullgraph=True,
                                     options={"min_block_size": 1, "require_full_compilation": True})
        else:
            compiled = kiln.compile(model, ir="dynamo", inputs=[x], min_block_size=1, require_full_compilation=True)
        actual = compiled(x)
    torch.testing.assert_close(actual, expected)
    if ir == "dynamo":
        assert kiln.summary(compiled)["ops_in_torch"] == 0


def test_torchscript_write_through_a_view_read_afterwards_is_refused() -> None:
    """TorchScript records swin's mask writes (fill_ on slices of a fresh tensor) on the views
    only: compiled, readers of the mask saw it unwritten, which gave wrong numbers. The front end
    now refuses such a graph with a message that names the write and what to do."""
    model = ShiftedWindowMask().eval()
    x = torch.randn(3, 6, 6)
    with pytest.raises(RuntimeError, match=r"writing in place through a view \(aten::slice\).*ir=\"dynamo\""):
        kiln.compile(model, ir="ts", inputs=[x], min_block_size=1)
