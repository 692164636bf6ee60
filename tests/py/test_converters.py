"""Every converter against eager PyTorch, through both front ends.

Each case is one small module (an ``nn`` layer, which TorchScript scripts, or a function, which it
traces) with a few sets of sample inputs. Every case is compiled with
``kiln.compile(..., min_block_size=1, require_full_compilation=True)`` through ``ir="ts"`` and
``ir="dynamo"``, so a converter that is missing or refuses the node fails the test with the
reason, and the result must match eager float32.

``test_every_converter_is_exercised`` checks the table is complete: each op Kiln registers must
appear in the graph that some case gives one of the front ends, or be listed in ``NOT_REACHABLE``
with why none does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import kiln
from kiln.fx_partition import decomposition_table

FRONT_ENDS = ("ts", "dynamo")
aten = torch.ops.aten

# An input of a case: a shape (float32 randn) or a function returning the tensor.
ArgSpec = tuple[int, ...] | Callable[[], torch.Tensor]


def positive(*shape: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.rand(shape) + 0.1


def ints(*shape: int, low: int = -5, high: int = 6, dtype: torch.dtype = torch.int64) -> Callable[[], torch.Tensor]:
    return lambda: torch.randint(low, high, shape, dtype=dtype)


def typed(dtype: torch.dtype, *shape: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(shape, dtype=dtype)


def bools(*shape: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.rand(shape) > 0.5


def special(*shape: int, dtype: torch.dtype = torch.float32) -> Callable[[], torch.Tensor]:
    """Floats with inf, -inf and NaN among them."""

    def build() -> torch.Tensor:
        x = torch.randn(shape, dtype=dtype).flatten()
        x[::5] = float("inf")
        x[1::7] = float("-inf")
        x[2::3] = float("nan")
        return x.view(shape)

    return build


def nonzero(*shape: int) -> Callable[[], torch.Tensor]:
    """Floats away from zero (divisors)."""
    return lambda: (torch.rand(shape) + 0.5) * torch.where(torch.rand(shape) > 0.5, 1.0, -1.0)


def make(spec: ArgSpec) -> torch.Tensor:
    return spec() if callable(spec) else torch.randn(spec)


class Fn(nn.Module):
    """A function as a module. TorchScript cannot script it, so ir="ts" traces it."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.fn = fn


# torch.export needs a forward with one named parameter per input (not *args).
class Fn1(Fn):
    def forward(self, a: torch.Tensor) -> Any:
        return self.fn(a)


class Fn2(Fn):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> Any:
        return self.fn(a, b)


class Fn3(Fn):
    def forward(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> Any:
        return self.fn(a, b, c)


class Fn4(Fn):
    def forward(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> Any:
        return self.fn(a, b, c, d)


_FN_BY_ARITY = {1: Fn1, 2: Fn2, 3: Fn3, 4: Fn4}


class Traced(Fn1):
    """An nn layer that TorchScript traces rather than scripts (the call goes through a lambda),
    so ir="ts" sees the traced forms: aten::_convolution instead of aten::conv2d."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__(lambda x: inner(x))
        self.inner = inner


# Scripted, so TorchScript keeps the Scalar overloads that tracing turns into Tensor ones.
class AddScalar(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 2.5


class SubScalar(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - 1.5


class MulScalar(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.5


class DivScalar(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / 4


class DivScalarFloor(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.div(x, 3, rounding_mode="floor")


class FloorDivideScalar(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x // 3


class InPlaceScalars(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        y += 2.5
        y -= 1
        y *= 2
        y /= 3
        return y.div_(2.0, rounding_mode="floor")


class BitwiseTensor(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x & y) | (x ^ y)


class BitwiseScalar(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x & 6) | 1) ^ 3


class SplitSizes(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first, second = x.split([1, 4], 1)
        return first, second


class ToDevice(nn.Module):
    """Scripts to aten::to.prim_Device (tracing drops a move to the device the tensor is on)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to("cpu") * 2.0


class ToOther(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x.to(y)


@dataclass(frozen=True)
class Dynamic:
    """Inputs with dynamic dims: one compile, run at each shape set of ``runs``."""

    inputs: tuple[kiln.Input, ...]
    runs: tuple[tuple[ArgSpec, ...], ...]


@dataclass(frozen=True)
class Case:
    name: str
    module: Callable[[], nn.Module]
    samples: tuple[tuple[ArgSpec, ...], ...] = ()
    dynamic: Dynamic | None = None
    tol: float = 1e-5
    # front end -> why this case cannot convert there (an expected failure, shown as xfail).
    xfail: dict[str, str] = field(default_factory=dict)

    def arity(self) -> int:
        return len(self.samples[0]) if self.samples else len(self.dynamic.runs[0])

    def build(self) -> nn.Module:
        module = self.module()
        if isinstance(module, FunctionModule):
            torch.manual_seed(0)
            module = _FN_BY_ARITY[self.arity()](module.fn).eval()
        return module


@dataclass(frozen=True)
class FunctionModule:
    """What ``fn`` returns: Case.build wraps the function in the Fn of the case's arity."""

    fn: Callable[..., Any]


def fn(f: Callable[..., Any]) -> Callable[[], Any]:
    return lambda: FunctionModule(f)


def layer(factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(0)
        module = factory().eval()
        # Non-trivial running statistics, so batch norm is checked for more than the identity.
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
            # Non-trivial affine parameters of the norms that start at ones and zeros.
            if isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.RMSNorm)):
                if getattr(m, "weight", None) is not None:
                    m.weight.data.uniform_(0.5, 1.5)
                if getattr(m, "bias", None) is not None:
                    m.bias.data.uniform_(-1, 1)
        return module

    return build


# -- attention modules (scriptable, so ir="ts" sees aten::scaled_dot_product_attention whole) ----


class Attention(nn.Module):
    def __init__(self, is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> None:
        super().__init__()
        self.is_causal = is_causal
        self.scale = scale
        self.enable_gqa = enable_gqa

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(
            q, k, v, is_causal=self.is_causal, scale=self.scale, enable_gqa=self.enable_gqa
        )


class MaskedAttention(nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class ConstantMaskAttention(nn.Module):
    """A boolean mask with fully masked rows (torch gives zeros there)."""

    def __init__(self) -> None:
        super().__init__()
        mask = torch.ones(6, 6, dtype=torch.bool).tril()
        mask[2] = False
        self.register_buffer("mask", mask)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask)


def float_mask(*shape: int) -> Callable[[], torch.Tensor]:
    """An additive mask with -inf entries and one fully masked row."""

    def build() -> torch.Tensor:
        mask = torch.randn(shape)
        mask = mask.masked_fill(torch.rand(shape) > 0.6, float("-inf"))
        mask[..., 0, :] = float("-inf")
        return mask

    return build


# -- the table ---------------------------------------------------------------------------------

# weight, bias, running mean, running var of aten::native_batch_norm, called directly (neither
# front end produces it from nn.BatchNorm).
_BN_STATS = (torch.rand(3) + 0.5, torch.randn(3), torch.randn(3), torch.rand(3) + 0.5)
_LN_WEIGHT = torch.rand(4) + 0.5
_DECONV_WEIGHT = torch.randn(4, 2, 3, 2)
_CONV_WEIGHT = torch.randn(4, 3, 3, 2)

B = Dynamic  # short alias for the table

def _inplace(method: str, *args: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """``method`` in place on a copy of the input: an in-place op on an intermediate, which
    TorchScript keeps as ``aten::<op>_`` and torch.export functionalizes."""

    def apply(x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        getattr(y, method)(*args)
        return y

    return apply


def _activation_cases() -> list[Case]:
    x = (((2, 3, 4),), ((5,),))
    cases = [
        Case("relu", layer(lambda: nn.ReLU()), x),
        Case("relu6", fn(F.relu6), x),
        Case("sigmoid", layer(lambda: nn.Sigmoid()), x),
        Case("tanh", layer(lambda: nn.Tanh()), x),
        Case("silu", layer(lambda: nn.SiLU()), x),
        Case("selu", layer(lambda: nn.SELU()), x),
        Case("hardswish", layer(lambda: nn.Hardswish()), x),
        Case("hardsigmoid", layer(lambda: nn.Hardsigmoid()), x),
        Case("mish", layer(lambda: nn.Mish()), x),
        Case("gelu", layer(lambda: nn.GELU()), x),
        Case("gelu_tanh", layer(lambda: nn.GELU(approximate="tanh")), x),
        Case("hardtanh", layer(lambda: nn.Hardtanh(-0.5, 0.7)), x),
        Case("leaky_relu", layer(lambda: nn.LeakyReLU(0.2)), x),
        Case("elu", layer(lambda: nn.ELU(alpha=0.7)), x),
        Case("softplus", layer(lambda: nn.Softplus(beta=2.0, threshold=1.0)), x),
        Case("clamp", fn(lambda x: torch.clamp(x, -0.5, 0.5)), x),
        Case("clamp_min_only", fn(lambda x: torch.clamp(x, min=0.1)), x),
        Case("clamp_int", fn(lambda x: torch.clamp(x, -2, 3)), ((ints(3, 4),),)),
        Case("clamp_tensor", fn(lambda x, lo, hi: torch.clamp(x, lo, hi)), (((3, 4), (4,) , (3, 1)),)),
        Case("clamp_min", fn(lambda x: torch.clamp_min(x, 0.2)), x),
        Case("clamp_max", fn(lambda x: torch.clamp_max(x, 0.2)), x),
        Case("clamp_min_tensor", fn(lambda x, y: torch.clamp_min(x, y)), (((3, 4), (4,)),)),
        Case("clamp_max_tensor", fn(lambda x, y: torch.clamp_max(x, y)), (((3, 4), (3, 1)),)),
    ]
    for method, args in [("relu_", ()), ("sigmoid_", ()), ("tanh_", ()), ("clamp_", (-0.3, 0.4))]:
        cases.append(Case(f"{method}_inplace", fn(_inplace(method, *args)), x))
    for name, f in [
        ("silu_", lambda y: F.silu(y, inplace=True)),
        ("selu_", lambda y: F.selu(y, inplace=True)),
        ("hardswish_", lambda y: F.hardswish(y, inplace=True)),
        ("hardsigmoid_", lambda y: F.hardsigmoid(y, inplace=True)),
        ("mish_", lambda y: F.mish(y, inplace=True)),
        ("hardtanh_", lambda y: F.hardtanh(y, -0.2, 0.3, inplace=True)),
        ("leaky_relu_", lambda y: F.leaky_relu(y, 0.3, inplace=True)),
        ("elu_", lambda y: F.elu(y, 0.5, inplace=True)),
        ("gelu_", lambda y: torch.ops.aten.gelu_(y)),
    ]:
        cases.append(Case(f"{name}_inplace", fn(lambda x, f=f: f(x.clone())), x))
    return cases


def _elementwise_cases() -> list[Case]:
    pair = (((2, 3, 4), (4,)), ((3, 1), (1, 5)))  # broadcasting both ways
    int_pair = ((ints(3, 4, dtype=torch.int32), ints(4, low=1, high=5)),)  # int32 with int64
    return [
        Case("add", fn(torch.add), pair + int_pair),
        Case("add_alpha", fn(lambda x, y: torch.add(x, y, alpha=2.5)), pair),
        Case("add_mixed_types", fn(torch.add), (((3, 4), ints(3, 4)),)),
        Case("add_scalar", fn(lambda x: x + 2.5), (((3, 4),), (ints(3, 4),))),
        Case("add_scalar_scripted", layer(AddScalar), (((3, 4),), (ints(3, 4),))),
        Case("sub_scalar_scripted", layer(SubScalar), (((3, 4),),)),
        Case("mul_scalar_scripted", layer(MulScalar), (((3, 4),), (ints(3, 4),))),
        Case("div_scalar_scripted", layer(DivScalar), (((3, 4),), (ints(3, 4),))),
        Case("div_scalar_floor_scripted", layer(DivScalarFloor), (((3, 4),), (ints(3, 4),))),
        Case("floor_divide_scalar_scripted", layer(FloorDivideScalar), ((ints(3, 4),),)),
        Case("inplace_scalars_scripted", layer(InPlaceScalars), (((3, 4),),)),
        Case("add_inplace", fn(lambda x, y: x.clone().add_(y)), pair[:1]),
        Case("add_scalar_inplace", fn(_inplace("add_", 3)), (((3, 4),),)),
        Case("sub", fn(torch.sub), pair + int_pair),
        Case("sub_alpha", fn(lambda x, y: torch.sub(x, y, alpha=0.5)), pair[:1]),
        Case("sub_scalar", fn(lambda x: x - 1.5), (((3, 4),),)),
        Case("sub_inplace", fn(lambda x, y: x.clone().sub_(y)), pair[:1]),
        Case("sub_scalar_inplace", fn(_inplace("sub_", 2)), (((3, 4),),)),
        Case("rsub", fn(lambda x, y: torch.rsub(x, y, alpha=2)), pair),
        Case("rsub_scalar", fn(lambda x: 2 - x), (((3, 4),), (ints(3, 4),))),
        Case("mul", fn(torch.mul), pair + int_pair),
        Case("mul_bool", fn(torch.mul), ((bools(3, 4), bools(3, 4)),)),
        Case("mul_scalar", fn(lambda x: x * 0.5), (((3, 4),), (ints(3, 4),))),
        Case("mul_inplace", fn(lambda x, y: x.clone().mul_(y)), pair[:1]),
        Case("mul_scalar_inplace", fn(_inplace("mul_", 3.0)), (((3, 4),),)),
        Case("div", fn(lambda x, y: x / y), (((2, 3, 4), nonzero(4)), (ints(3, 4), ints(3, 4, low=1, high=4)))),
        Case("div_scalar", fn(lambda x: x / 4), (((3, 4),), (ints(3, 4),))),
        Case("div_floor", fn(lambda x, y: torch.div(x, y, rounding_mode="floor")),
             (((3, 4), nonzero(3, 4)), (ints(3, 4), ints(3, 4, low=1, high=4)))),
        Case("div_trunc", fn(lambda x, y: torch.div(x, y, rounding_mode="trunc")), ((ints(3, 4), ints(3, 4, low=1, high=4)),)),
        Case("div_trunc_float", fn(lambda x, y: torch.div(x, y, rounding_mode="trunc")),
             (((3, 4), nonzero(3, 4)), ((2, 3), lambda: torch.tensor([[1.0, -1.0, 0.5], [-0.25, 3.0, -7.0]])))),
        Case("div_scalar_mode", fn(lambda x: torch.div(x, 3, rounding_mode="floor")), (((3, 4),), (ints(3, 4),))),
        Case("div_inplace", fn(lambda x, y: x.clone().div_(y)), (((3, 4), nonzero(3, 4)),)),
        Case("div_scalar_inplace", fn(_inplace("div_", 4.0)), (((3, 4),),)),
        Case("div_mode_inplace", fn(lambda x, y: x.clone().div_(y, rounding_mode="floor")), (((3, 4), nonzero(3, 4)),)),
        Case("div_scalar_mode_inplace", fn(lambda x: x.clone().div_(2.0, rounding_mode="floor")), (((3, 4),),)),
        Case("floor_divide", fn(torch.floor_divide), ((ints(3, 4), ints(3, 4, low=1, high=4)), ((3, 4), nonzero(3, 4)))),
        Case("floor_divide_scalar", fn(lambda x: torch.floor_divide(x, 3)), ((ints(3, 4),),)),
        Case("pow", fn(torch.pow), ((positive(3, 4), (3, 4)),)),
        Case("pow_scalar_exponent", fn(lambda x: x**2), (((3, 4),), (ints(3, 4),))),
        Case("pow_scalar_base", fn(lambda x: torch.pow(2.0, x)), (((3, 4),),)),
        Case("maximum", fn(torch.maximum), pair + int_pair),
        Case("minimum", fn(torch.minimum), pair + int_pair),
        *[
            Case(f"compare_{name}", fn(op), pair + int_pair + (((3, 4), ints(3, 4)),))
            for name, op in [("eq", torch.eq), ("ne", torch.ne), ("lt", torch.lt), ("le", torch.le),
                             ("gt", torch.gt), ("ge", torch.ge)]
        ],
        *[
            Case(f"compare_{name}_scalar", fn(lambda x, op=op: op(x, 0.25)), (((3, 4),), (ints(3, 4),)))
            for name, op in [("eq", torch.eq), ("ne", torch.ne), ("lt", torch.lt), ("le", torch.le),
                             ("gt", torch.gt), ("ge", torch.ge)]
        ],
        Case("compare_eq_exact", fn(lambda x: torch.eq(x, 1)), ((ints(3, 4, low=0, high=3),),)),
        Case("bitwise_tensor_scripted", layer(BitwiseTensor), ((bools(3, 4), bools(3, 4)), (ints(3, 4), ints(4)))),
        Case("bitwise_scalar_scripted", layer(BitwiseScalar), ((ints(3, 4, low=-9, high=9),),)),
        Case("bitwise_scalar_overloads",
             fn(lambda x: aten.bitwise_xor.Scalar(aten.bitwise_or.Scalar(aten.bitwise_and.Scalar(x, 6), 1), 3)),
             ((ints(3, 4, low=-9, high=9),),)),
        *[
            Case(f"bitwise_{name}", fn(op), ((ints(3, 4, dtype=torch.int32), ints(3, 4, dtype=torch.int32)),))
            for name, op in [("and", torch.bitwise_and), ("or", torch.bitwise_or), ("xor", torch.bitwise_xor)]
        ],
        *[
            Case(f"logical_{name}", fn(op), ((bools(3, 4), bools(3, 4)), ((3, 4), bools(4,))))
            for name, op in [("and", torch.logical_and), ("or", torch.logical_or), ("xor", torch.logical_xor)]
        ],
    ]


def _unary_cases() -> list[Case]:
    cases = []
    for name, spec in [
        ("exp", (3, 4)), ("log", positive(3, 4)), ("sqrt", positive(3, 4)), ("rsqrt", positive(3, 4)),
        ("reciprocal", nonzero(3, 4)), ("sin", (3, 4)), ("cos", (3, 4)), ("tan", (3, 4)), ("erf", (3, 4)),
        ("abs", (3, 4)), ("neg", (3, 4)), ("sign", (3, 4)), ("floor", (3, 4)), ("ceil", (3, 4)),
        ("round", (3, 4)), ("square", (3, 4)),
    ]:
        cases.append(Case(name, fn(getattr(torch, name)), ((spec,), (ints(2, 5),))))
    for name in ["exp_", "log_", "sqrt_", "rsqrt_", "reciprocal_", "abs_", "neg_"]:
        cases.append(Case(f"{name}_inplace", fn(_inplace(name)), ((positive(3, 4),),)))
    cases += [
        Case("round_half_even", fn(torch.round), ((lambda: torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 2.4]),),)),
        Case("logical_not", fn(torch.logical_not), ((bools(3, 4),), ((3, 4),), (ints(3, 4, low=0, high=2),))),
        Case("bitwise_not", fn(torch.bitwise_not), ((bools(3, 4),),)),
        Case("bitwise_not_int", fn(torch.bitwise_not), ((ints(3, 4),),),
             xfail={f: "Kiln has no bitwise layer: aten::bitwise_not converts for bool tensors only" for f in FRONT_ENDS}),
    ]
    return cases


def _cast_cases() -> list[Case]:
    return [
        Case("to_dtype", fn(lambda x: x.to(torch.int32)), (((3, 4),),)),
        Case("to_float", fn(lambda x: x.float() * 0.5), ((ints(3, 4),), (bools(3, 4),))),
        Case("to_bool", fn(lambda x: x.bool()), (((3, 4),), (ints(3, 4, low=0, high=2),))),
        Case("to_long", fn(lambda x: x.long()), ((lambda: torch.randn(3, 4) * 5,),)),
        Case("to_dtype_layout", fn(lambda x: x.to(dtype=torch.int64, device="cpu")), (((3, 4),),)),
        Case("to_device_dtype", fn(lambda x: x.to("cpu", torch.int64)), (((3, 4),),)),
        Case("to_device", layer(ToDevice), (((3, 4),),)),
        Case("to_other", layer(ToOther), (((3, 4), ints(2)),)),
        Case("type_as", fn(lambda x, y: x.type_as(y) + y), ((ints(3, 4), (3, 4)),)),
    ]


def _noop_cases() -> list[Case]:
    x = (((2, 3, 4),),)
    return [
        Case("dropout", layer(lambda: nn.Sequential(nn.Dropout(0.3), nn.ReLU())), x),
        Case("dropout_inplace", fn(lambda x: F.dropout(x.clone(), 0.3, training=False, inplace=True)), x),
        Case("feature_dropout", layer(lambda: nn.Sequential(nn.Dropout2d(0.3), nn.ReLU())), (((2, 3, 4, 4),),)),
        Case("contiguous", fn(lambda x: x.transpose(0, 1).contiguous()), x),
        Case("clone", fn(lambda x: x.clone() + 1), x),
        Case("detach", fn(lambda x: x.detach() * 2), x),
        Case("lift_fresh_copy", fn(lambda x: torch.ops.aten.lift_fresh_copy(x) + 1), x),
        Case("alias", fn(lambda x: torch.ops.aten.alias(x) * 2), x),
    ]


def _shape_cases() -> list[Case]:
    x = (((2, 3, 4),),)
    return [
        Case("view", fn(lambda x: x.view(6, 4) + 1), x),
        Case("view_infer", fn(lambda x: x.view(-1, 2)), x),
        Case("reshape", fn(lambda x: x.reshape(4, -1)), x),
        Case("reshape_dynamic", fn(lambda x: x.reshape(x.shape[0], -1)),
             dynamic=B((kiln.Input(min_shape=(1, 3, 4), opt_shape=(2, 3, 4), max_shape=(5, 3, 4)),), (((1, 3, 4),), ((5, 3, 4),)))),
        Case("flatten", layer(lambda: nn.Flatten()), x + (((2, 3, 4, 5),),)),
        Case("flatten_range", fn(lambda x: torch.flatten(x, 0, 1)), x),
        Case("permute", fn(lambda x: x.permute(2, 0, 1)), x),
        Case("transpose", fn(lambda x: x.transpose(-1, 0)), x),
        Case("t", fn(lambda x: x.t()), (((3, 4),), ((5,),))),
        Case("unsqueeze", fn(lambda x: x.unsqueeze(1)), x),
        Case("unsqueeze_last", fn(lambda x: x.unsqueeze(-1)), x),
        Case("squeeze", fn(lambda x: x.squeeze()), (((2, 1, 4, 1),),)),
        Case("squeeze_dim", fn(lambda x: x.squeeze(1)), (((2, 1, 4),),)),
        Case("squeeze_dims", fn(lambda x: x.squeeze((1, 3))), (((2, 1, 4, 1),),)),
        Case("expand", fn(lambda x: x.expand(3, 2, 4)), (((2, 1),), ((1, 4),))),
        Case("expand_keep", fn(lambda x: x.expand(-1, 5)), (((3, 1),),)),
        Case("expand_as", fn(lambda x, y: x.expand_as(y)), (((3, 1), (2, 3, 4)),)),
        Case("cat", fn(lambda x, y: torch.cat([x, y], dim=1)), (((2, 3), (2, 5)),)),
        Case("cat_negative_dim", fn(lambda x, y, z: torch.cat((x, y, z), -1)), (((2, 3, 1), (2, 3, 2), (2, 3, 3)),)),
        # torch skips empty 1-D tensors in a cat of another rank, as caches that start empty do.
        Case("cat_skips_empty_vectors", fn(lambda x: torch.cat([torch.zeros(0), x * 2, torch.zeros(0)], dim=1)),
             (((2, 3),),)),
        Case("concat", fn(lambda x, y: torch.concat([x, y])), (((2, 3), (1, 3)),)),
        Case("split", fn(lambda x: x.split(2, dim=1)), (((2, 5, 3),),)),
        Case("split_sizes", fn(lambda x: x.split([1, 4], dim=1)), (((2, 5, 3),),)),
        Case("split_sizes_scripted", layer(SplitSizes), (((2, 5, 3),),)),
        Case("_unsafe_view", fn(lambda x: torch.ops.aten._unsafe_view(x * 2, [6, 4])), (((2, 3, 4),),)),
        Case("split_with_sizes", fn(lambda x: torch.split_with_sizes(x, [2, 1], -1)), (((2, 5, 3),),)),
        Case("chunk", fn(lambda x: x.chunk(3, 0)), (((7, 2),),)),
        Case("unbind", fn(lambda x: x.unbind(1)), (((2, 3, 4),),)),
        Case("narrow", fn(lambda x: x.narrow(2, 1, 2)), x),
        Case("pad_constant", fn(lambda x: F.pad(x, (1, 2, 0, 3), value=-1.5)), x),
        Case("pad_constant_negative_crops", fn(lambda x: F.pad(x, (-1, 2, 1, -2))), x),
        Case("pad_reflect_2d", fn(lambda x: F.pad(x, (1, 2, 3, 1), mode="reflect")), (((1, 2, 5, 6),),)),
        Case("pad_replicate_3d", fn(lambda x: F.pad(x, (1, 1, 0, 2, 2, 0), mode="replicate")), (((1, 2, 3, 4, 5),),)),
        Case("pad_circular", fn(lambda x: F.pad(x, (2, 1, 1, 3), mode="circular")), (((1, 2, 5, 6),),)),
        # The aten ops that F.pad's modes stand for, called directly.
        Case("constant_pad_nd", fn(lambda x: torch.constant_pad_nd(x, (1, 1, 2, -1), 0.5)), x),
        Case("reflection_pad1d", fn(lambda x: torch.ops.aten.reflection_pad1d(x, [2, 3])), (((2, 3, 6),),)),
        Case("reflection_pad2d", fn(lambda x: torch.ops.aten.reflection_pad2d(x, [1, 2, 3, 1])), (((1, 2, 5, 6),),)),
        Case("reflection_pad3d", fn(lambda x: torch.ops.aten.reflection_pad3d(x, [1, 0, 0, 2, 1, 1])), (((1, 2, 3, 4, 5),),)),
        Case("replication_pad1d", fn(lambda x: torch.ops.aten.replication_pad1d(x, [2, 1])), (((2, 3, 6),),)),
        Case("replication_pad2d", fn(lambda x: torch.ops.aten.replication_pad2d(x, [3, 0, 1, 2])), (((1, 2, 5, 6),),)),
        Case("replication_pad3d", fn(lambda x: torch.ops.aten.replication_pad3d(x, [1, 1, 0, 2, 2, 0])), (((1, 2, 3, 4, 5),),)),
    ]


def _indexing_cases() -> list[Case]:
    x = (((4, 5, 6),),)
    return [
        Case("select", fn(lambda x: x[:, 2]), x),
        Case("select_negative", fn(lambda x: x[-1]), x),
        Case("slice", fn(lambda x: x[1:3, :, ::2]), x),
        Case("slice_negative", fn(lambda x: x[:, -3:-1]), x),
        Case("slice_dynamic", fn(lambda x: x[:, 1:]),
             dynamic=B((kiln.Input(min_shape=(1, 4), opt_shape=(2, 5), max_shape=(4, 8)),), (((1, 4),), ((4, 8),)))),
        Case("index_select", fn(lambda x, i: torch.index_select(x, 1, i)), (((3, 5), ints(4, low=0, high=5)),)),
        Case("embedding", layer(lambda: nn.Embedding(10, 4)), ((ints(2, 3, low=0, high=10),), (ints(5, low=0, high=10),))),
        Case("embedding_functional", fn(lambda i, w: F.embedding(i, w)), ((ints(3, low=0, high=4), (4, 3)),)),
        Case("gather", fn(lambda x, i: torch.gather(x, 1, i)),
             (((3, 5), ints(3, 7, low=0, high=5)), ((2, 4, 3), ints(2, 1, 3, low=0, high=4)))),
        # An index smaller than the input off the gather dim reads the input's leading corner.
        Case("gather_smaller_index", fn(lambda x, i: torch.gather(x, 0, i)),
             (((4, 5, 6), ints(2, 3, 6, low=0, high=4)),)),
        Case("where", fn(lambda c, x, y: torch.where(c, x, y)), ((bools(3, 4), (3, 4), (3, 4)), (bools(2, 1, 4), (3, 1), (4,)))),
        # The unselected operand's infinities and NaNs do not reach the output.
        Case("where_unselected_inf_nan", fn(lambda x: torch.where(x > 0, x, torch.log(x))), (((4, 5),),)),
        Case("where_scalars", fn(lambda c, x: torch.where(c, x, -1.5) + torch.where(~c, 2.0, x)), ((bools(3, 4), (3, 4)),)),
        Case("where_both_scalars", fn(lambda c, x: x + torch.where(c, 1.0, -1.0)), ((bools(3, 4), (3, 4)),)),
        Case("masked_fill_in_place", fn(lambda x, m: (x * 2).masked_fill_(m, -3.0)), (((2, 5), bools(2, 5)),)),
        Case("where_int_promotes", fn(lambda c, x, i: torch.where(c, x, i)), ((bools(3, 4), (3, 4), ints(3, 4)),)),
        Case("masked_fill", fn(lambda x, m: x.masked_fill(m, float("-inf")).softmax(-1)), (((2, 3, 5), bools(2, 1, 5)),)),
        Case("masked_fill_tensor", fn(lambda x, m: x.masked_fill(m, torch.tensor(0.5))), (((2, 5), bools(2, 5)),)),
        Case("gather_negative_dim", fn(lambda x, i: x.gather(-1, i)), (((2, 6), ints(2, 9, low=0, high=6)),)),
    ]


def _special_value_cases() -> list[Case]:
    samples = ((special(3, 7),), (special(2, 5, 4, dtype=torch.float16),), (special(9, dtype=torch.bfloat16),))
    return [
        Case(name, fn(f), samples)
        for name, f in (("isinf", torch.isinf), ("isposinf", torch.isposinf), ("isneginf", torch.isneginf),
                        ("isnan", torch.isnan), ("isfinite", torch.isfinite))
    ] + [
        # T5 in float16: clamp only when an inf appeared.
        Case("isinf_any_where", fn(lambda x: torch.where(torch.isinf(x).any(), torch.isnan(x).float(), x * 2)),
             ((special(4, 6),), ((4, 6),))),
    ]


def nonzero_ints(*shape: int, high: int = 4, dtype: torch.dtype = torch.int64) -> Callable[[], torch.Tensor]:
    """Integers in [-high, high) without zero (divisors)."""
    def sample() -> torch.Tensor:
        magnitude = torch.randint(1, high + 1, shape, dtype=dtype)
        return torch.where(torch.rand(shape) > 0.5, magnitude, -magnitude)

    return sample


def scaled(scale: float, *shape: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(shape) * scale


_INDEX_TABLE = torch.randn(7, 3)


def _advanced_indexing_cases() -> list[Case]:
    """index.Tensor (integer tensor indices), slice_scatter, select_scatter and the functional
    copy."""
    return [
        Case("index_one_tensor", fn(lambda x, i: x[i]),
             (((4, 5, 6), ints(3, low=-4, high=4)), ((4, 5), ints(2, 3, low=-4, high=4)), (ints(6, 2), ints(5, low=0, high=6)))),
        Case("index_middle_dim", fn(lambda x, i: x[:, i]), (((4, 5, 6), ints(2, 2, low=-5, high=5)),)),
        Case("index_int32", fn(lambda x, i: x[:, :, i]), (((2, 3, 5), ints(4, low=-5, high=5, dtype=torch.int32)),)),
        # A rank-0 index tensor removes the dim (x[:, i] with a 0-dim i would be a select).
        Case("index_scalar_index", fn(lambda x, i: torch.ops.aten.index.Tensor(x, [None, i])), (((3, 5), ints(low=-5, high=5)),)),
        # Adjacent index tensors broadcast together in place of the dims they index.
        Case("index_adjacent", fn(lambda x, i, j: x[:, i, j]),
             (((2, 4, 5, 3), ints(3, low=-4, high=4), ints(3, low=-5, high=5)),
              ((2, 4, 5), ints(3, 1, low=0, high=4), ints(2, low=-5, high=5)))),
        # Separated by a full slice: the broadcast dims come first.
        Case("index_separated", fn(lambda x, i, j: x[i, :, j]),
             (((4, 3, 5), ints(2, low=-4, high=4), ints(2, low=-5, high=5)),)),
        Case("index_three_broadcast", fn(lambda x, i, j, k: x[i, j, k]),
             (((3, 4, 5, 2), ints(2, 1, 1, low=-3, high=3), ints(3, 1, low=0, high=4), ints(4, low=-5, high=5)),)),
        # A constant table read through runtime indices (embedding-like relative position bias).
        Case("index_constant_table", fn(lambda i: _INDEX_TABLE[i].permute(1, 0)), ((ints(4, low=-7, high=7),),)),
        Case("index_bool_mask_refused", fn(lambda x, m: x[m]), (((4, 5), bools(4, 5)),),
             xfail={f: "boolean mask indexing has a data-dependent output shape" for f in FRONT_ENDS}),
        Case("slice_scatter", fn(lambda x, s: torch.slice_scatter(x, s, 1, 1, 4)),
             (((3, 6), (3, 3)), (ints(2, 6, 2), ints(2, 3, 2)))),
        Case("slice_scatter_step", fn(lambda x, s: torch.slice_scatter(x, s, 0, 0, None, 2)), (((5, 4), (3, 4)),)),
        Case("slice_scatter_negative_bounds", fn(lambda x, s: torch.slice_scatter(x, s, -1, -3, -1)), (((2, 3, 5), (2, 3, 2)),)),
        Case("slice_scatter_whole", fn(lambda x, s: torch.slice_scatter(x, s)), (((2, 3), (2, 3)),)),
        Case("slice_scatter_empty", fn(lambda x: torch.slice_scatter(x, torch.zeros(2, 0), 1, 4, 2) * 2), (((2, 5),),)),
        Case("select_scatter", fn(lambda x, s: torch.select_scatter(x, s, 1, -1)), (((3, 4, 5), (3, 5)),)),
        Case("select_scatter_first", fn(lambda x, s: torch.select_scatter(x, s, 0, 0)), (((3, 4), (4,)), (ints(2, 3), ints(3)))),
        # The functional copy: src broadcast to self's shape and converted to its dtype.
        Case("copy", fn(lambda x, s: torch.ops.aten.copy(x, s)), (((3, 4), (4,)), ((2, 3), (1,)), ((3, 4), ints(3, 4)))),
        Case("copy_scalar_src", fn(lambda x: torch.ops.aten.copy(x * 2, torch.tensor(1.5))), (((2, 3),),)),
    ]


def _rearrange_cases() -> list[Case]:
    """flip, roll, repeat, tile, stack, unflatten, tril, triu, pixel_shuffle, pixel_unshuffle."""
    x = (((3, 4, 5),), (ints(2, 6),))
    return [
        Case("flip", fn(lambda x: torch.flip(x, [0, -1])), x),
        Case("flip_one_dim", fn(lambda x: x.flip(1)), (((2, 3, 4),),)),
        Case("roll", fn(lambda x: torch.roll(x, shifts=(1, -2), dims=(0, 2))), (((3, 4, 5),),)),
        Case("roll_large_shift", fn(lambda x: torch.roll(x, 7, 1)), (((2, 5),), (ints(3, 4),))),
        Case("roll_flattened", fn(lambda x: torch.roll(x, -3)), (((3, 4),),)),
        Case("repeat", fn(lambda x: x.repeat(2, 1, 3)), (((2, 3),), (ints(1, 4),))),
        Case("repeat_same_rank", fn(lambda x: x.repeat(1, 2, 2)), (((2, 3, 2),),)),
        Case("tile", fn(lambda x: torch.tile(x, (2,))), (((2, 3),),)),
        Case("tile_more_dims", fn(lambda x: torch.tile(x, (3, 1, 2))), (((2, 3),),)),
        Case("stack", fn(lambda a, b: torch.stack([a, b], 1)), (((2, 3), (2, 3)), (ints(4), ints(4)))),
        Case("stack_last", fn(lambda a, b, c: torch.stack([a, b, c], -1)), (((2, 3), (2, 3), (2, 3)),)),
        Case("unflatten", fn(lambda x: x.unflatten(1, (2, -1))), (((3, 8),), ((2, 6, 5),))),
        Case("unflatten_dynamic_batch", fn(lambda x: x.unflatten(-1, (3, 2))),
             dynamic=B((kiln.Input(min_shape=(1, 6), opt_shape=(2, 6), max_shape=(4, 6)),), (((1, 6),), ((4, 6),)))),
        Case("tril", fn(lambda x: torch.tril(x)), (((4, 5),), ((2, 3, 3),))),
        Case("tril_diagonal", fn(lambda x: torch.tril(x, -1) + torch.tril(x, 2)), (((4, 6),),)),
        # Infinities above the diagonal must not turn into NaN (x * 0 would).
        Case("triu_inf", fn(lambda x: torch.triu(x.log(), 1)), ((positive(5, 5),), (lambda: torch.zeros(3, 4),))),
        Case("triu_int", fn(lambda x: torch.triu(x, -1)), ((ints(4, 4),),)),
        Case("pixel_shuffle", layer(lambda: nn.PixelShuffle(2)), (((1, 8, 3, 4),), ((2, 12, 2, 2),))),
        Case("pixel_unshuffle", layer(lambda: nn.PixelUnshuffle(2)), (((1, 2, 4, 6),), ((2, 3, 2, 2),))),
        Case("pixel_shuffle_dynamic_batch", layer(lambda: nn.PixelShuffle(3)),
             dynamic=B((kiln.Input(min_shape=(1, 9, 2, 2), opt_shape=(2, 9, 2, 2), max_shape=(3, 9, 2, 2)),),
                       (((1, 9, 2, 2),), ((3, 9, 2, 2),)))),
    ]


def _remainder_cases() -> list[Case]:
    """fmod (sign of the dividend) and remainder (sign of the divisor)."""
    float_pair = ((scaled(4, 3, 4), nonzero(3, 4)), (scaled(4, 2, 3, 4), nonzero(4)))
    int_pair = ((ints(3, 4, low=-9, high=10), nonzero_ints(3, 4)), (ints(5, low=-9, high=10, dtype=torch.int32), nonzero_ints(5, dtype=torch.int32)))
    return [
        Case("fmod", fn(torch.fmod), float_pair + int_pair),
        Case("fmod_scalar", fn(lambda x: torch.fmod(x, 1.5) + torch.fmod(x, -0.75)), ((scaled(4, 3, 4),),)),
        Case("fmod_scalar_int", fn(lambda x: torch.fmod(x, 3) * torch.fmod(x, -4)), ((ints(3, 4, low=-9, high=10),),)),
        Case("fmod_int_by_float", fn(lambda x: torch.fmod(x, 2.5)), ((ints(3, 4, low=-9, high=10),),)),
        Case("fmod_inplace", fn(lambda x, y: x.clone().fmod_(y)), float_pair[:1]),
        Case("fmod_scalar_inplace", fn(lambda x: x.clone().fmod_(2)), ((scaled(4, 3, 4),),)),
        Case("fmod_fp16", fn(lambda x: torch.fmod(x, 0.7)), ((lambda: (torch.randn(3, 4) * 4).half(),),), tol=1e-2),
        Case("remainder", fn(torch.remainder), float_pair + int_pair),
        Case("remainder_operator", fn(lambda x: (x % 2.5) - (x % -1.5)), ((scaled(4, 3, 4),), (ints(3, 4, low=-9, high=10),))),
        Case("remainder_scalar_int", fn(lambda x: torch.remainder(x, 3) + torch.remainder(x, -4)), ((ints(4, 5, low=-9, high=10),),)),
        Case("remainder_scalar_tensor", fn(lambda y: torch.remainder(7, y)), ((nonzero(3, 4),), (nonzero_ints(3, 4),))),
        Case("remainder_inplace", fn(lambda x, y: x.clone().remainder_(y)), int_pair[:1]),
        Case("remainder_scalar_inplace", fn(lambda x: x.clone().remainder_(-1.25)), ((scaled(4, 3, 4),),)),
        Case("remainder_bf16", fn(lambda x: torch.remainder(x, 0.9)), ((lambda: (torch.randn(3, 4) * 4).bfloat16(),),), tol=5e-2),
    ]


def _reduced_precision_cases() -> list[Case]:
    """The computing layers in float16 and bfloat16 (the CPU backend computes them through
    float32 and rounds once, as torch's CPU kernels do; the CUDA backend runs them natively)."""
    cases = []
    for dt, tag, tol in ((torch.float16, "fp16", 1e-2), (torch.bfloat16, "bf16", 5e-2)):
        x4, x3 = typed(dt, 2, 3, 8, 8), typed(dt, 2, 5, 8)
        cases += [
            Case(f"conv2d_{tag}", layer(lambda dt=dt: nn.Conv2d(3, 4, 3, padding=1).to(dt)), ((x4,),), tol=tol),
            Case(f"conv2d_patch_embedding_{tag}", layer(lambda dt=dt: nn.Conv2d(3, 16, 4, stride=4).to(dt)), ((x4,),), tol=tol),
            Case(f"conv_transpose2d_{tag}", layer(lambda dt=dt: nn.Sequential(nn.ConvTranspose2d(3, 2, 3, stride=2)).to(dt)), ((x4,),), tol=tol),
            Case(f"batch_norm_{tag}", layer(lambda dt=dt: nn.BatchNorm2d(3).to(dt)), ((x4,),), tol=tol),
            Case(f"layer_norm_{tag}", layer(lambda dt=dt: nn.LayerNorm(8).to(dt)), ((x3,),), tol=tol),
            Case(f"linear_{tag}", layer(lambda dt=dt: nn.Linear(8, 6).to(dt)), ((x3,),), tol=tol),
            Case(f"bmm_{tag}", fn(torch.bmm), ((x3, typed(dt, 2, 8, 4)),), tol=tol),
            Case(f"addmm_{tag}", fn(lambda b, x, y: torch.addmm(b, x, y, beta=0.5, alpha=2.0)),
                 ((typed(dt, 4), typed(dt, 3, 5), typed(dt, 5, 4)),), tol=tol),
            Case(f"softmax_{tag}", fn(lambda x: torch.softmax(x, -1)), ((x3,),), tol=tol),
            Case(f"softmax_{tag}_to_float32", fn(lambda x: torch.softmax(x, -1, dtype=torch.float32)), ((x3,),), tol=tol),
            Case(f"max_pool2d_{tag}", layer(lambda: nn.MaxPool2d(2)), ((x4,),), tol=tol),
            Case(f"adaptive_avg_pool2d_{tag}", layer(lambda: nn.AdaptiveAvgPool2d(1)), ((x4,),), tol=tol),
            Case(f"mean_{tag}", fn(lambda x: x.mean(-1)), ((x3,),), tol=tol),
            Case(f"sdpa_{tag}", fn(lambda q, k, v: F.scaled_dot_product_attention(q, k, v)),
                 ((typed(dt, 1, 2, 5, 8), typed(dt, 1, 2, 6, 8), typed(dt, 1, 2, 6, 8)),), tol=tol),
            Case(f"sdpa_bool_mask_{tag}",
                 fn(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m)),
                 ((typed(dt, 1, 2, 5, 8), typed(dt, 1, 2, 6, 8), typed(dt, 1, 2, 6, 8), bools(5, 6)),), tol=tol),
        ]
    return cases


# Scripted, recompute_scale_factor=True computes the output size as floor(float(size) * scale):
# float arithmetic on sizes, which Kiln's TorchScript import does not evaluate at build time.
_FLOAT_SIZE_ARITHMETIC = "the output size comes from float arithmetic on input sizes"


def _up(**kwargs: Any) -> Callable[[], nn.Module]:
    """nn.Upsample (which TorchScript scripts) with these arguments."""
    return layer(lambda: nn.Upsample(**kwargs))


def _resize_cases() -> list[Case]:
    """F.interpolate's modes through nn.Upsample (scripted) and F.interpolate (traced by ir="ts"):
    up- and downscaling, non-integer scales (whose 1 / scale is the coordinate ratio unless
    recompute_scale_factor), aligned and half-pixel corners, float32 and the 16-bit floats; and
    the plain upsample overloads (output size and per-dim scales) called directly."""
    x1, x2, x3 = (((2, 3, 7),),), (((1, 3, 5, 6),), ((2, 2, 4, 9),)), (((1, 2, 3, 4, 5),),)
    cases = [
        Case("upsample_nearest1d_scale", _up(scale_factor=1.5), x1),
        Case("upsample_nearest1d_size_down", _up(size=4), x1),
        Case("upsample_nearest2d_scale2", _up(scale_factor=2), x2),
        Case("upsample_nearest2d_size", _up(size=(7, 9)), x2),
        Case("upsample_nearest2d_scale_noninteger", _up(scale_factor=(1.7, 0.6)), x2),
        Case("upsample_nearest2d_recompute_scale", _up(scale_factor=1.3, recompute_scale_factor=True), x2,
             xfail={"ts": _FLOAT_SIZE_ARITHMETIC}),
        Case("upsample_nearest3d_size", _up(size=(4, 5, 3)), x3),
        Case("upsample_nearest3d_scale", _up(scale_factor=(2, 1.5, 0.5)), x3),
        Case("upsample_nearest_exact1d", _up(scale_factor=1.6, mode="nearest-exact"), x1),
        Case("upsample_nearest_exact2d_down", _up(size=(3, 4), mode="nearest-exact"), x2),
        Case("upsample_nearest_exact2d_scale", _up(scale_factor=2.5, mode="nearest-exact"), x2),
        Case("upsample_nearest_exact3d", _up(scale_factor=(1.5, 2, 0.8), mode="nearest-exact"), x3),
        Case("upsample_linear1d", _up(scale_factor=2.5, mode="linear"), x1),
        Case("upsample_linear1d_aligned_down", _up(size=4, mode="linear", align_corners=True), x1),
        Case("upsample_bilinear2d_scale2", _up(scale_factor=2, mode="bilinear"), x2),
        Case("upsample_bilinear2d_aligned", _up(size=(7, 9), mode="bilinear", align_corners=True), x2),
        Case("upsample_bilinear2d_down", _up(size=(3, 4), mode="bilinear"), x2),
        Case("upsample_bilinear2d_scale_noninteger", _up(scale_factor=(1.3, 1.7), mode="bilinear"), x2),
        Case("upsample_bilinear2d_aligned_scale_down", _up(scale_factor=0.7, mode="bilinear", align_corners=True), x2),
        Case("upsample_bilinear2d_recompute_scale",
             _up(scale_factor=1.3, mode="bilinear", recompute_scale_factor=True), x2,
             xfail={"ts": _FLOAT_SIZE_ARITHMETIC}),
        Case("upsample_bicubic2d_scale2", _up(scale_factor=2, mode="bicubic"), x2, tol=1e-4),
        Case("upsample_bicubic2d_aligned", _up(size=(7, 9), mode="bicubic", align_corners=True), x2, tol=1e-4),
        Case("upsample_bicubic2d_down", _up(size=(3, 4), mode="bicubic"), x2, tol=1e-4),
        Case("upsample_bicubic2d_scale_noninteger", _up(scale_factor=1.45, mode="bicubic"), x2, tol=1e-4),
        Case("upsample_trilinear3d", _up(scale_factor=2, mode="trilinear"), x3),
        Case("upsample_trilinear3d_aligned", _up(size=(2, 5, 7), mode="trilinear", align_corners=True), x3),
        Case("upsample_trilinear3d_scale_noninteger", _up(scale_factor=(1.5, 0.75, 1.3), mode="trilinear"), x3),
        # The plain overloads, with and without per-dim scales (which set the coordinate ratio).
        Case("upsample_nearest1d_plain", fn(lambda x: aten.upsample_nearest1d(x, [11], 1.6)), x1),
        Case("upsample_nearest2d_plain", fn(lambda x: aten.upsample_nearest2d(x, [7, 9])), x2),
        Case("upsample_nearest3d_plain", fn(lambda x: aten.upsample_nearest3d(x, [4, 5, 3], 1.5, None, 0.7)), x3),
        Case("upsample_nearest_exact1d_plain", fn(lambda x: aten._upsample_nearest_exact1d(x, [12])), x1),
        Case("upsample_nearest_exact2d_plain", fn(lambda x: aten._upsample_nearest_exact2d(x, [9, 8], 1.9, 1.4)), x2),
        Case("upsample_nearest_exact3d_plain", fn(lambda x: aten._upsample_nearest_exact3d(x, [5, 6, 4])), x3),
        Case("upsample_linear1d_plain", fn(lambda x: aten.upsample_linear1d(x, [12], False, 1.75)), x1),
        Case("upsample_bilinear2d_plain", fn(lambda x: aten.upsample_bilinear2d(x, [10, 8], True)), x2),
        Case("upsample_bilinear2d_plain_scales", fn(lambda x: aten.upsample_bilinear2d(x, [9, 10], False, 1.9, 1.6)), x2),
        Case("upsample_trilinear3d_plain", fn(lambda x: aten.upsample_trilinear3d(x, [4, 6, 7], False, None, 1.6, 1.5)), x3),
        Case("upsample_bicubic2d_plain", fn(lambda x: aten.upsample_bicubic2d(x, [8, 7], False, 1.7, 1.2)), x2, tol=1e-4),
    ]
    for dt, tag, tol in ((torch.float16, "fp16", 1e-2), (torch.bfloat16, "bf16", 5e-2)):
        x = ((typed(dt, 2, 3, 5, 6),),)
        cases += [
            Case(f"upsample_nearest2d_{tag}", _up(scale_factor=1.5), x, tol=tol),
            Case(f"upsample_bilinear2d_{tag}", _up(scale_factor=2, mode="bilinear"), x, tol=tol),
            Case(f"upsample_bilinear2d_aligned_{tag}", _up(size=(4, 9), mode="bilinear", align_corners=True), x, tol=tol),
            Case(f"upsample_bicubic2d_{tag}", _up(size=(8, 7), mode="bicubic"), x, tol=tol),
        ]
    return cases


def _cumulative_cases() -> list[Case]:
    """cumsum / cumprod along several axes, integers (promoted to int64 as torch does), the
    dtype argument, the 16-bit floats and the in-place forms."""
    x = (((3, 5, 4),), ((2, 7, 1),))
    return [
        Case("cumsum_dim1", fn(lambda x: torch.cumsum(x, 1)), x),
        Case("cumsum_dim0", fn(lambda x: torch.cumsum(x, 0)), x),
        Case("cumsum_negative_dim", fn(lambda x: x.cumsum(-1)), x),
        Case("cumsum_long_row", fn(lambda x: x.cumsum(1)), (((2, 3000),),), tol=1e-4),
        Case("cumsum_rank1", fn(lambda x: x.cumsum(0)), (((9,),),)),
        Case("cumsum_int64", fn(lambda x: x.cumsum(1)), ((ints(3, 6),),)),
        Case("cumsum_int32_promotes_to_int64", fn(lambda x: x.cumsum(0)), ((ints(5, 3, dtype=torch.int32),),)),
        Case("cumsum_bool_promotes_to_int64", fn(lambda x: x.cumsum(-1)), ((bools(4, 6),),)),
        Case("cumsum_dtype_int32", fn(lambda x: x.cumsum(1, dtype=torch.int32)), ((ints(3, 6),),)),
        Case("cumsum_dtype_float", fn(lambda x: torch.cumsum(x, 1, dtype=torch.float32)), ((ints(3, 6),),)),
        Case("cumsum_fp16", fn(lambda x: x.cumsum(1)), ((typed(torch.float16, 3, 40),),), tol=1e-2),
        Case("cumsum_bf16", fn(lambda x: x.cumsum(0)), ((typed(torch.bfloat16, 6, 5),),), tol=5e-2),
        Case("cumprod_dim1", fn(lambda x: torch.cumprod(x, 1)), ((positive(3, 5, 4),),), tol=1e-4),
        Case("cumprod_negative_dim", fn(lambda x: x.cumprod(-3)), ((positive(3, 5, 4),),), tol=1e-4),
        Case("cumprod_int", fn(lambda x: x.cumprod(1)), ((ints(3, 6, low=-3, high=4),),)),
        Case("cumprod_dtype_float", fn(lambda x: x.cumprod(0, dtype=torch.float32)), ((ints(4, 3, low=-3, high=4),),)),
        Case("cumsum_inplace", fn(_inplace("cumsum_", 1)), x),
        Case("cumprod_inplace", fn(_inplace("cumprod_", 0)), ((positive(4, 3),),), tol=1e-4),
    ]


def with_values(values: dict[tuple[int, ...], float], *shape: int) -> Callable[[], torch.Tensor]:
    """randn with the listed elements set (infinities, NaNs, ties)."""

    def build() -> torch.Tensor:
        x = torch.randn(shape)
        for index, value in values.items():
            x[index] = value
        return x

    return build


def _normalization_cases() -> list[Case]:
    """Group, instance and RMS norm, and batch norm with batch statistics: TorchScript keeps
    aten::group_norm / instance_norm / batch_norm / rms_norm; torch.export writes
    native_group_norm, _native_batch_norm_legit.no_stats (instance norm, and batch norm without
    running statistics) and decomposes rms_norm."""
    # Scripted instance norm checks the input's rank in control flow: traced, it is one op.
    cases = [
        Case("group_norm", layer(lambda: nn.GroupNorm(2, 4)), (((2, 4, 3, 3),), ((1, 4, 5),), ((3, 4),))),
        Case("group_norm_one_group", layer(lambda: nn.GroupNorm(1, 6, eps=1e-3)), (((2, 6, 4, 2),),)),
        Case("group_norm_per_channel_no_affine", layer(lambda: nn.GroupNorm(6, 6, affine=False)), (((2, 6, 5),),)),
        Case("group_norm_3d", layer(lambda: nn.GroupNorm(3, 6)), (((1, 6, 2, 3, 4),),)),
        Case("group_norm_dynamic", layer(lambda: nn.GroupNorm(2, 4)),
             dynamic=B((kiln.Input(min_shape=(1, 4, 3, 3), opt_shape=(2, 4, 3, 3), max_shape=(4, 4, 3, 3)),),
                       (((1, 4, 3, 3),), ((4, 4, 3, 3),)))),
        Case("group_norm_dynamic_spatial", layer(lambda: nn.GroupNorm(2, 4)),
             dynamic=B((kiln.Input(min_shape=(2, 4, 2), opt_shape=(2, 4, 5), max_shape=(2, 4, 9)),),
                       (((2, 4, 2),), ((2, 4, 9),)))),
        Case("instance_norm2d", layer(lambda: Traced(nn.InstanceNorm2d(4))), (((2, 4, 3, 5),), ((1, 4, 1, 7),))),
        Case("instance_norm1d_affine", layer(lambda: Traced(nn.InstanceNorm1d(3, affine=True, eps=1e-3))), (((2, 3, 7),),)),
        Case("instance_norm3d_affine", layer(lambda: Traced(nn.InstanceNorm3d(2, affine=True))), (((2, 2, 3, 2, 4),),)),
        Case("instance_norm_dynamic", layer(lambda: Traced(nn.InstanceNorm2d(3, affine=True))),
             dynamic=B((kiln.Input(min_shape=(1, 3, 4, 4), opt_shape=(2, 3, 4, 4), max_shape=(3, 3, 4, 4)),),
                       (((1, 3, 4, 4),), ((3, 3, 4, 4),)))),
        # Eval with tracked statistics: batch norm with them.
        Case("instance_norm_running_stats", layer(lambda: Traced(nn.InstanceNorm2d(4, affine=True, track_running_stats=True))),
             (((2, 4, 3, 3),),)),
        Case("batch_norm_batch_statistics", layer(lambda: nn.BatchNorm2d(3, track_running_stats=False)),
             (((4, 3, 2, 5),), ((2, 3, 1, 1),))),
        Case("batch_norm1d_batch_statistics", layer(lambda: nn.BatchNorm1d(5, affine=False, track_running_stats=False)),
             (((6, 5),), ((2, 5, 3),))),
        # Called directly: Kiln keeps aten::group_norm whole in both front ends.
        Case("native_group_norm", fn(lambda x, w, b: torch.ops.aten.native_group_norm(x, w, b, 2, 6, 12, 3, 1e-5)[0]),
             (((2, 6, 3, 4), (6,), (6,)),)),
        Case("native_group_norm_no_affine", fn(lambda x: torch.ops.aten.native_group_norm(x, None, None, 3, 4, 5, 2, 1e-3)[0]),
             (((3, 4, 5),),)),
        Case("rms_norm", layer(lambda: nn.RMSNorm(8)), (((2, 8),), ((2, 3, 8),))),
        Case("rms_norm_2d_eps", layer(lambda: nn.RMSNorm((3, 4), eps=1e-3)), (((2, 3, 4),), ((3, 4),))),
        Case("rms_norm_no_affine", layer(lambda: nn.RMSNorm(6, elementwise_affine=False)), (((4, 6),),)),
        # eps None: float32's epsilon, which dominates for tiny inputs.
        Case("rms_norm_default_eps_tiny", fn(lambda x: F.rms_norm(x * 1e-4, [5])), (((3, 5),),)),
        Case("rms_norm_weight_fn", fn(lambda x, w: F.rms_norm(x, [4], w, 1e-5)), (((2, 3, 4), (4,)),)),
        Case("rms_norm_dynamic", layer(lambda: nn.RMSNorm(8)),
             dynamic=B((kiln.Input(min_shape=(1, 8), opt_shape=(4, 8), max_shape=(9, 8)),), (((1, 8),), ((9, 8),)))),
    ]
    for dt, tag, tol in ((torch.float16, "fp16", 1e-2), (torch.bfloat16, "bf16", 5e-2)):
        cases += [
            Case(f"group_norm_{tag}", layer(lambda dt=dt: nn.GroupNorm(2, 4).to(dt)), ((typed(dt, 2, 4, 3, 3),),), tol=tol),
            Case(f"instance_norm_{tag}", layer(lambda dt=dt: Traced(nn.InstanceNorm2d(4, affine=True).to(dt))),
                 ((typed(dt, 2, 4, 3, 3),),), tol=tol),
            Case(f"rms_norm_{tag}", layer(lambda dt=dt: nn.RMSNorm(8).to(dt)), ((typed(dt, 2, 3, 8),),), tol=tol),
            Case(f"rms_norm_{tag}_default_eps_tiny", fn(lambda x: F.rms_norm(x * 1e-3, [8])),
                 ((typed(dt, 2, 8),),), tol=tol),
        ]
    return cases


def _moment_cases() -> list[Case]:
    """var/std (unbiased, correction, dims, keepdim), var_mean/std_mean, logsumexp, vector norms,
    argmax/argmin."""
    x = (((2, 3, 4),),)
    inf, nan = float("inf"), float("nan")
    cases = [
        Case("var_dim", fn(lambda x: x.var(1)), (((2, 3, 4),), ((5, 6),))),
        Case("var_dims_keepdim_negative", fn(lambda x: x.var((0, -1), keepdim=True)), x),
        Case("var_biased", fn(lambda x: x.var(-1, unbiased=False)), x),
        Case("var_all", fn(lambda x: x.var()), x),
        Case("var_empty_dims_is_all", fn(lambda x: x.var(dim=[])), x),
        Case("var_correction", fn(lambda x: torch.var(x, dim=1, correction=2)), x),
        Case("var_correction_float", fn(lambda x: torch.var(x, dim=(0, 2), correction=0.5, keepdim=True)), x),
        # One element with correction 1: 0/0 = NaN, as torch.
        Case("var_single_element", fn(lambda x: x.var(1)), (((3, 1),),)),
        Case("std_dim", fn(lambda x: x.std(-1)), x),
        Case("std_correction_keepdim", fn(lambda x: x.std(1, correction=0, keepdim=True)), x),
        Case("std_all", fn(lambda x: x.std()), x),
        Case("std_biased_all", fn(lambda x: torch.std(x, unbiased=False)), x),
        Case("var_mean", fn(lambda x: torch.var_mean(x, 1)), x),
        Case("var_mean_correction_keepdim", fn(lambda x: torch.var_mean(x, (0, 2), correction=0, keepdim=True)), x),
        Case("var_mean_all", fn(lambda x: torch.var_mean(x)), x),
        Case("std_mean", fn(lambda x: torch.std_mean(x, -1)), x),
        Case("std_mean_all_biased", fn(lambda x: torch.std_mean(x, unbiased=False)), x),
        # The overloads the front ends reach only when called directly.
        Case("var_unbiased_overload", fn(lambda x: torch.ops.aten.var.default(x, False)), x),
        Case("var_mean_unbiased_overload", fn(lambda x: torch.ops.aten.var_mean.default(x, True)), x),
        Case("std_mean_correction_overload",
             fn(lambda x: torch.ops.aten.std_mean.correction(x, [1], correction=2, keepdim=True)), x),
        Case("var_large_offset", fn(lambda x: (x + 1000.0).var(-1)), (((4, 64),),), tol=1e-3),
        Case("var_dynamic_batch", fn(lambda x: x.var(-1)),
             dynamic=B((kiln.Input(min_shape=(1, 6), opt_shape=(3, 6), max_shape=(5, 6)),), (((1, 6),), ((5, 6),)))),
        Case("logsumexp", fn(lambda x: torch.logsumexp(x, 1)), (((2, 3, 4),), ((5, 7),))),
        Case("logsumexp_dims_keepdim", fn(lambda x: torch.logsumexp(x, (0, -1), keepdim=True)), x),
        Case("logsumexp_large", fn(lambda x: torch.logsumexp(x * 100.0, -1)), x, tol=1e-4),
        # Rows of -inf (result -inf), with +inf (result +inf) and with NaN.
        Case("logsumexp_infinities", fn(lambda x: torch.logsumexp(x, -1)),
             ((with_values({(0,): -inf, (1, 2): inf, (2, 0): nan, (3, 1): -inf}, 4, 3),),)),
        Case("logsumexp_int", fn(lambda x: torch.logsumexp(x, 0)), ((ints(3, 4),),)),
        Case("vector_norm", fn(lambda x: x.norm(dim=1)), (((2, 3, 4),), ((5, 6),))),
        Case("vector_norm_all", fn(lambda x: torch.linalg.vector_norm(x)), x),
        Case("vector_norm_l1_keepdim", fn(lambda x: torch.linalg.vector_norm(x, 1, dim=-1, keepdim=True)), x),
        Case("vector_norm_inf", fn(lambda x: torch.linalg.vector_norm(x, float("inf"), dim=(0, 2))), x),
        Case("vector_norm_neg_inf", fn(lambda x: torch.linalg.vector_norm(x, float("-inf"), dim=1)), x),
        Case("vector_norm_zero", fn(lambda x: torch.linalg.vector_norm(x, 0, dim=1)),
             ((with_values({(0, 1): 0.0, (1, 2): 0.0, (1, 3): 0.0}, 2, 4),),)),
        Case("vector_norm_p3", fn(lambda x: torch.linalg.vector_norm(x, 3.0, dim=-1)), x),
        Case("vector_norm_dtype", fn(lambda x: torch.linalg.vector_norm(x, dim=-1, dtype=torch.float32)),
             ((typed(torch.float16, 3, 5),),)),
        Case("norm_scalar", fn(lambda x: torch.ops.aten.norm.Scalar(x, 1)), x),
        Case("norm_scalar_opt_dim", fn(lambda x: torch.ops.aten.norm.ScalarOpt_dim(x, 3, [1], True)), x),
        Case("norm_scalar_opt_dim_none_p", fn(lambda x: torch.ops.aten.norm.ScalarOpt_dim(x, None, [-1])), x),
        Case("argmax", fn(lambda x: x.argmax(1)), (((2, 3, 4),), ((5, 7),))),
        Case("argmin_keepdim_negative", fn(lambda x: x.argmin(-1, keepdim=True)), x),
        Case("argmax_all", fn(lambda x: x.argmax()), x),
        Case("argmin_all_keepdim", fn(lambda x: torch.argmin(x, keepdim=True)), x),
        # Ties: the first index of the extreme.
        Case("argmax_ties_int", fn(lambda x: x.argmax(1)), ((ints(4, 9, low=0, high=3),),)),
        Case("argmin_ties_int32", fn(lambda x: x.argmin(0)), ((ints(9, 4, low=0, high=3, dtype=torch.int32),),)),
        # NaN: torch returns the index of the first NaN (and +-inf are ordinary extremes).
        Case("argmax_nan", fn(lambda x: x.argmax(-1)),
             ((with_values({(0, 2): nan, (0, 4): nan, (1, 1): inf, (2, 3): nan, (2, 0): inf}, 3, 5),),)),
        Case("argmin_nan", fn(lambda x: x.argmin(-1)),
             ((with_values({(0, 3): nan, (1, 1): -inf, (1, 4): -inf, (2, 4): nan}, 3, 5),),)),
        Case("argmax_dynamic_batch", fn(lambda x: x.argmax(-1)),
             dynamic=B((kiln.Input(min_shape=(1, 6), opt_shape=(3, 6), max_shape=(5, 6)),), (((1, 6),), ((5, 6),)))),
    ]
    for dt, tag, tol in ((torch.float16, "fp16", 1e-2), (torch.bfloat16, "bf16", 5e-2)):
        cases += [
            Case(f"var_{tag}", fn(lambda x: x.var(-1)), ((typed(dt, 2, 3, 8),),), tol=tol),
            Case(f"std_mean_{tag}", fn(lambda x: torch.std_mean(x, 1)), ((typed(dt, 2, 3, 8),),), tol=tol),
            Case(f"logsumexp_{tag}", fn(lambda x: torch.logsumexp(x, -1)), ((typed(dt, 2, 3, 8),),), tol=tol),
            Case(f"vector_norm_{tag}", fn(lambda x: torch.linalg.vector_norm(x, dim=-1)), ((typed(dt, 2, 3, 8),),), tol=tol),
            Case(f"argmax_{tag}", fn(lambda x: x.argmax(-1)), ((typed(dt, 2, 3, 8),),)),
        ]
    return cases


def einsum(equation: str) -> Callable[[], Any]:
    return fn(lambda *xs: torch.einsum(equation, *xs))


def _product_cases() -> list[Case]:
    """baddbmm, addbmm, mv, addmv, dot, outer/ger and einsum. torch.export decomposes all but
    einsum's general forms into bmm/mul/sum; TorchScript keeps them whole."""
    cases = [
        Case("baddbmm", fn(lambda c, a, b: torch.baddbmm(c, a, b)),
             (((2, 3, 5), (2, 3, 4), (2, 4, 5)), ((5,), (3, 2, 4), (3, 4, 5))), tol=1e-4),
        Case("baddbmm_beta_alpha", fn(lambda c, a, b: torch.baddbmm(c, a, b, beta=0.5, alpha=-2.0)),
             (((1, 3, 1), (2, 3, 4), (2, 4, 5)),), tol=1e-4),
        Case("addbmm", fn(lambda c, a, b: torch.addbmm(c, a, b)), (((3, 5), (4, 3, 6), (4, 6, 5)),), tol=1e-4),
        Case("addbmm_beta_alpha", fn(lambda c, a, b: torch.addbmm(c, a, b, beta=2.0, alpha=0.5)),
             (((5,), (2, 3, 4), (2, 4, 5)),), tol=1e-4),
        Case("mv", fn(torch.mv), (((3, 4), (4,)), ((1, 7), (7,))), tol=1e-4),
        Case("addmv", fn(lambda c, a, b: torch.addmv(c, a, b, beta=0.5, alpha=3.0)),
             (((3,), (3, 4), (4,)), ((1,), (5, 2), (2,))), tol=1e-4),
        Case("dot", fn(torch.dot), (((5,), (5,)), ((1,), (1,))), tol=1e-4),
        Case("outer", fn(torch.outer), (((3,), (4,)), ((1,), (6,)))),
        Case("outer_int", fn(torch.outer), ((ints(3), ints(5)),)),
        Case("ger", fn(torch.ger), (((3,), (2,)),)),
        # einsum: batched products, transposed operands, sums, broadcasts, ellipses.
        Case("einsum_bmm", einsum("bij,bjk->bik"), (((2, 3, 4), (2, 4, 5)),), tol=1e-4),
        Case("einsum_attention_scores", einsum("bhqd,bhkd->bhqk"), (((2, 3, 5, 8), (2, 3, 6, 8)),), tol=1e-4),
        Case("einsum_attention_values", einsum("bhqk,bhkd->bqhd"), (((2, 3, 5, 6), (2, 3, 6, 4)),), tol=1e-4),
        Case("einsum_transposed_left", einsum("ji,jk->ik"), (((4, 3), (4, 5)),), tol=1e-4),
        Case("einsum_implicit_output", einsum("ij,jk"), (((3, 4), (4, 5)),), tol=1e-4),
        Case("einsum_implicit_upper_first", einsum("Ba,aB"), (((3, 2), (2, 3)),), tol=1e-4),
        Case("einsum_implicit_sorted", einsum("kj,ji"), (((3, 4), (4, 5)),), tol=1e-4),
        Case("einsum_permute", einsum("abc->cab"), (((2, 3, 4),),)),
        Case("einsum_sum", einsum("ij->"), (((3, 4),),), tol=1e-4),
        Case("einsum_sum_dim", einsum("bij->bj"), (((2, 3, 4),),), tol=1e-4),
        Case("einsum_outer", einsum("i,j->ij"), (((3,), (4,)),), tol=1e-4),
        Case("einsum_dot", einsum("i,i->"), (((5,), (5,)),), tol=1e-4),
        Case("einsum_elementwise", einsum("ij,ij->ij"), (((3, 4), (3, 4)),), tol=1e-4),
        Case("einsum_sum_before_product", einsum("ijk,jl->il"), (((2, 3, 4), (3, 5)),), tol=1e-4),
        Case("einsum_three_operands", einsum("ij,jk,kl->il"), (((2, 3), (3, 4), (4, 5)),), tol=1e-4),
        # torch.einsum passes opt_einsum's contraction path where opt_einsum is installed.
        Case("einsum_contraction_path", fn(lambda a, b, c: aten.einsum("ij,jk,kl->il", [a, b, c], path=[1, 2, 0, 1])),
             (((2, 3), (3, 4), (4, 5)),), tol=1e-4),
        Case("einsum_bilinear", einsum("bn,anm,bm->ba"), (((2, 3), (4, 3, 5), (2, 5)),), tol=1e-4),
        Case("einsum_ellipsis", einsum("...ij,...jk->...ik"), (((2, 3, 4, 5), (2, 3, 5, 6)),), tol=1e-4),
        Case("einsum_ellipsis_broadcast", einsum("...ij,...jk->...ik"), (((2, 1, 4, 5), (3, 5, 6)),), tol=1e-4),
        Case("einsum_ellipsis_summed", einsum("...ij->ij"), (((2, 3, 4),),), tol=1e-4),
        Case("einsum_ellipsis_implicit", einsum("i...,i..."), (((3, 2, 4), (3, 1, 4)),), tol=1e-4),
        Case("einsum_size_one_broadcast", einsum("ij,j->i"), (((3, 4), (1,)),), tol=1e-4),
        Case("einsum_batch_broadcast", einsum("bij,bjk->bik"), (((1, 3, 4), (2, 4, 5)),), tol=1e-4),
        Case("einsum_spaces", einsum("b i j , b j k -> b k i"), (((2, 3, 4), (2, 4, 5)),), tol=1e-4),
        Case("einsum_dynamic_batch", einsum("bhqd,bhkd->bhqk"), tol=1e-4,
             dynamic=B((kiln.Input(min_shape=(1, 2, 3, 4), opt_shape=(2, 2, 3, 4), max_shape=(4, 2, 3, 4)),
                        kiln.Input(min_shape=(1, 2, 5, 4), opt_shape=(2, 2, 5, 4), max_shape=(4, 2, 5, 4))),
                       (((1, 2, 3, 4), (1, 2, 5, 4)), ((4, 2, 3, 4), (4, 2, 5, 4))))),
    ]
    for dt, tag, tol in ((torch.float16, "fp16", 1e-2), (torch.bfloat16, "bf16", 5e-2)):
        cases += [
            Case(f"einsum_{tag}", einsum("bhqd,bhkd->bhqk"), ((typed(dt, 1, 2, 3, 8), typed(dt, 1, 2, 4, 8)),), tol=tol),
            Case(f"baddbmm_{tag}", fn(lambda c, a, b: torch.baddbmm(c, a, b, alpha=0.5)),
                 ((typed(dt, 2, 3, 5), typed(dt, 2, 3, 4), typed(dt, 2, 4, 5)),), tol=tol),
        ]
    return cases


def _math_cases() -> list[Case]:
    """trunc, frac, log2, log10, exp2, logit, addcmul, addcdiv."""
    inf, nan = float("inf"), float("nan")
    specials = with_values({(0, 0): inf, (0, 1): -inf, (0, 2): nan, (0, 3): -0.5, (0, 4): 2.0}, 3, 5)
    scaled = lambda *shape: (lambda: torch.randn(shape) * 10)  # noqa: E731
    cases = [
        Case("trunc", fn(torch.trunc), ((scaled(3, 5),), (specials,))),
        Case("trunc_int", fn(torch.trunc), ((ints(3, 4),),)),
        Case("frac", fn(torch.frac), ((scaled(3, 5),), (specials,))),
        Case("log2", fn(torch.log2), ((positive(3, 5),), (lambda: torch.tensor([1.0, 2.0, 8.0, 0.0, inf, -1.0]),))),
        Case("log2_int", fn(torch.log2), ((ints(3, 4, low=1, high=100),),)),
        Case("log10", fn(torch.log10), ((positive(3, 5),), (lambda: torch.tensor([1.0, 10.0, 1000.0, 0.0, inf]),))),
        Case("exp2", fn(torch.exp2), ((scaled(3, 5),), (lambda: torch.tensor([0.0, 3.0, -2.0, 127.0, -inf, inf]),))),
        Case("exp2_int", fn(torch.exp2), ((ints(3, 4),),)),
        Case("logit", fn(torch.logit), ((lambda: torch.rand(3, 5),), (lambda: torch.tensor([0.0, 1.0, 0.5, 1e-3]),))),
        Case("logit_eps", fn(lambda x: torch.logit(x, eps=1e-2)), ((lambda: torch.rand(3, 5) * 1.2 - 0.1,),)),
        Case("addcmul", fn(lambda a, b, c: torch.addcmul(a, b, c)), (((3, 4), (3, 4), (3, 4)), ((2, 3, 4), (4,), (3, 1)))),
        Case("addcmul_value", fn(lambda a, b, c: torch.addcmul(a, b, c, value=-0.5)), (((3, 4), (3, 4), (1, 4)),)),
        Case("addcmul_int", fn(lambda a, b, c: torch.addcmul(a, b, c, value=3)), ((ints(3, 4), ints(3, 4), ints(4)),)),
        Case("addcdiv", fn(lambda a, b, c: torch.addcdiv(a, b, c)), (((3, 4), (3, 4), nonzero(3, 4)),)),
        Case("addcdiv_value", fn(lambda a, b, c: torch.addcdiv(a, b, c, value=2.5)), (((2, 3, 4), (3, 4), nonzero(4)),)),
    ]
    for dt, tag, tol in ((torch.float16, "fp16", 1e-2), (torch.bfloat16, "bf16", 5e-2)):
        cases += [
            Case(f"frac_{tag}", fn(torch.frac), ((typed(dt, 3, 5),),), tol=tol),
            Case(f"log2_{tag}", fn(lambda x: torch.log2(x.abs() + 0.5)), ((typed(dt, 3, 5),),), tol=tol),
            Case(f"addcdiv_{tag}", fn(lambda a, b, c: torch.addcdiv(a, b, c.abs() + 1, value=0.5)),
                 ((typed(dt, 3, 4), typed(dt, 3, 4), typed(dt, 3, 4)),), tol=tol),
        ]
    return cases


def _factory_cases() -> list[Case]:
    """Factories without a device argument make CPU tensors: constants of a CPU engine."""
    return [
        Case("full", fn(lambda x: x + torch.full((3, 4), 1.5)), (((3, 4),),)),
        Case("full_int", fn(lambda x: x * torch.full((4,), 3, dtype=torch.int32)), ((ints(3, 4),),)),
        Case("zeros_ones", fn(lambda x: x * torch.ones(3, 4) + torch.zeros(4)), (((3, 4),),)),
        Case("scalar_tensor", fn(lambda x: x * torch.scalar_tensor(2.5)), (((3, 4),),)),
        Case("arange", fn(lambda x: x + torch.arange(4)), (((3, 4),),)),
        Case("arange_start", fn(lambda x: x * torch.arange(1, 5)), (((3, 4),),)),
        Case("arange_start_step", fn(lambda x: x * torch.arange(1.0, 3.0, 0.5)), (((3, 4),),)),
    ]


def _like_factory_cases() -> list[Case]:
    """The _like factories make their tensor on their input's device: constants on either."""
    return [
        Case("full_like", fn(lambda x: x + torch.full_like(x, 2.5)), (((3, 4),),)),
        Case("full_like_int", fn(lambda x: torch.full_like(x, 7, dtype=torch.int32) * 2), (((2, 5),),)),
        Case("zeros_ones_like", fn(lambda x: x * torch.ones_like(x) + torch.zeros_like(x, dtype=torch.int32)),
             (((3, 4),),)),
    ]


CASES: list[Case] = [
    *_reduced_precision_cases(),
    *_resize_cases(),
    *_cumulative_cases(),
    *_normalization_cases(),
    *_moment_cases(),
    *_product_cases(),
    *_math_cases(),
    *_activation_cases(),
    *_elementwise_cases(),
    *_unary_cases(),
    *_cast_cases(),
    *_noop_cases(),
    *_shape_cases(),
    *_indexing_cases(),
    *_special_value_cases(),
    *_advanced_indexing_cases(),
    *_remainder_cases(),
    *_rearrange_cases(),
    *_factory_cases(),
    *_like_factory_cases(),
    # ---- convolution ----
    Case("conv2d", layer(lambda: nn.Conv2d(3, 8, 3)), (((1, 3, 8, 8),), ((2, 3, 5, 7),)), tol=1e-4),
    Case("conv2d_stride_pad_dilation", layer(lambda: nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(2, 1))),
         (((2, 4, 9, 10),),), tol=1e-4),
    Case("conv2d_groups_nobias", layer(lambda: nn.Conv2d(8, 4, 3, groups=4, bias=False, padding=1)), (((1, 8, 6, 6),),), tol=1e-4),
    Case("conv2d_depthwise", layer(lambda: nn.Conv2d(6, 6, 3, groups=6, padding=1)), (((2, 6, 7, 7),),), tol=1e-4),
    Case("conv2d_padding_same", layer(lambda: nn.Conv2d(3, 4, 4, padding="same", dilation=2)), (((1, 3, 9, 9),),), tol=1e-4),
    Case("conv2d_padding_valid", layer(lambda: nn.Conv2d(3, 4, 3, padding="valid")), (((1, 3, 6, 6),),), tol=1e-4),
    Case("conv2d_unbatched", layer(lambda: nn.Conv2d(3, 4, 3)), (((3, 6, 6),),), tol=1e-4),
    Case("conv2d_dynamic_batch", layer(lambda: nn.Conv2d(3, 4, 3, padding=1)), tol=1e-4,
         dynamic=B((kiln.Input(min_shape=(1, 3, 8, 8), opt_shape=(2, 3, 8, 8), max_shape=(4, 3, 8, 8)),),
                   (((1, 3, 8, 8),), ((3, 3, 8, 8),), ((4, 3, 8, 8),)))),
    Case("conv1d_padding_same", layer(lambda: nn.Conv1d(2, 3, 4, padding="same")), (((1, 2, 9),),), tol=1e-4),
    Case("conv3d_padding_same", layer(lambda: nn.Conv3d(2, 2, 3, padding="same")), (((1, 2, 4, 4, 4),),), tol=1e-4),
    Case("convolution", fn(lambda x: torch.convolution(x, _CONV_WEIGHT, None, [2, 1], [1, 0], [1, 1], False, [0, 0], 1)),
         (((1, 3, 7, 6),),), tol=1e-4),
    Case("convolution_runtime_weight", fn(lambda x, w: torch.convolution(x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1)),
         (((1, 3, 7, 6), (4, 3, 3, 2)),), tol=1e-4,
         xfail={f: "the weight is a runtime input; Kiln converts convolutions with constant weights only" for f in FRONT_ENDS}),
    Case("convolution_transposed", fn(lambda x: torch.convolution(x, _DECONV_WEIGHT, None, [2, 2], [0, 1], [1, 1], True, [1, 0], 1)),
         (((1, 4, 3, 5),),), tol=1e-4),
    Case("conv1d", layer(lambda: nn.Conv1d(3, 5, 3, stride=2, padding=1)), (((2, 3, 11),), ((1, 3, 4),)), tol=1e-4),
    Case("conv3d", layer(lambda: nn.Conv3d(2, 3, 3, padding=1)), (((1, 2, 4, 5, 6),),), tol=1e-4),
    # nn.ConvTranspose*d.forward takes an optional output_size: nn.Sequential gives a one-input forward.
    Case("conv_transpose2d", layer(lambda: nn.Sequential(nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1))),
         (((1, 4, 5, 5),), ((2, 4, 3, 6),)), tol=1e-4),
    Case("conv_transpose2d_groups_dilation", layer(lambda: nn.Sequential(nn.ConvTranspose2d(4, 6, 3, groups=2, dilation=2, bias=False))),
         (((1, 4, 4, 4),),), tol=1e-4),
    Case("conv_transpose1d", layer(lambda: nn.Sequential(nn.ConvTranspose1d(3, 2, 4, stride=3))), (((2, 3, 5),),), tol=1e-4),
    Case("conv_transpose3d", layer(lambda: nn.Sequential(nn.ConvTranspose3d(2, 2, 2, stride=2))), (((1, 2, 3, 3, 3),),), tol=1e-4),
    # Patch embeddings (stride = kernel, few channels), which the builder runs as a GEMM over
    # gathered patches: ViT's, a stem with its ReLU, 1-D and 3-D, and a dynamic batch.
    Case("conv2d_patch_embedding", layer(lambda: nn.Conv2d(3, 8, 4, stride=4)), (((2, 3, 16, 12),),), tol=1e-4),
    Case("conv2d_patch_embedding_relu", layer(lambda: nn.Sequential(nn.Conv2d(3, 6, (2, 3), stride=(2, 3)), nn.ReLU())),
         (((1, 3, 4, 9),),), tol=1e-4),
    Case("conv1d_patch_embedding", layer(lambda: nn.Conv1d(2, 6, 3, stride=3)), (((2, 2, 12),),), tol=1e-4),
    Case("conv3d_patch_embedding", layer(lambda: nn.Conv3d(1, 4, 2, stride=2)), (((1, 1, 4, 4, 6),),), tol=1e-4),
    Case("conv2d_patch_embedding_dynamic_batch", layer(lambda: nn.Conv2d(3, 8, 4, stride=4)), tol=1e-4,
         dynamic=B((kiln.Input(min_shape=(1, 3, 8, 8), opt_shape=(2, 3, 8, 8), max_shape=(5, 3, 8, 8)),),
                   (((1, 3, 8, 8),), ((5, 3, 8, 8),)))),
    Case("conv2d_traced", layer(lambda: Traced(nn.Conv2d(3, 4, 3, stride=2))), (((1, 3, 9, 9),),), tol=1e-4),
    Case("conv_transpose2d_traced", layer(lambda: Traced(nn.ConvTranspose2d(3, 2, 3, stride=2))), (((1, 3, 4, 4),),), tol=1e-4),
    # ---- matrix products ----
    Case("linear", layer(lambda: nn.Linear(16, 8)), (((4, 16),), ((2, 3, 16),), ((16,),)), tol=1e-4),
    Case("linear_nobias", layer(lambda: nn.Linear(7, 5, bias=False)), (((3, 7),),), tol=1e-4),
    Case("linear_dynamic", layer(lambda: nn.Linear(6, 4)), tol=1e-4,
         dynamic=B((kiln.Input(min_shape=(1, 2, 6), opt_shape=(4, 3, 6), max_shape=(8, 5, 6)),),
                   (((1, 2, 6),), ((8, 5, 6),), ((3, 4, 6),)))),
    Case("matmul", fn(torch.matmul), (((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)),
                                       ((2, 1, 3, 4), (3, 4, 2)), ((4,), (4,)), ((4,), (2, 4, 3)), ((2, 3, 4), (4,))),
         tol=1e-4),
    Case("matmul_dynamic", fn(torch.matmul), tol=1e-4,
         dynamic=B((kiln.Input(min_shape=(1, 3, 4), opt_shape=(2, 3, 4), max_shape=(4, 3, 4)), kiln.Input(shape=(4, 5))),
                   (((1, 3, 4), (4, 5)), ((4, 3, 4), (4, 5))))),
    Case("mm", fn(torch.mm), (((3, 4), (4, 5)), ((1, 7), (7, 1))), tol=1e-4),
    Case("bmm", fn(torch.bmm), (((2, 3, 4), (2, 4, 5)),), tol=1e-4),
    Case("addmm", fn(lambda b, x, y: torch.addmm(b, x, y)), (((5,), (3, 4), (4, 5)), ((3, 5), (3, 4), (4, 5))), tol=1e-4),
    Case("addmm_beta_alpha", fn(lambda b, x, y: torch.addmm(b, x, y, beta=0.5, alpha=2.0)), (((1, 5), (3, 4), (4, 5)),), tol=1e-4),
    Case("addmm_beta_zero", fn(lambda b, x, y: torch.addmm(b, x, y, beta=0)),
         ((lambda: torch.full((3, 5), float("nan")), (3, 4), (4, 5)),), tol=1e-4),
    # ---- pooling ----
    Case("max_pool2d", layer(lambda: nn.MaxPool2d(2)), (((1, 3, 8, 8),), ((2, 2, 7, 5),))),
    Case("max_pool2d_stride_pad_dilation", layer(lambda: nn.MaxPool2d(3, stride=2, padding=1, dilation=2)), (((1, 2, 9, 10),),)),
    Case("max_pool2d_ceil", layer(lambda: nn.MaxPool2d(3, stride=2, ceil_mode=True)), (((1, 2, 8, 8),), ((1, 1, 6, 9),))),
    Case("max_pool2d_ceil_pad", layer(lambda: nn.MaxPool2d(2, stride=2, padding=1, ceil_mode=True)), (((1, 1, 5, 5),),)),
    Case("max_pool2d_unbatched", layer(lambda: nn.MaxPool2d(2)), (((3, 6, 6),),)),
    Case("max_pool2d_dynamic", layer(lambda: nn.MaxPool2d(2)),
         dynamic=B((kiln.Input(min_shape=(1, 3, 4, 4), opt_shape=(2, 3, 8, 8), max_shape=(4, 3, 16, 16)),),
                   (((1, 3, 4, 4),), ((4, 3, 16, 10),)))),
    Case("max_pool2d_with_indices", fn(lambda x: F.max_pool2d(x, 3, 2, 1, return_indices=True)[0]), (((1, 2, 7, 8),),)),
    Case("max_pool1d_with_indices", fn(lambda x: F.max_pool1d(x, 2, return_indices=True)[0]), (((1, 2, 7),),)),
    Case("max_pool3d_with_indices", fn(lambda x: F.max_pool3d(x, 2, return_indices=True)[0]), (((1, 2, 4, 4, 4),),)),
    Case("max_pool1d", layer(lambda: nn.MaxPool1d(3, stride=2, padding=1)), (((2, 3, 10),),)),
    Case("max_pool3d", layer(lambda: nn.MaxPool3d(2)), (((1, 2, 4, 4, 6),),)),
    Case("avg_pool2d", layer(lambda: nn.AvgPool2d(2)), (((1, 3, 8, 8),), ((2, 1, 5, 7),))),
    Case("avg_pool2d_pad_include", layer(lambda: nn.AvgPool2d(3, stride=2, padding=1)), (((1, 2, 7, 8),),)),
    Case("avg_pool2d_pad_exclude", layer(lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)), (((1, 2, 7, 8),),)),
    Case("avg_pool2d_ceil", layer(lambda: nn.AvgPool2d(3, stride=2, ceil_mode=True)), (((1, 2, 8, 8),),)),
    Case("avg_pool2d_ceil_pad_exclude", layer(lambda: nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
         (((1, 2, 8, 9),),)),
    Case("avg_pool1d", layer(lambda: nn.AvgPool1d(3, stride=2, padding=1)), (((2, 3, 10),),)),
    Case("avg_pool3d", layer(lambda: nn.AvgPool3d(2)), (((1, 2, 4, 4, 4),),)),
    Case("adaptive_avg_pool2d", layer(lambda: nn.AdaptiveAvgPool2d((3, 2))), (((1, 3, 8, 8),), ((2, 2, 7, 5),))),
    Case("adaptive_avg_pool2d_global", layer(lambda: nn.AdaptiveAvgPool2d(1)), (((2, 4, 7, 7),),)),
    Case("adaptive_avg_pool2d_dynamic", layer(lambda: nn.AdaptiveAvgPool2d(1)),
         dynamic=B((kiln.Input(min_shape=(1, 4, 5, 5), opt_shape=(2, 4, 7, 7), max_shape=(4, 4, 9, 9)),),
                   (((1, 4, 5, 5),), ((4, 4, 9, 6),)))),
    Case("adaptive_avg_pool1d", layer(lambda: nn.AdaptiveAvgPool1d(4)), (((2, 3, 10),),)),
    Case("adaptive_avg_pool3d", layer(lambda: nn.AdaptiveAvgPool3d((2, 3, 1))), (((1, 2, 4, 5, 6),),)),
    Case("_adaptive_avg_pool2d", fn(lambda x: torch.ops.aten._adaptive_avg_pool2d(x, [2, 3])), (((1, 2, 7, 8),),)),
    Case("_adaptive_avg_pool3d", fn(lambda x: torch.ops.aten._adaptive_avg_pool3d(x, [2, 1, 3])), (((1, 2, 4, 5, 6),),)),
    Case("adaptive_max_pool2d", layer(lambda: nn.AdaptiveMaxPool2d((3, 2))), (((1, 3, 8, 7),),)),
    Case("adaptive_max_pool1d", layer(lambda: nn.AdaptiveMaxPool1d(3)), (((2, 3, 10),),)),
    # ---- normalization ----
    Case("batch_norm2d", layer(lambda: nn.BatchNorm2d(3)), (((2, 3, 4, 5),), ((1, 3, 1, 1),))),
    Case("batch_norm1d", layer(lambda: nn.BatchNorm1d(4)), (((5, 4),), ((2, 4, 6),))),
    Case("batch_norm_no_affine", layer(lambda: nn.BatchNorm2d(3, affine=False)), (((2, 3, 4, 4),),)),
    Case("batch_norm_dynamic", layer(lambda: nn.BatchNorm2d(3)),
         dynamic=B((kiln.Input(min_shape=(1, 3, 4, 4), opt_shape=(2, 3, 4, 4), max_shape=(4, 3, 4, 4)),),
                   (((1, 3, 4, 4),), ((4, 3, 4, 4),)))),
    Case("native_batch_norm", fn(lambda x: torch.ops.aten.native_batch_norm(x, *_BN_STATS, False, 0.1, 1e-5)[0]),
         (((2, 3, 4),),)),
    Case("layer_norm", layer(lambda: nn.LayerNorm(8)), (((2, 8),), ((2, 3, 8),))),
    Case("native_layer_norm", fn(lambda x: torch.native_layer_norm(x, [4], _LN_WEIGHT, None, 1e-5)[0]), (((2, 3, 4),),)),
    Case("layer_norm_2d", layer(lambda: nn.LayerNorm((3, 4), eps=1e-3)), (((2, 3, 4),),)),
    Case("layer_norm_no_affine", layer(lambda: nn.LayerNorm(6, elementwise_affine=False)), (((4, 6),),)),
    Case("layer_norm_dynamic", layer(lambda: nn.LayerNorm(8)),
         dynamic=B((kiln.Input(min_shape=(1, 2, 8), opt_shape=(2, 4, 8), max_shape=(4, 9, 8)),),
                   (((1, 2, 8),), ((4, 9, 8),)))),
    # ---- reductions ----
    Case("sum_dim", fn(lambda x: x.sum(1)), (((2, 3, 4),), ((5, 6),))),
    Case("sum_dims_keepdim", fn(lambda x: x.sum((0, -1), keepdim=True)), (((2, 3, 4),),)),
    Case("sum_all", fn(lambda x: x.sum()), (((2, 3, 4),),), tol=1e-4),
    Case("sum_int", fn(lambda x: x.sum(0)), ((ints(3, 4, dtype=torch.int32),),)),
    Case("sum_bool", fn(lambda x: x.sum(-1)), ((bools(3, 4),),)),
    Case("sum_dtype", fn(lambda x: x.sum(1, dtype=torch.float32)), ((ints(3, 4),),)),
    Case("sum_dynamic", fn(lambda x: x.sum(-1)),
         dynamic=B((kiln.Input(min_shape=(1, 3), opt_shape=(2, 5), max_shape=(4, 8)),), (((1, 3),), ((4, 8),)))),
    Case("mean_dim", fn(lambda x: x.mean(-1)), (((2, 3, 4),),)),
    Case("mean_dims_keepdim", fn(lambda x: x.mean((1, 2), keepdim=True)), (((2, 3, 4),),)),
    Case("mean_all", fn(lambda x: x.mean()), (((2, 3, 4),),)),
    Case("prod_dim", fn(lambda x: x.prod(1)), ((positive(2, 3, 4),),)),
    Case("prod_all", fn(lambda x: x.prod()), ((positive(2, 3),),)),
    Case("prod_int", fn(lambda x: x.prod(0, keepdim=True)), ((ints(3, 4, low=-3, high=4),),)),
    Case("amax", fn(lambda x: x.amax(1)), (((2, 3, 4),),)),
    Case("amax_dims", fn(lambda x: x.amax((0, 2), keepdim=True)), (((2, 3, 4),),)),
    Case("amin", fn(lambda x: x.amin(-1)), (((2, 3, 4),), (ints(3, 5),))),
    Case("max_dim_values", fn(lambda x: x.max(1).values), (((2, 3, 4),),)),
    Case("max_dim_keepdim", fn(lambda x: torch.max(x, -1, keepdim=True)[0]), (((2, 3, 4),),)),
    Case("min_dim_values", fn(lambda x: x.min(0).values), (((2, 3, 4),),)),
    Case("max_all", fn(lambda x: x.max()), (((2, 3, 4),),)),
    Case("min_all", fn(lambda x: x.min()), (((2, 3, 4),),)),
    Case("any_dim", fn(lambda x: x.any(1)), ((bools(3, 4),), (ints(3, 4, low=0, high=2),))),
    Case("any_dims", fn(lambda x: x.any((0, 1))), ((bools(3, 4, 2),),)),
    Case("any_all", fn(lambda x: x.any()), (((3, 4),),)),
    Case("all_dim", fn(lambda x: x.all(-1)), ((bools(3, 4),),)),
    Case("all_all", fn(lambda x: x.all()), ((bools(2, 2),),)),
    # ---- softmax ----
    Case("softmax", layer(lambda: nn.Softmax(dim=1)), (((2, 5),), ((2, 3, 4),))),
    Case("softmax_last", fn(lambda x: torch.softmax(x * 10, -1)), (((2, 3, 7),),)),
    Case("softmax_dtype", fn(lambda x: torch.softmax(x, 0, dtype=torch.float32)), ((ints(4, 3),),)),
    Case("_softmax", fn(lambda x: torch._softmax(x, 1, False)), (((2, 5, 3),),)),
    Case("_log_softmax", fn(lambda x: torch._log_softmax(x, -1, False)), (((2, 5, 3),),)),
    Case("log_softmax", layer(lambda: nn.LogSoftmax(dim=-1)), (((2, 5),), ((2, 3, 4),))),
    Case("softmax_dynamic", layer(lambda: nn.Softmax(dim=-1)),
         dynamic=B((kiln.Input(min_shape=(1, 3), opt_shape=(2, 5), max_shape=(4, 9)),), (((1, 3),), ((4, 9),)))),
    # ---- attention ----
    Case("sdpa", layer(lambda: Attention()), (((2, 3, 5, 8), (2, 3, 7, 8), (2, 3, 7, 4)), ((1, 6, 8), (1, 4, 8), (1, 4, 8))),
         tol=1e-4),
    Case("sdpa_causal", layer(lambda: Attention(is_causal=True)), (((2, 2, 6, 8), (2, 2, 6, 8), (2, 2, 6, 8)),
                                                                   ((1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 4))), tol=1e-4),
    Case("sdpa_scale", layer(lambda: Attention(scale=0.3)), (((2, 2, 4, 8), (2, 2, 4, 8), (2, 2, 4, 8)),), tol=1e-4),
    Case("sdpa_float_mask", layer(lambda: MaskedAttention()),
         (((2, 2, 5, 8), (2, 2, 6, 8), (2, 2, 6, 8), float_mask(5, 6)),
          ((2, 2, 5, 8), (2, 2, 6, 8), (2, 2, 6, 8), float_mask(2, 1, 5, 6))), tol=1e-4),
    Case("sdpa_bool_mask", layer(lambda: MaskedAttention()),
         (((2, 2, 5, 8), (2, 2, 6, 8), (2, 2, 6, 8), bools(5, 6)),
          ((1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 4, 8), bools(1, 2, 4, 4))), tol=1e-4),
    Case("sdpa_constant_mask_masked_rows", layer(lambda: ConstantMaskAttention()), (((1, 2, 6, 4), (1, 2, 6, 4), (1, 2, 6, 4)),),
         tol=1e-4),
    Case("sdpa_gqa", layer(lambda: Attention(enable_gqa=True)), (((2, 4, 5, 8), (2, 2, 6, 8), (2, 2, 6, 8)),), tol=1e-4),
    Case("sdpa_gqa_causal", layer(lambda: Attention(is_causal=True, enable_gqa=True)),
         (((1, 6, 5, 4), (1, 2, 5, 4), (1, 2, 5, 4)),), tol=1e-4),
    # What F.scaled_dot_product_attention dispatches to on CPU; Kiln's front ends keep
    # scaled_dot_product_attention whole, so this form is called directly.
    Case("sdpa_flash_for_cpu", fn(lambda q, k, v: torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)[0]),
         (((2, 3, 5, 8), (2, 3, 7, 8), (2, 3, 7, 8)),), tol=1e-4),
    Case("sdpa_flash_for_cpu_causal_mask",
         fn(lambda q, k, v: torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, is_causal=True, scale=0.5)[0]),
         (((1, 2, 6, 4), (1, 2, 6, 4), (1, 2, 6, 4)),), tol=1e-4),
    # Query and key lengths dynamic: the mask's key dim is the keys' dynamic size, so the fused
    # layer takes it.
    Case("sdpa_bool_mask_dynamic_lengths", layer(lambda: MaskedAttention()), tol=1e-4,
         dynamic=B((kiln.Input(min_shape=(1, 2, 2, 8), opt_shape=(1, 2, 5, 8), max_shape=(1, 2, 9, 8)),
                    kiln.Input(min_shape=(1, 2, 3, 8), opt_shape=(1, 2, 6, 8), max_shape=(1, 2, 10, 8)),
                    kiln.Input(min_shape=(1, 2, 3, 8), opt_shape=(1, 2, 6, 8), max_shape=(1, 2, 10, 8)),
                    kiln.Input(min_shape=(1, 1, 2, 3), opt_shape=(1, 1, 5, 6), max_shape=(1, 1, 9, 10),
                               dtype=torch.bool)),
                   (((1, 2, 2, 8), (1, 2, 3, 8), (1, 2, 3, 8), bools(1, 1, 2, 3)),
                    ((1, 2, 9, 8), (1, 2, 10, 8), (1, 2, 10, 8), bools(1, 1, 9, 10))))),
    Case("sdpa_dynamic_batch", layer(lambda: Attention()), tol=1e-4,
         dynamic=B(tuple(kiln.Input(min_shape=(1, 2, 6, 8), opt_shape=(2, 2, 6, 8), max_shape=(4, 2, 6, 8)) for _ in range(3)),
                   (((1, 2, 6, 8),) * 3, ((4, 2, 6, 8),) * 3))),
]

# Registered ops that no case could make either front end produce in torch 2.11 (scripting and
# tracing resolve these calls to other overloads; torch.export decomposes them). Their converters
# are not exercised here.
NOT_REACHABLE: dict[str, str] = {
    "aten::split": "x.split([...]) scripts to aten::split.sizes and exports to split_with_sizes",
    "aten::to.dtype_layout": "x.to(dtype=..., device=...) traces to aten::to.device",
    "aten::to.prim_dtype": "torch.ops.aten.to.prim_dtype traces to aten::to.dtype and exports "
    "to _to_copy",
}


# -- running the table -------------------------------------------------------------------------


def _runs(case: Case) -> list[tuple[str, int | None]]:
    runs: list[tuple[str, int | None]] = [(f"{case.name}-{i}", i) for i in range(len(case.samples))]
    if case.dynamic is not None:
        runs.append((f"{case.name}-dynamic", None))
    return runs


def _params() -> list[Any]:
    params = []
    for case in CASES:
        for run_id, index in _runs(case):
            for front_end in FRONT_ENDS:
                marks = []
                if front_end in case.xfail:
                    marks.append(pytest.mark.xfail(reason=case.xfail[front_end], strict=True))
                params.append(pytest.param(case, index, front_end, id=f"{run_id}-{front_end}", marks=marks))
    return params


def _check_close(actual: Any, expected: Any, tol: float) -> None:
    if isinstance(expected, (tuple, list)):
        assert isinstance(actual, (tuple, list)) and len(actual) == len(expected)
        for a, e in zip(actual, expected):
            _check_close(a, e, tol)
        return
    assert isinstance(actual, torch.Tensor), f"expected a tensor, got {type(actual).__name__}"
    assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != eager's {expected.dtype}"
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != eager's {tuple(expected.shape)}"
    if expected.dtype.is_floating_point:
        torch.testing.assert_close(actual, expected, rtol=tol, atol=tol, equal_nan=True)
    else:
        assert torch.equal(actual, expected)


def _on(device: str, value: Any) -> Any:
    return value.to(device) if isinstance(value, (torch.Tensor, nn.Module)) else value


def _run_case(case: Case, index: int | None, front_end: str, device: str, tol: float) -> None:
    """Compiles the case's module for `device` and checks every run against eager there."""
    torch.manual_seed(1)
    module = _on(device, case.build())
    if index is None:
        assert case.dynamic is not None
        compile_inputs: Sequence[Any] = case.dynamic.inputs
        runs = [[_on(device, make(spec)) for spec in run] for run in case.dynamic.runs]
    else:
        run = [_on(device, make(spec)) for spec in case.samples[index]]
        compile_inputs, runs = run, [run]
    with torch.no_grad():
        try:
            expected = [module(*inputs) for inputs in runs]
        except RuntimeError as error:
            # A case whose function holds a CPU tensor (a weight in a lambda) has no eager result
            # on another device to compare with.
            pytest.skip(f"eager PyTorch cannot run this case on {device}: {error}")
        compiled = kiln.compile(
            module,
            ir=front_end,
            inputs=list(compile_inputs),
            min_block_size=1,
            require_full_compilation=True,
            enabled_precisions={torch.float32, torch.float16, torch.bfloat16},
            device=device,
            allow_tf32=False,
        )
        summary = kiln.summary(compiled)
        assert summary["engines"] >= 1 and summary["ops_in_torch"] == 0, summary
        for inputs, reference in zip(runs, expected):
            _check_close(compiled(*inputs), reference, tol)


@pytest.mark.parametrize("case, index, front_end", _params())
def test_converter(case: Case, index: int | None, front_end: str) -> None:
    _run_case(case, index, front_end, "cpu", case.tol)


# Cases that move a tensor to the CPU or make one there: for a CUDA engine those stay in PyTorch.
_MOVES_TO_CPU = {"to_dtype_layout", "to_device", "to_device_dtype", "cat_skips_empty_vectors",
                 "masked_fill_tensor",
                 *(case.name for case in _factory_cases())}


@pytest.mark.gpu
@pytest.mark.parametrize("case, index, front_end", _params())
def test_converter_on_cuda(case: Case, index: int | None, front_end: str) -> None:
    if not kiln._C.has_cuda():
        pytest.skip("Kiln was built without CUDA")
    if case.name in _MOVES_TO_CPU:
        pytest.skip("moves the tensor to the CPU, which stays in PyTorch for a CUDA engine")
    # GPU kernels sum in another order than the CPU reference: float32 within 1e-4.
    _run_case(case, index, front_end, "cuda", max(case.tol, 1e-4))


# -- completeness ------------------------------------------------------------------------------


def _op_name(schema: torch._C.FunctionSchema) -> str:
    return schema.name + (f".{schema.overload_name}" if schema.overload_name else "")


def _ts_ops(module: nn.Module, inputs: list[torch.Tensor]) -> set[str]:
    """The aten ops of the graph kiln.compile(ir="ts") imports: scripted (traced when the module
    does not script), frozen and inlined."""
    try:
        scripted = torch.jit.script(module)
    except Exception:  # noqa: BLE001 - kiln.compile traces what does not script, and so do we
        scripted = torch.jit.trace(module, tuple(inputs))
    frozen = torch._C._freeze_module(scripted.eval()._c)  # as kiln's TS front end freezes
    graph = frozen._get_method("forward").graph
    torch._C._jit_pass_inline(graph)
    ops = set()
    blocks = [graph]
    while blocks:
        for node in blocks.pop().nodes():
            blocks.extend(node.blocks())
            schema = node.schema()
            if schema != "(no schema)":
                ops.add(schema.split("(", 1)[0])
    return ops


def _dynamo_ops(module: nn.Module, inputs: list[torch.Tensor]) -> set[str]:
    """The aten ops of the graph kiln.compile(ir="dynamo") imports."""
    program = torch.export.export(module, tuple(inputs)).run_decompositions(decomposition_table())
    return {
        _op_name(node.target._schema)
        for node in program.graph.nodes
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
    }


def test_every_converter_is_exercised() -> None:
    registered = {schema.split("(", 1)[0] for schema in kiln.supported_ops()}
    seen: set[str] = set()
    with torch.no_grad():
        for case in CASES:
            module = case.build()
            for sample in (case.samples or case.dynamic.runs)[:1]:
                inputs = [make(spec) for spec in sample]
                for front_end, ops_of in (("ts", _ts_ops), ("dynamo", _dynamo_ops)):
                    if front_end not in case.xfail:
                        seen |= ops_of(module, inputs)
    missing = sorted(registered - seen - set(NOT_REACHABLE))
    assert not missing, f"converters no case exercises (add a case to CASES): {missing}"
    reachable = sorted(set(NOT_REACHABLE) & seen)
    assert not reachable, f"NOT_REACHABLE ops that a case does exercise (remove them): {reachable}"
    stale = sorted(set(NOT_REACHABLE) - registered)
    assert not stale, f"NOT_REACHABLE names ops Kiln does not register: {stale}"


def test_upsample_scale_that_torch_cpu_and_cuda_apply_differently_stays_in_pytorch() -> None:
    """A width kept at 9 with scale 1.6: torch's CPU kernel copies it, its CUDA kernel samples by
    the scale (a CUDA engine differed from CUDA eager by ~3). Such a node falls back. (Through
    torch.export the op is decomposed, by torch, into ops that sample by the scale.)"""
    module = _FN_BY_ARITY[1](lambda x: aten.upsample_bilinear2d(x, [9, 9], False, 1.9, 1.6)).eval()
    x = torch.randn(2, 2, 4, 9)
    with torch.no_grad():
        compiled = kiln.compile(module, ir="ts", inputs=[x], min_block_size=1)
        torch.testing.assert_close(compiled(x), module(x))
    (fallback,) = kiln.summary(compiled)["fallback"]
    assert fallback[0].startswith("aten::upsample_bilinear2d")
    assert "different results in torch's CPU and CUDA kernels" in fallback[1]
