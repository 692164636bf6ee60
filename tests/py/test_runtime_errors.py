"""torch.ops.kiln.execute_engine refuses every misuse with a message that says what was wrong
and what to do, and the engine keeps working afterwards."""

import pytest
import torch

import kiln
from kiln import _C
from kiln.inspect import find_engines

# The engine's inputs: x with a dynamic batch in [1, 4] (opt 2), and y of static shape [4].
X_DIMS = [(1, 2, 4, "batch"), (4, 4, 4, "")]
Y_DIMS = [(4, 4, 4, "")]


def reference(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.relu(x + y)


@pytest.fixture(scope="module")
def engine() -> torch.ScriptObject:
    """relu(x + y) built straight through kiln._C: an OpGraph, the partitioner, build_engine."""
    graph = _C.OpGraph()
    x = graph.add_tensor_value("x", torch.float32, X_DIMS)
    y = graph.add_tensor_value("y", torch.float32, Y_DIMS)
    graph.add_input(x)
    graph.add_input(y)
    alpha = graph.add_constant_value("alpha", 1)
    total = graph.add_tensor_value("total", torch.float32, X_DIMS)
    graph.add_node(str(torch.ops.aten.add.Tensor._schema), [x, y, alpha], [total])
    out = graph.add_tensor_value("out", torch.float32, X_DIMS)
    graph.add_node(str(torch.ops.aten.relu.default._schema), [total], [out])
    graph.add_output(out)

    partition = _C.partition(graph, min_block_size=1, torch_executed_ops=[], require_full_compilation=True)
    assert len(partition.segments) == 1
    segment = partition.segments[0]
    assert list(segment.inputs) == [x, y] and list(segment.outputs) == [out]
    return _C.build_engine(graph, segment, name="add_relu", backend="cpu", debug=False)


def execute(engine: torch.ScriptObject, *inputs: torch.Tensor) -> list[torch.Tensor]:
    return torch.ops.kiln.execute_engine(list(inputs), engine)


def test_valid_inputs_run(engine):
    assert engine.name() == "add_relu"
    assert engine.num_inputs() == 2 and engine.num_outputs() == 1
    for batch in (1, 2, 3, 4):
        x, y = torch.randn(batch, 4), torch.randn(4)
        (out,) = execute(engine, x, y)
        torch.testing.assert_close(out, reference(x, y))


def test_non_contiguous_input_runs(engine):
    x = torch.randn(4, 3).t()  # shape [3, 4], strided
    y = torch.randn(4)
    assert not x.is_contiguous()
    (out,) = execute(engine, x, y)
    torch.testing.assert_close(out, reference(x, y))


@pytest.mark.parametrize(
    "inputs, message",
    [
        # wrong number of inputs
        (lambda: [torch.randn(2, 4)], r"kiln engine 'add_relu' takes 2 input\(s\), got 1"),
        (lambda: [torch.randn(2, 4), torch.randn(4), torch.randn(4)], r"takes 2 input\(s\), got 3"),
        (lambda: [], r"takes 2 input\(s\), got 0"),
        # wrong device: a meta tensor stands for any device that is not the CPU
        (
            lambda: [torch.empty(2, 4, device="meta"), torch.randn(4)],
            r"kiln engine 'add_relu': input 0 \('[^']*'\) is on meta, but this engine runs on the CPU\. "
            r"Move the input with \.cpu\(\)",
        ),
        (
            lambda: [torch.randn(2, 4), torch.empty(4, device="meta")],
            r"input 1 \('[^']*'\) is on meta, but this engine runs on the CPU",
        ),
        # wrong dtype
        (
            lambda: [torch.randn(2, 4, dtype=torch.float64), torch.randn(4)],
            r"input 0 \('[^']*'\) has dtype Double, but the engine was built for Float\. "
            r"Convert it with \.to\(Float\)",
        ),
        (
            lambda: [torch.randn(2, 4), torch.ones(4, dtype=torch.int64)],
            r"input 1 \('[^']*'\) has dtype Long, but the engine was built for Float",
        ),
        # wrong rank
        (
            lambda: [torch.randn(2, 4, 1), torch.randn(4)],
            r"input 0 \('[^']*'\) has rank 3 \(shape \[2, 4, 1\]\), but the engine expects rank 2",
        ),
        (lambda: [torch.randn(2, 4), torch.tensor(1.0)], r"input 1 \('[^']*'\) has rank 0"),
        # shape outside the profile: dynamic dim above max, static dim different
        (
            lambda: [torch.randn(5, 4), torch.randn(4)],
            r"dim 0 = 5 is outside the optimization profile range \[1, 4\] \(profile 0: "
            r"min \[1, 4\], max \[4, 4\]\); rebuild the engine with a larger max_shape",
        ),
        (
            lambda: [torch.randn(2, 3), torch.randn(4)],
            r"input 'x' dim 1 is 3, but the engine was built for a fixed 4 there \(shape \[-1, 4\]\)",
        ),
        (
            lambda: [torch.randn(2, 4), torch.randn(8)],
            r"input 'y' dim 0 is 8, but the engine was built for a fixed 4 there \(shape \[4\]\)",
        ),
        (lambda: [torch.randn(0, 4), torch.randn(4)], r"dim 0 = 0 is outside the optimization profile range \[1, 4\]"),
    ],
    ids=[
        "one-input",
        "three-inputs",
        "no-inputs",
        "meta-device-x",
        "meta-device-y",
        "float64",
        "int64",
        "rank-3",
        "rank-0",
        "batch-above-max",
        "static-dim-smaller",
        "static-dim-larger",
        "batch-below-min",
    ],
)
def test_misuse_is_refused(engine, inputs, message):
    with pytest.raises(RuntimeError, match=message):
        execute(engine, *inputs())
    # The context used by the failed call was given back: the engine still runs.
    x, y = torch.randn(3, 4), torch.randn(4)
    (out,) = execute(engine, x, y)
    torch.testing.assert_close(out, reference(x, y))


def test_not_an_engine_is_refused():
    with pytest.raises(RuntimeError, match="kiln.Engine"):
        torch.ops.kiln.execute_engine([torch.randn(2, 4)], torch.randn(3))


@pytest.mark.parametrize(
    "plan, message",
    [
        (lambda: torch.zeros(16), "1-D uint8 CPU tensor"),
        (lambda: torch.zeros(4, 4, dtype=torch.uint8), "1-D uint8 CPU tensor"),
        (lambda: torch.empty(64, dtype=torch.uint8, device="meta"), "1-D uint8 CPU tensor"),
    ],
    ids=["float", "2-d", "meta"],
)
def test_engine_from_a_bad_plan_tensor_is_refused(plan, message):
    with pytest.raises(RuntimeError, match=message):
        torch.classes.kiln.Engine(plan())


def test_engine_from_foreign_bytes_is_refused():
    foreign = torch.frombuffer(bytearray(b"PK\x03\x04 this is not a Kiln plan at all" * 4), dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="(?i)not a kiln plan"):
        torch.classes.kiln.Engine(foreign)


def test_engine_from_a_truncated_plan_is_refused(engine):
    plan = engine.serialize()
    with pytest.raises(RuntimeError, match="(?i)truncated"):
        torch.classes.kiln.Engine(plan[: plan.numel() // 2].clone())


def test_engine_round_trips_through_its_plan(engine):
    copy = torch.classes.kiln.Engine(engine.serialize())
    x, y = torch.randn(2, 4), torch.randn(4)
    torch.testing.assert_close(execute(copy, x, y)[0], reference(x, y))


class TwoInputs(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.relu(x * 2.0 + y) - x


@pytest.mark.parametrize("ir", ["ts", "dynamo"])
def test_compiled_module_reports_engine_errors(ir):
    """The checks reach the user through a compiled module too."""
    specs = [kiln.Input(min_shape=(1, 4), opt_shape=(2, 4), max_shape=(4, 4)), kiln.Input(shape=(4,))]
    compiled = kiln.compile(TwoInputs(), ir=ir, inputs=specs, min_block_size=1, require_full_compilation=True)
    assert len(list(find_engines(compiled))) == 1
    x, y = torch.randn(3, 4), torch.randn(4)
    torch.testing.assert_close(compiled(x, y), TwoInputs()(x, y))
    with pytest.raises(RuntimeError, match="has dtype Double, but the engine was built for Float"):
        compiled(x.double(), y)
    with pytest.raises(RuntimeError, match=r"outside the optimization profile range \[1, 4\]"):
        compiled(torch.randn(6, 4), y)
    with pytest.raises(RuntimeError, match="is on meta, but this engine runs on the CPU"):
        compiled(x.to("meta"), y)
