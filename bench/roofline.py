"""Where each benchmark row stands against the H100/H200 fp16 tensor-core roofline.

A forward's work is its matmul, convolution and attention FLOPs (2 per multiply-add), counted by
``torch.utils.flop_counter`` on one sample with attention decomposed into its two batched matmuls,
so that every model is counted the same way whatever kernel runs it. A row's achieved TFLOP/s is
that work times its throughput; the roofline is the fp16 dense GEMM rate measured on the H100
(about 750 TFLOP/s; the H200 is the same GH100 chip with faster memory).

    python bench/roofline.py bench/results/2026-12-04-NVIDIA_H200.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import zoo

MEASURED_FP16_GEMM_TFLOPS = 750.0


def count_flops(model: torch.nn.Module, inputs: Sequence[torch.Tensor]) -> int:
    """Matmul, convolution and attention FLOPs of ``model``'s forward on ``inputs``."""
    # nn.MultiheadAttention's fast path is one fused op that the counter does not see.
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as count:
            model(*inputs)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
    return count.get_total_flops()


@cache
def flops_per_sample(model_name: str) -> int:
    """Matmul, convolution and attention FLOPs of one sample's forward (batch 1) of a zoo model."""
    return count_flops(zoo.build(model_name), zoo.make_inputs(model_name, 1))


def achieved_tflops(row: dict) -> float | None:
    """The row's useful TFLOP/s, or None for a row that did not time or whose FLOPs could not be
    counted. The benchmark stores each row's FLOPs a sample; older rows are counted here."""
    if "throughput" not in row:
        return None
    flops = row["flops_per_sample"] if "flops_per_sample" in row else flops_per_sample(row["model"])
    return None if flops is None else flops * row["throughput"] / 1e12


def markdown(rows: list[dict]) -> str:
    lines = ["| model | GFLOP/sample | batch | dtype | backend | median ms | TFLOP/s | of 750 |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        tflops = achieved_tflops(row)
        if tflops is None:
            continue
        flops = row["flops_per_sample"] if "flops_per_sample" in row else flops_per_sample(row["model"])
        lines.append(
            f"| {row['model']} | {flops / 1e9:.2f} | {row['batch']} | "
            f"{row['dtype']} | {row['backend']} | {row['median_ms']:.3f} | {tflops:.0f} | "
            f"{tflops / MEASURED_FP16_GEMM_TFLOPS:.0%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a bench/results/*.jsonl file")
    parser.add_argument("--backends", nargs="+", default=None,
                        help="only these backends (default: all in the file)")
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    if args.backends:
        rows = [r for r in rows if r["backend"] in args.backends]
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
