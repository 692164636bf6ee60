"""kiln's Python API: kiln.Input validation, kiln.compile argument checks, small helpers."""

import logging
import os
import subprocess
import sys

import pytest
import torch

import kiln
from kiln.fx_partition import normalize_op_names


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)) + 1.0


# -- kiln.Input --------------------------------------------------------------------------------


def test_input_static():
    spec = kiln.Input(shape=(1, 3, 8, 8))
    assert spec.min_shape == spec.opt_shape == spec.max_shape == (1, 3, 8, 8)
    assert spec.shape == (1, 3, 8, 8)
    assert spec.dtype == torch.float32
    assert not spec.is_dynamic
    assert spec.to_spec() == {"min": [1, 3, 8, 8], "opt": [1, 3, 8, 8], "max": [1, 3, 8, 8], "dtype": torch.float32}


def test_input_dynamic():
    spec = kiln.Input(min_shape=(1, 3, 8, 8), opt_shape=(4, 3, 8, 8), max_shape=(8, 3, 16, 16), name="x")
    assert spec.is_dynamic
    assert spec.dynamic_dims == (0, 2, 3)
    assert "min_shape=(1, 3, 8, 8)" in repr(spec)
    with pytest.raises(ValueError, match="dynamic"):
        spec.shape


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({}, ValueError, "needs a shape"),
        ({"shape": (1, 3), "min_shape": (1, 3)}, ValueError, "not both"),
        ({"min_shape": (1, 3), "max_shape": (2, 3)}, ValueError, "opt_shape missing"),
        ({"min_shape": (1, 3), "opt_shape": (2, 3), "max_shape": (2, 3, 4)}, ValueError, "same rank"),
        ({"min_shape": (2, 3), "opt_shape": (1, 3), "max_shape": (4, 3)}, ValueError, "min <= opt <= max"),
        ({"min_shape": (1, 3), "opt_shape": (8, 3), "max_shape": (4, 3)}, ValueError, "min <= opt <= max"),
        ({"shape": (0, 3)}, ValueError, "at least 1"),
        ({"shape": (-1, 3)}, ValueError, "at least 1"),
        ({"shape": (1.5, 3)}, TypeError, "ints only"),
        ({"shape": 3}, TypeError, "sequence of ints"),
        ({"shape": "1,3"}, TypeError, "sequence of ints"),
        ({"shape": (1, 3), "dtype": "float32"}, TypeError, "torch.dtype"),
        ({"shape": (1, 3), "name": 3}, TypeError, "name"),
    ],
)
def test_input_validation(kwargs, error, message):
    with pytest.raises(error, match=message):
        kiln.Input(**kwargs)


def test_input_from_tensor():
    spec = kiln.Input.from_tensor(torch.zeros(2, 5, dtype=torch.int64))
    assert spec.shape == (2, 5) and spec.dtype == torch.int64
    with pytest.raises(TypeError, match="torch.Tensor"):
        kiln.Input.from_tensor([1, 2])


def test_input_example_tensor():
    torch.manual_seed(0)
    spec = kiln.Input(min_shape=(1, 4), opt_shape=(2, 4), max_shape=(3, 4), dtype=torch.int64)
    for which, rows in (("min", 1), ("opt", 2), ("max", 3)):
        t = spec.example_tensor(which)
        assert t.shape == (rows, 4) and t.dtype == torch.int64
    ids = kiln.Input(shape=(1000,), dtype=torch.int32).example_tensor()
    assert ids.min() >= 0 and ids.max() < 16
    assert kiln.Input(shape=(1000,), dtype=torch.int64).example_tensor(high=3).max() < 3
    assert kiln.Input(shape=(4,), dtype=torch.bool).example_tensor().dtype == torch.bool
    assert kiln.Input(shape=(4,)).example_tensor().dtype == torch.float32
    with pytest.raises(ValueError, match="'min', 'opt' or 'max'"):
        spec.example_tensor("median")


# -- kiln.compile arguments --------------------------------------------------------------------


@pytest.fixture
def net():
    torch.manual_seed(0)
    return TinyNet().eval()


INPUTS = [kiln.Input(shape=(1, 3, 8, 8))]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"ir": "tensorrt"}, ValueError, "ir must be one of"),
        ({"inputs": None}, ValueError, "needs `inputs`"),
        ({"inputs": [(1, 3, 8, 8)]}, TypeError, r"inputs\[0\]"),
        ({"inputs": "x"}, TypeError, "list of kiln.Input"),
        ({"enabled_precisions": {torch.float16}}, ValueError, r"inputs\[0\] is torch.float32, which enabled_precisions"),
        ({"enabled_precisions": {torch.float32, torch.int8}}, NotImplementedError, "int8 with calibration"),
        ({"enabled_precisions": {"fp32"}}, TypeError, "torch.dtype"),
        ({"enabled_precisions": set()}, ValueError, "enabled_precisions is empty"),
        ({"device": "meta"}, ValueError, "not on 'meta'"),
        ({"device": "gpu0"}, ValueError, "not a valid torch device"),
        ({"min_block_size": 0}, ValueError, "at least 1"),
        ({"min_block_size": 2.5}, TypeError, "min_block_size must be an int"),
        ({"torch_executed_ops": ["relu"]}, ValueError, "cannot read op name"),
        ({"torch_executed_ops": [3]}, TypeError, "op names"),
        ({"require_full_compilation": "yes"}, TypeError, "bool"),
        ({"debug": 1}, TypeError, "bool"),
        ({"allow_tf32": 1}, TypeError, "allow_tf32 must be a bool or None"),
    ],
)
@pytest.mark.parametrize("ir", ["ts", "dynamo"])
def test_compile_argument_errors(net, ir, kwargs, error, message):
    kwargs = {"ir": ir, "inputs": INPUTS, **kwargs}
    with pytest.raises(error, match=message):
        kiln.compile(net, **kwargs)


@pytest.mark.parametrize("ir", ["ts", "dynamo"])
@pytest.mark.parametrize("cudnn_flag, matmul_flag", [(True, False), (False, True)])
def test_tf32_follows_pytorch_unless_given(net, ir, cudnn_flag, matmul_flag):
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn_flag, matmul_flag
    try:
        following = kiln.compile(net, ir=ir, inputs=INPUTS)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    assert following._kiln_engine_0.tf32() == (cudnn_flag, matmul_flag)
    for forced in (True, False):
        compiled = kiln.compile(net, ir=ir, inputs=INPUTS, allow_tf32=forced)
        assert compiled._kiln_engine_0.tf32() == (forced, forced)
    assert "convolutions yes, matmuls yes" in kiln.inspect(
        kiln.compile(net, ir=ir, inputs=INPUTS, allow_tf32=True)
    )


@pytest.mark.skipif(
    kiln._C.has_cuda() and torch.cuda.is_available(), reason="CUDA engines can be built here"
)
@pytest.mark.parametrize("device", ["cuda", torch.device("cuda", 0)])
def test_compile_for_cuda_without_cuda_is_refused(net, device):
    with pytest.raises(RuntimeError, match="built without CUDA|PyTorch sees no CUDA device"):
        kiln.compile(net, inputs=INPUTS, device=device)


def test_compile_rejects_non_modules():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        kiln.compile(lambda x: x, inputs=INPUTS)


def test_compile_dynamo_rejects_script_modules(net):
    with pytest.raises(TypeError, match="ir='ts'"):
        kiln.compile(torch.jit.script(net), ir="dynamo", inputs=INPUTS)


def test_compile_input_count_must_match(net):
    with pytest.raises(Exception, match="input"):
        kiln.compile(net, ir="ts", inputs=INPUTS * 2)


@pytest.mark.parametrize("ir", ["ts", "dynamo", "default"])
def test_compile_accepts_tensors_and_single_input(net, ir):
    x = torch.randn(1, 3, 8, 8)
    compiled = kiln.compile(net, ir=ir, inputs=x)
    torch.testing.assert_close(compiled(x), net(x), rtol=1e-4, atol=1e-4)
    assert set(kiln.summary(compiled)) == {"engines", "ops_in_kiln", "ops_in_torch", "fallback"}


def test_default_ir_is_dynamo(net):
    compiled = kiln.compile(net, inputs=INPUTS)
    assert isinstance(compiled, torch.fx.GraphModule)


# -- helpers -----------------------------------------------------------------------------------


def test_normalize_op_names():
    assert normalize_op_names(
        ["aten::relu", "aten.relu.default", "aten.relu", "aten::add.Tensor", "aten.add.Tensor", "aten::relu.default"]
    ) == ["aten::relu", "aten::relu", "aten::relu", "aten::add.Tensor", "aten::add.Tensor", "aten::relu"]
    assert normalize_op_names([torch.ops.aten.relu.default, torch.ops.aten.add.Tensor, torch.ops.aten.relu]) == [
        "aten::relu",
        "aten::add.Tensor",
        "aten::relu",
    ]
    assert normalize_op_names("aten::relu") == ["aten::relu"]


def test_summary_needs_a_compiled_module(net):
    with pytest.raises(ValueError, match="kiln.compile"):
        kiln.summary(net)


def test_inspect_without_engines(net):
    assert "No Kiln engines" in kiln.inspect(net)
    with pytest.raises(TypeError):
        kiln.inspect("model.ts")


def test_supported_ops():
    ops = kiln.supported_ops()
    assert ops == sorted(ops)
    assert all(isinstance(op, str) and op.startswith("aten::") for op in ops)
    assert any(op.startswith("aten::relu(") for op in ops)


def test_set_debug():
    logger = logging.getLogger("kiln")
    try:
        kiln.set_debug(True)
        assert logger.isEnabledFor(logging.DEBUG)
    finally:
        kiln.set_debug(False)
    assert logger.level == logging.NOTSET
    with pytest.raises(TypeError):
        kiln.set_debug("on")


def test_kiln_debug_environment_variable():
    code = "import logging, kiln; print(logging.getLogger('kiln').isEnabledFor(logging.DEBUG))"
    env = {**os.environ, "KILN_DEBUG": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_compile_logs_summary_at_info(net, caplog):
    with caplog.at_level(logging.INFO, logger="kiln"):
        kiln.compile(net, ir="dynamo", inputs=INPUTS)
    assert any("left to PyTorch" in r.getMessage() for r in caplog.records)


def test_torch_compile_rejects_unknown_options(net):
    torch._dynamo.reset()
    compiled = torch.compile(net, backend="kiln", options={"min_blok_size": 1})
    with pytest.raises(Exception, match="min_blok_size"):
        compiled(torch.randn(1, 3, 8, 8))
    torch._dynamo.reset()


def test_version():
    assert isinstance(kiln.__version__, str) and kiln.__version__


def test_torch_compile_backend_without_importing_kiln():
    """An installed Kiln registers "kiln" through the torch_dynamo_backends entry point."""
    from importlib import metadata

    if not any(ep.name == "kiln" for ep in metadata.entry_points(group="torch_dynamo_backends")):
        pytest.skip("kiln is not installed (pip install .): no torch_dynamo_backends entry point")
    code = """
import sys
import torch
model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).eval()
x = torch.randn(3, 4)
assert "kiln" not in sys.modules
with torch.no_grad():
    out = torch.compile(model, backend="kiln")(x)
    torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-4)
assert "kiln" in sys.modules
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
