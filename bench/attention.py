"""Kiln's fused attention kernel against PyTorch's scaled_dot_product_attention backends.

Times one attention at the shapes of the benchmark's models (BERT-base, ViT-B/16) and of a causal
decoder and a long sequence, in fp16 on the GPU. Kiln runs an engine that is one Attention layer
(kiln.compile of F.scaled_dot_product_attention); PyTorch runs its flash, memory-efficient and
cuDNN backends. The wall time of a call includes what surrounds the kernel (Kiln's engine copies
its inputs into and its output out of its CUDA graph's buffers), so each row also gives the GPU
time of the attention kernel itself, from the CUDA profiler, and its TFLOP/s (4·B·H·L·S·E, half
of it causal) and the bandwidth of reading Q, K, V and writing O once.

    python bench/attention.py [--shapes bert_b32 vit_b256 ...] [--iters 50] [--out results.md]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import run

logger = logging.getLogger("kiln.bench")


@dataclass(frozen=True)
class Shape:
    batch: int
    heads: int
    queries: int
    keys: int
    head_dim: int
    causal: bool = False

    def flops(self) -> int:
        """Multiply-adds of Q·K^T and P·V, 2 FLOPs each; a causal mask skips about half."""
        full = 4 * self.batch * self.heads * self.queries * self.keys * self.head_dim
        return full // 2 if self.causal else full

    def bytes(self, element_size: int = 2) -> int:
        """Q, K and V read and O written, once each."""
        rows = self.batch * self.heads * (2 * self.queries + 2 * self.keys)
        return rows * self.head_dim * element_size


SHAPES = {
    "bert_b32": Shape(32, 12, 128, 128, 64),
    "bert_b128": Shape(128, 12, 128, 128, 64),
    "vit_b256": Shape(256, 12, 197, 197, 64),
    "gpt2_causal_b8": Shape(8, 12, 1024, 1024, 64, causal=True),
    "long_d128_b4": Shape(4, 16, 4096, 4096, 128),
}

BACKENDS = ["kiln", "flash", "efficient", "cudnn"]


class Attention(torch.nn.Module):
    def __init__(self, causal: bool) -> None:
        super().__init__()
        self.causal = causal

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)


def build(backend: str, shape: Shape, inputs: list[torch.Tensor]):
    """A callable that runs one attention of ``shape`` on ``inputs`` with ``backend``."""
    module = Attention(shape.causal)
    if backend == "kiln":
        import kiln

        return kiln.compile(module, ir="dynamo", inputs=inputs, enabled_precisions={torch.float16},
                            require_full_compilation=True)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    chosen = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
              "cudnn": SDPBackend.CUDNN_ATTENTION}[backend]

    def call(*args: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel(chosen):
            return module(*args)

    return call


def kernel_microseconds(table: list[tuple[str, float, float]]) -> tuple[str, float]:
    """The busiest kernel of a call (not a copy) and its GPU microseconds a call."""
    name, _, micros = next(k for k in table if not run.is_copy(k[0]))
    return name, micros


def measure(shape_name: str, shape: Shape, backends: list[str], iters: int) -> list[dict]:
    generator = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(shape.batch, shape.heads, rows, shape.head_dim, device="cuda",
                           dtype=torch.float16, generator=generator)
               for rows in (shape.queries, shape.keys, shape.keys))
    inputs = [q, k, v]
    with torch.no_grad():
        reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                                   is_causal=shape.causal)
    rows = []
    for backend in backends:
        row: dict = {"shape": shape_name, "backend": backend}
        logger.info("%s %s: building", shape_name, backend)
        try:
            with torch.no_grad():
                call = build(backend, shape, inputs)
                out = call(*inputs)
                torch.cuda.synchronize()
                row["max_err"] = float((out.float() - reference).abs().max()
                                       / reference.abs().max())
                times = run.time_forward(lambda: call(*inputs), warmup=10, iters=iters)
                _, table = run.profile_kernels(lambda: call(*inputs))
        except Exception as error:  # noqa: BLE001 - a backend that cannot run this shape is a row
            row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
            rows.append(row)
            continue
        row["wall_ms"] = statistics.median(times)
        row["kernel"], micros = kernel_microseconds(table)
        row["kernel_us"] = micros
        row["tflops"] = shape.flops() / (micros * 1e-6) / 1e12
        row["tb_per_s"] = shape.bytes() / (micros * 1e-6) / 1e12
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| shape | backend | wall ms | kernel us | kernel TFLOP/s | kernel TB/s | max err "
             "| kernel |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['shape']} | {r['backend']} | failed: {r['error']} | | | | | |")
            continue
        lines.append(f"| {r['shape']} | {r['backend']} | {r['wall_ms']:.3f} | "
                     f"{r['kernel_us']:.1f} | {r['tflops']:.0f} | {r['tb_per_s']:.2f} | "
                     f"{r['max_err']:.1e} | `{r['kernel'][:60]}` |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--backends", nargs="+", default=BACKENDS, choices=BACKENDS)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not torch.cuda.is_available():
        print("bench/attention.py needs a CUDA GPU", file=sys.stderr)
        return 2
    rows = []
    for name in args.shapes:
        rows += measure(name, SHAPES[name], args.backends, args.iters)
    table = f"{torch.cuda.get_device_name()}, fp16\n\n{markdown(rows)}\n"
    print(table)
    if args.out is not None:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
