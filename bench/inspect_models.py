"""Writes kiln.inspect's output, with per-layer times, for the benchmark's models: what each
engine fused into what, each layer's precision and kernel, and where the time goes.

    python bench/inspect_models.py --models resnet50 bert_base --batch 32 --dtype fp16 --out DIR

One file a model, DIR/inspect-<model>-b<batch>-<dtype>.txt. Needs a CUDA GPU for numbers that mean
anything (on the CPU backend the times are the reference kernels').
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (bench/run.py: the benchmark's models and dtypes)
import zoo  # noqa: E402  (bench/zoo.py: the models and their inputs)

import kiln  # noqa: E402

log = logging.getLogger("kiln.bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=run.CLASSIC, choices=list(zoo.ZOO))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtype", default="fp16", choices=list(run.DTYPES))
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = run.DTYPES[args.dtype]
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        log.info("inspecting %s, batch %d, %s, on %s", name, args.batch, args.dtype, device)
        model = zoo.build(name).to(device, dtype)
        inputs = [x.to(device, dtype) if x.is_floating_point() else x.to(device)
                  for x in zoo.make_inputs(name, args.batch)]
        with torch.no_grad():
            compiled = kiln.compile(model, ir="dynamo", inputs=inputs, enabled_precisions={dtype})
            text = kiln.inspect(compiled, profile=True, inputs=inputs, iters=args.iters)
        path = args.out / f"inspect-{name}-b{args.batch}-{args.dtype}.txt"
        path.write_text(text)
        log.info("wrote %s (%d lines)", path, text.count("\n"))


if __name__ == "__main__":
    main()
