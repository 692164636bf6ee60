"""What each zoo model's fp16 engine is made of, on any machine: its layers by kind (the shuffles
split into copies and the reshapes that alias their input), and Kiln's error against fp32 eager.
A check of what a builder pass changed across the zoo without a GPU; the engine built on the CPU
backend is the one a GPU runs (same passes, same layouts), only its kernels differ.

    python bench/structure.py --models efficientnet_b0 swin_t maxvit_t
    python bench/structure.py --models all --no-accuracy
"""

from __future__ import annotations

import argparse
import collections
import logging
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo  # noqa: E402  (bench/zoo.py: the models and their inputs)

import kiln  # noqa: E402

log = logging.getLogger("kiln.bench")

# "  12 name: Kind(params)  (inputs) -> (outputs)" in kiln.inspect's layer list.
_LAYER = re.compile(r"^\s+\d+ [^:\n]*: (\w+)\((.*)$", re.M)


def layer_counts(inspected: str) -> collections.Counter:
    """Layers of an engine by kind, from kiln.inspect's text; weights (Constant) left out, and a
    shuffle counted as "Shuffle (reshape)" when it only reshapes (the runtime aliases it) and as
    "Shuffle (copy)" otherwise."""
    counts: collections.Counter = collections.Counter()
    for kind, params in _LAYER.findall(inspected):
        if kind == "Constant":
            continue
        if kind == "Shuffle":
            reshape_only = "firstPermutation=[]," in params and "secondPermutation=[]," in params
            kind = "Shuffle (reshape)" if reshape_only else "Shuffle (copy)"
        counts[kind] += 1
    return counts


def relative_errors(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """Max abs error relative to max |expected|, and the relative L2 error."""
    actual, expected = actual.float(), expected.float()
    scale = expected.abs().max().clamp_min(torch.finfo(torch.float32).tiny)
    max_error = ((actual - expected).abs().max() / scale).item()
    l2 = ((actual - expected).norm() / expected.norm().clamp_min(torch.finfo(torch.float32).tiny)).item()
    return max_error, l2


def inspect_model(name: str, batch: int, accuracy: bool) -> dict:
    """The zoo model's fp16 engine (kiln.compile, default ir) on the CPU: its layer counts and, with
    `accuracy`, its output's errors against fp32 eager on the same inputs."""
    torch.manual_seed(0)
    model = zoo.build(name).eval()
    inputs = zoo.make_inputs(name, batch)
    half_inputs = [x.half() if x.is_floating_point() else x for x in inputs]
    started = time.time()
    with torch.no_grad():
        reference = model(*inputs) if accuracy else None
        compiled = kiln.compile(model.half(), ir="default", inputs=half_inputs,
                                enabled_precisions={torch.half}, device="cpu")
        row = {"model": name, "layers": layer_counts(kiln.inspect(compiled)),
               "ops_in_torch": kiln.summary(compiled)["ops_in_torch"]}
        if accuracy:
            row["max_error"], row["rel_l2"] = relative_errors(compiled(*half_inputs), reference)
    row["seconds"] = time.time() - started
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| model | layers | shuffles that copy | by kind | ops in torch | max error | rel L2 |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        counts = row["layers"]
        kinds = ", ".join(f"{kind} {count}" for kind, count in counts.most_common())
        errors = (f"{row['max_error']:.2e} | {row['rel_l2']:.2e}" if "max_error" in row else "- | -")
        lines.append(f"| {row['model']} | {sum(counts.values())} | {counts['Shuffle (copy)']} | "
                     f"{kinds} | {row['ops_in_torch']} | {errors} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["efficientnet_b0"],
                        help="zoo models, or 'all'")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--no-accuracy", dest="accuracy", action="store_false",
                        help="skip the fp32 eager reference")
    parser.add_argument("--debug", action="store_true", help="Kiln's debug logging")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.debug:
        kiln.set_debug(True)
    names = list(zoo.ZOO) if args.models == ["all"] else args.models
    unknown = [name for name in names if name not in zoo.ZOO]
    if unknown:
        parser.error(f"not in the zoo: {', '.join(unknown)} (bench/zoo.py lists its models)")
    rows = []
    for index, name in enumerate(names, 1):
        log.info("[%d/%d] %s", index, len(names), name)
        rows.append(inspect_model(name, args.batch, args.accuracy))
    print(markdown(rows))


if __name__ == "__main__":
    main()
