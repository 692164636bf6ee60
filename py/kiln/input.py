"""kiln.Input: the shapes and dtype an engine input accepts, like ``torch_tensorrt.Input``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

Shape = tuple[int, ...]


def _to_shape(value: Any, what: str) -> Shape:
    if isinstance(value, torch.Tensor) or not isinstance(value, (Sequence, torch.Size)) or isinstance(
        value, str
    ):
        raise TypeError(
            f"kiln.Input: {what} must be a sequence of ints such as (1, 3, 224, 224), "
            f"got {type(value).__name__}"
        )
    dims = []
    for dim in value:
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(
                f"kiln.Input: {what} must contain ints only, got {type(dim).__name__} in {tuple(value)}"
            )
        if dim < 1:
            raise ValueError(
                f"kiln.Input: {what} {tuple(value)} has a dim of {dim}; every dim must be at least 1"
            )
        dims.append(int(dim))
    return tuple(dims)


class Input:
    """One input of a compiled module: a static shape, or a range of shapes, and a dtype.

    Either give ``shape`` for a static input, or all of ``min_shape``, ``opt_shape`` and
    ``max_shape`` for a dynamic one: every dim must satisfy ``min <= opt <= max``; dims where
    ``min != max`` are dynamic. Engines are tuned for ``opt_shape`` and accept any shape in the
    range.

    >>> kiln.Input(shape=(1, 3, 224, 224))
    >>> kiln.Input(min_shape=(1, 3, 224, 224), opt_shape=(8, 3, 224, 224),
    ...            max_shape=(32, 3, 224, 224), dtype=torch.float32)
    """

    def __init__(
        self,
        shape: Sequence[int] | None = None,
        *,
        min_shape: Sequence[int] | None = None,
        opt_shape: Sequence[int] | None = None,
        max_shape: Sequence[int] | None = None,
        dtype: torch.dtype = torch.float32,
        name: str | None = None,
    ) -> None:
        ranged = (min_shape, opt_shape, max_shape)
        if shape is not None:
            if any(s is not None for s in ranged):
                raise ValueError(
                    "kiln.Input: give either `shape` (a static input) or `min_shape`, `opt_shape` "
                    "and `max_shape` (a dynamic input), not both"
                )
            static = _to_shape(shape, "shape")
            self.min_shape, self.opt_shape, self.max_shape = static, static, static
        elif all(s is not None for s in ranged):
            self.min_shape = _to_shape(min_shape, "min_shape")
            self.opt_shape = _to_shape(opt_shape, "opt_shape")
            self.max_shape = _to_shape(max_shape, "max_shape")
            ranks = {len(self.min_shape), len(self.opt_shape), len(self.max_shape)}
            if len(ranks) != 1:
                raise ValueError(
                    "kiln.Input: min_shape, opt_shape and max_shape must have the same rank, got "
                    f"{self.min_shape}, {self.opt_shape} and {self.max_shape}"
                )
            for d, (lo, opt, hi) in enumerate(zip(self.min_shape, self.opt_shape, self.max_shape)):
                if not lo <= opt <= hi:
                    raise ValueError(
                        f"kiln.Input: dim {d} must satisfy min <= opt <= max, got min={lo}, "
                        f"opt={opt}, max={hi} (min_shape={self.min_shape}, "
                        f"opt_shape={self.opt_shape}, max_shape={self.max_shape})"
                    )
        elif any(s is not None for s in ranged):
            missing = [n for n, s in zip(("min_shape", "opt_shape", "max_shape"), ranged) if s is None]
            raise ValueError(
                f"kiln.Input: a dynamic input needs min_shape, opt_shape and max_shape; "
                f"{', '.join(missing)} missing"
            )
        else:
            raise ValueError(
                "kiln.Input needs a shape: `shape=(...)`, or `min_shape`, `opt_shape` and "
                "`max_shape`"
            )
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"kiln.Input: dtype must be a torch.dtype, got {dtype!r}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"kiln.Input: name must be a str, got {type(name).__name__}")
        self.dtype = dtype
        self.name = name

    @classmethod
    def from_tensor(cls, tensor: torch.Tensor, *, name: str | None = None) -> Input:
        """A static Input with the tensor's shape and dtype."""
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"kiln.Input.from_tensor expects a torch.Tensor, got {type(tensor).__name__}")
        return cls(shape=tuple(tensor.shape), dtype=tensor.dtype, name=name)

    @property
    def shape(self) -> Shape:
        """The static shape; raises for a dynamic Input."""
        if self.is_dynamic:
            raise ValueError(
                f"kiln.Input {self!r} is dynamic and has no single shape; use min_shape, "
                "opt_shape or max_shape"
            )
        return self.opt_shape

    @property
    def is_dynamic(self) -> bool:
        return self.min_shape != self.max_shape

    @property
    def dynamic_dims(self) -> tuple[int, ...]:
        """Indices of the dims whose min and max differ."""
        return tuple(d for d, (lo, hi) in enumerate(zip(self.min_shape, self.max_shape)) if lo != hi)

    def shape_at(self, which: Literal["min", "opt", "max"]) -> Shape:
        shapes = {"min": self.min_shape, "opt": self.opt_shape, "max": self.max_shape}
        if which not in shapes:
            raise ValueError(f"kiln.Input: `which` must be 'min', 'opt' or 'max', got {which!r}")
        return shapes[which]

    def example_tensor(
        self, which: Literal["min", "opt", "max"] = "opt", *, high: int = 16
    ) -> torch.Tensor:
        """A random CPU tensor of the shape at ``which`` and this Input's dtype.

        Floating and complex dtypes get standard normal values; integer dtypes get values in
        ``[0, high)`` (the valid range, say a vocabulary size, is not known: pass ``high``, or give
        kiln.compile real example tensors instead of kiln.Input); bool gets random booleans.
        """
        if high < 1:
            raise ValueError(f"kiln.Input.example_tensor: high must be at least 1, got {high}")
        shape = self.shape_at(which)
        if self.dtype.is_floating_point or self.dtype.is_complex:
            return torch.randn(shape, dtype=self.dtype)
        if self.dtype == torch.bool:
            return torch.randint(0, 2, shape).bool()
        upper = min(high, torch.iinfo(self.dtype).max + 1)
        return torch.randint(0, upper, shape, dtype=self.dtype)

    def to_spec(self) -> dict[str, Any]:
        """The form kiln._C.compile_ts takes."""
        return {
            "min": list(self.min_shape),
            "opt": list(self.opt_shape),
            "max": list(self.max_shape),
            "dtype": self.dtype,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Input):
            return NotImplemented
        return (self.min_shape, self.opt_shape, self.max_shape, self.dtype, self.name) == (
            other.min_shape,
            other.opt_shape,
            other.max_shape,
            other.dtype,
            other.name,
        )

    def __hash__(self) -> int:
        return hash((self.min_shape, self.opt_shape, self.max_shape, self.dtype, self.name))

    def __repr__(self) -> str:
        name = f", name={self.name!r}" if self.name is not None else ""
        if not self.is_dynamic:
            return f"Input(shape={self.opt_shape}, dtype={self.dtype}{name})"
        return (
            f"Input(min_shape={self.min_shape}, opt_shape={self.opt_shape}, "
            f"max_shape={self.max_shape}, dtype={self.dtype}{name})"
        )
