"""The ``kiln`` command line: build, run and inspect compiled modules.

    kiln build --model resnet18 --input-shape 1,3,224,224 --output resnet18.ts
    kiln run resnet18.ts --shape 1,3,224,224
    kiln inspect resnet18.ts
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import torch


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is ints separated by commas (1,3,224,224), got {text!r}")
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"a shape needs positive dims, got {text!r}")
    return dims


def _dtype(text: str) -> torch.dtype:
    dtype = getattr(torch, text, None)
    if not isinstance(dtype, torch.dtype):
        raise argparse.ArgumentTypeError(f"not a torch dtype: {text!r} (try float32, int64)")
    return dtype


def _build(args: argparse.Namespace) -> int:
    import torchvision

    import kiln

    try:
        builder = torchvision.models.get_model_builder(args.model)
    except ValueError:
        print(f"kiln build: unknown torchvision model {args.model!r}", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    model = builder(weights=None).eval()
    if args.min_shape or args.max_shape:
        spec = kiln.Input(
            min_shape=args.min_shape or args.input_shape,
            opt_shape=args.input_shape,
            max_shape=args.max_shape or args.input_shape,
        )
    else:
        spec = kiln.Input(shape=args.input_shape)
    start = time.perf_counter()
    compiled = kiln.compile(
        model,
        ir=args.ir,
        inputs=[spec],
        min_block_size=args.min_block_size,
        torch_executed_ops=args.torch_executed_op,
        debug=args.debug,
    )
    elapsed = time.perf_counter() - start
    kiln.save(compiled, args.output, inputs=[spec])
    summary = kiln.summary(compiled)
    print(
        f"{args.model}: {summary['ops_in_kiln']} op(s) in {summary['engines']} engine(s), "
        f"{summary['ops_in_torch']} op(s) left to PyTorch; compiled in {elapsed:.1f} s"
    )
    for op, reason in summary["fallback"]:
        print(f"  {op}: {reason}")
    print(f"saved {args.output}")
    return 0


def _run(args: argparse.Namespace) -> int:
    import kiln

    module = kiln.load(args.path)
    shapes = args.shape or []
    if not shapes:
        print("kiln run: give the input shapes with --shape, one per input", file=sys.stderr)
        return 2
    dtypes = args.dtype or [torch.float32]
    if len(dtypes) not in (1, len(shapes)):
        print("kiln run: give one --dtype, or one per --shape", file=sys.stderr)
        return 2
    dtypes = dtypes * len(shapes) if len(dtypes) == 1 else dtypes
    inputs = [kiln.Input(shape=s, dtype=d).example_tensor() for s, d in zip(shapes, dtypes)]
    with torch.no_grad():
        outputs = module(*inputs)
        start = time.perf_counter()
        for _ in range(args.iterations):
            outputs = module(*inputs)
        elapsed = (time.perf_counter() - start) / args.iterations
    flat = outputs if isinstance(outputs, (tuple, list)) else [outputs]
    for i, out in enumerate(flat):
        if isinstance(out, torch.Tensor):
            print(f"output {i}: shape {tuple(out.shape)}, dtype {out.dtype}")
        else:
            print(f"output {i}: {type(out).__name__}")
    print(f"{elapsed * 1e3:.3f} ms per run (mean of {args.iterations})")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    import kiln

    print(kiln.inspect(kiln.load(args.path)), end="")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiln", description="Kiln: PyTorch inference engines.")
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="compile a torchvision model to a TorchScript file")
    build.add_argument("--model", required=True, help="torchvision model name, e.g. resnet18")
    build.add_argument("--input-shape", type=_shape, required=True, help="e.g. 1,3,224,224 (opt shape)")
    build.add_argument("--min-shape", type=_shape, help="smallest input shape (dynamic input)")
    build.add_argument("--max-shape", type=_shape, help="largest input shape (dynamic input)")
    build.add_argument("--ir", choices=["ts", "dynamo"], default="ts")
    build.add_argument("--output", required=True, help="where to write the .ts file")
    build.add_argument("--min-block-size", type=int, default=3)
    build.add_argument("--torch-executed-op", action="append", default=[], help="e.g. aten::relu")
    build.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    build.add_argument("--debug", action="store_true")
    build.set_defaults(handler=_build)

    run = commands.add_parser("run", help="run a saved module on random inputs")
    run.add_argument("path")
    run.add_argument("--shape", type=_shape, action="append", help="an input shape; repeat per input")
    run.add_argument("--dtype", type=_dtype, action="append", help="an input dtype (default float32)")
    run.add_argument("--iterations", type=int, default=10)
    run.set_defaults(handler=_run)

    inspect = commands.add_parser("inspect", help="print the engines of a saved module")
    inspect.add_argument("path")
    inspect.set_defaults(handler=_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "iterations", 1) < 1:
        print("kiln run: --iterations must be at least 1", file=sys.stderr)
        return 2
    try:
        return args.handler(args)
    except (FileNotFoundError, ValueError, TypeError, NotImplementedError, RuntimeError) as error:
        print(f"kiln {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
