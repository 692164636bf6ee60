"""Partitioning seen from the user: ops Kiln does not convert stay in PyTorch, min_block_size,
torch_executed_ops and require_full_compilation, through every front end."""

import logging

import pytest
import torch

import kiln


@torch.library.custom_op("kiln_test::scale_shift", mutates_args=())
def scale_shift(x: torch.Tensor) -> torch.Tensor:
    """An op no converter knows: Kiln must leave it to PyTorch."""
    return x * 0.5 + 0.25


@scale_shift.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class CustomOpNet(torch.nn.Module):
    """conv-bn-relu | custom op | conv-relu-add: two engines around the custom op."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv1(x)))
        y = torch.ops.kiln_test.scale_shift(y)
        return torch.relu(self.conv2(y)) + y


class NonzeroNet(torch.nn.Module):
    """torch.nonzero has a data-dependent shape: it stays in PyTorch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.sigmoid(torch.relu(self.conv(x)) * 2.0)
        return y + 1.0, torch.nonzero(y > 0.6)


class SmallTailNet(torch.nn.Module):
    """A 3-op block, the custom op, then a 2-op block (relu, mul)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x)) + 1.0
        y = torch.ops.kiln_test.scale_shift(y)
        return torch.relu(y) * 3.0


IRS = ["ts", "dynamo"]
SHAPE = (2, 3, 16, 16)


def make(model_class: type[torch.nn.Module]) -> torch.nn.Module:
    torch.manual_seed(0)
    model = model_class().eval()
    with torch.no_grad():  # non-trivial batch norm statistics
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model


def assert_close_to_eager(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape
    tolerance = 1e-4 * expected.abs().max().item()
    assert (actual - expected).abs().max().item() <= tolerance


def fallback_ops(compiled: torch.nn.Module) -> dict[str, list[str]]:
    ops: dict[str, list[str]] = {}
    for op, reason in kiln.summary(compiled)["fallback"]:
        ops.setdefault(op, []).append(reason)
    return ops


@pytest.mark.parametrize("ir", IRS)
def test_custom_op_stays_in_torch(ir):
    model = make(CustomOpNet)
    x = torch.randn(SHAPE)
    compiled = kiln.compile(model, ir=ir, inputs=[kiln.Input(shape=SHAPE)], min_block_size=1)
    summary = kiln.summary(compiled)
    assert summary["engines"] == 2
    assert summary["ops_in_kiln"] >= 5
    assert "kiln_test::scale_shift" in fallback_ops(compiled)
    assert summary["ops_in_torch"] == 1
    with torch.no_grad():
        assert_close_to_eager(compiled(x), model(x))


@pytest.mark.parametrize("ir", IRS)
def test_nonzero_stays_in_torch(ir):
    model = make(NonzeroNet)
    x = torch.randn(SHAPE)
    compiled = kiln.compile(model, ir=ir, inputs=[x], min_block_size=1)
    assert "aten::nonzero" in fallback_ops(compiled)
    assert kiln.summary(compiled)["engines"] >= 1
    with torch.no_grad():
        out, indices = compiled(x)
        expected_out, expected_indices = model(x)
    assert_close_to_eager(out, expected_out)
    torch.testing.assert_close(indices, expected_indices)


@pytest.mark.parametrize("ir", IRS)
def test_min_block_size(ir):
    model = make(SmallTailNet)
    x = torch.randn(SHAPE)
    compiled = kiln.compile(model, ir=ir, inputs=[x], min_block_size=3)
    summary = kiln.summary(compiled)
    assert summary["engines"] == 1
    fallback = fallback_ops(compiled)
    assert any("min_block_size=3" in reason for reason in fallback["aten::relu"])
    with torch.no_grad():
        assert_close_to_eager(compiled(x), model(x))

    everything = kiln.compile(model, ir=ir, inputs=[x], min_block_size=1)
    assert kiln.summary(everything)["engines"] == 2
    assert "aten::relu" not in fallback_ops(everything)


@pytest.mark.parametrize("spelling", ["aten::relu", "aten.relu.default", torch.ops.aten.relu.default])
@pytest.mark.parametrize("ir", IRS)
def test_torch_executed_ops(ir, spelling):
    model = make(CustomOpNet)
    x = torch.randn(SHAPE)
    compiled = kiln.compile(
        model, ir=ir, inputs=[x], min_block_size=1, torch_executed_ops={spelling}
    )
    reasons = fallback_ops(compiled)["aten::relu"]
    assert len(reasons) == 2
    assert all("torch_executed_ops" in reason for reason in reasons)
    with torch.no_grad():
        assert_close_to_eager(compiled(x), model(x))


@pytest.mark.parametrize("ir", IRS)
def test_require_full_compilation_names_the_op(ir):
    model = make(CustomOpNet)
    with pytest.raises(RuntimeError, match="kiln_test::scale_shift"):
        kiln.compile(
            model, ir=ir, inputs=[kiln.Input(shape=SHAPE)], min_block_size=1, require_full_compilation=True
        )


def test_torch_compile_partitions(caplog):
    torch._dynamo.reset()
    model = make(CustomOpNet)
    x = torch.randn(SHAPE)
    compiled = torch.compile(model, backend="kiln", options={"min_block_size": 1})
    with caplog.at_level(logging.INFO, logger="kiln"), torch.no_grad():
        out = compiled(x)
        expected = model(x)
    assert_close_to_eager(out, expected)
    assert any("kiln_test::scale_shift" in r.getMessage() for r in caplog.records)
    torch._dynamo.reset()


def test_torch_compile_torch_executed_ops_and_full_compilation():
    torch._dynamo.reset()
    model = make(CustomOpNet)
    x = torch.randn(SHAPE)
    options = {"min_block_size": 1, "torch_executed_ops": ["aten.relu.default"]}
    with torch.no_grad():
        assert_close_to_eager(torch.compile(model, backend="kiln", options=options)(x), model(x))
    torch._dynamo.reset()
    strict = torch.compile(model, backend="kiln", options={"require_full_compilation": True})
    with pytest.raises(Exception, match="kiln_test::scale_shift"), torch.no_grad():
        strict(x)
    torch._dynamo.reset()


def _to_copy_graph(target: torch.device, engine: torch.device) -> "kiln._C.OpGraph":
    """x -> aten::_to_copy(x, device=target) -> relu, on a graph whose engines run on ``engine``."""
    from kiln import _C

    graph = _C.OpGraph()
    graph.device = engine
    x = graph.add_tensor_value("x", torch.float32, [(3, 3, 3, ""), (4, 4, 4, "")])
    graph.add_input(x)
    args = [graph.add_constant_value(f"arg{i}", v) for i, v in enumerate([None, None, target])]
    flags = [graph.add_constant_value(f"flag{i}", v) for i, v in enumerate([None, False, None])]
    moved = graph.add_tensor_value("moved", torch.float32, [(3, 3, 3, ""), (4, 4, 4, "")])
    graph.add_node(str(torch.ops.aten._to_copy.default._schema), [x, *args, *flags], [moved])
    out = graph.add_tensor_value("out", torch.float32, [(3, 3, 3, ""), (4, 4, 4, "")])
    graph.add_node(str(torch.ops.aten.relu.default._schema), [moved], [out])
    graph.add_output(out)
    return graph


@pytest.mark.parametrize(
    "target, engine",
    [("cpu", "cpu"), ("cuda", "cuda:1"), ("cuda:1", "cuda:1")],
)
def test_move_to_the_engines_device_converts(target, engine):
    graph = _to_copy_graph(torch.device(target), torch.device(engine))
    partition = kiln._C.partition(graph, 1, [], True)
    assert partition.fallback_reasons == {}
    assert len(partition.segments) == 1


@pytest.mark.parametrize(
    "target, engine",
    [("cuda", "cpu"), ("cpu", "cuda:0"), ("cuda:0", "cuda:1"), ("meta", "cpu")],
)
def test_move_to_another_device_stays_in_torch(target, engine):
    graph = _to_copy_graph(torch.device(target), torch.device(engine))
    partition = kiln._C.partition(graph, 1, [], False)
    assert list(partition.fallback_reasons.values()) == [
        "moves the tensor to another device than the engine's; device moves stay in PyTorch"
    ]


class BranchReturnsOuterValue(torch.nn.Module):
    """Data-dependent control flow whose branch returns a value computed before the `if`
    (TorchScript's `-> (%y)`): the value must reach the rewritten graph's prim::If."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(x) * 2.0 + 1.0
        if bool(x.sum() > 0):
            out = y
        else:
            out = x
        return out


def test_branch_returning_an_engine_output():
    model = torch.jit.script(BranchReturnsOuterValue())
    compiled = kiln.compile(model, ir="ts", inputs=[kiln.Input(shape=(2, 3))], min_block_size=1)
    assert kiln.summary(compiled)["engines"] >= 1
    for x in (torch.randn(2, 3).abs(), -torch.randn(2, 3).abs()):
        torch.testing.assert_close(compiled(x), model(x))


class SelfAttention(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = torch.nn.MultiheadAttention(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x, x, x, need_weights=False)[0]


def test_view_after_an_op_left_to_torch_on_engine_outputs():
    """MultiheadAttention's `permute(...).contiguous().view(...)` after sdpa: export drops the
    contiguous (sdpa's output layout makes it a no-op at trace time), and with sdpa left to
    PyTorch on contiguous engine outputs the view would fail. The projections stay in PyTorch
    too, so that permute and view make a segment below min_block_size and stay there."""
    torch.manual_seed(0)
    model = SelfAttention().eval()
    x = torch.randn(5, 2, 16)
    compiled = kiln.compile(
        model,
        ir="dynamo",
        inputs=[x],
        min_block_size=3,
        torch_executed_ops=[
            "aten::scaled_dot_product_attention",
            "aten::_scaled_dot_product_flash_attention_for_cpu",
            "aten::linear",
            "aten::addmm",
        ],
    )
    assert kiln.summary(compiled)["engines"] >= 1
    with torch.no_grad():
        assert_close_to_eager(compiled(x), model(x))


class AppendedListNet(torch.nn.Module):
    """DenseNet's pattern: a list grown by append, read by a cat after each append."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        features.append(torch.relu(torch.cat(features, 1)))
        features.append(torch.cat(features, 1) * 2.0)
        return torch.cat(features, 1)


class AppendInLoopNet(torch.nn.Module):
    """A list appended to inside a loop whose trip count TorchScript does not know (freezing
    unrolls constant ones), read after the loop."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.relu(x)]
        for _ in range(x.size(0)):
            parts.append(parts[-1] * 2.0)
        return torch.cat(parts, 1) + 1.0


def test_torchscript_list_grown_by_append_converts() -> None:
    model = AppendedListNet().eval()
    x = torch.randn(2, 3)
    compiled = kiln.compile(model, ir="ts", inputs=[x], min_block_size=1, require_full_compilation=True)
    assert kiln.summary(compiled)["ops_in_torch"] == 0
    torch.testing.assert_close(compiled(x), model(x))


def test_torchscript_list_appended_in_a_loop_is_refused() -> None:
    # The loop used to be dropped as dead code, and the cat to read the list without its
    # appended elements.
    x = torch.randn(2, 3)
    with pytest.raises(RuntimeError, match=r"prim::Loop that changes a value made before it \(aten::append"):
        kiln.compile(AppendInLoopNet().eval(), ir="ts", inputs=[x], min_block_size=1)
    compiled = kiln.compile(AppendInLoopNet().eval(), ir="dynamo", inputs=[x], min_block_size=1)
    torch.testing.assert_close(compiled(x), AppendInLoopNet()(x))
