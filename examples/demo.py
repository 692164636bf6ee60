"""Compiles the example models with every Kiln front end, checks each against eager PyTorch and
prints what Kiln did and how fast it ran.

    python3 examples/demo.py                      # every model, every path
    python3 examples/demo.py --models small_resnet --paths ts dynamo

Paths: ``kiln.compile(ir="ts")``, ``kiln.compile(ir="dynamo")`` and
``torch.compile(backend="kiln")``. A result counts as equal to eager when its largest absolute
error is at most 1e-4 times the largest absolute output (float32). Exits with 1 when any
compilation fails or any result differs from eager.
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision

import kiln

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models  # noqa: E402  (examples/models.py)

TOLERANCE = 1e-4
PATHS = ("ts", "dynamo", "torch.compile")
PATH_LABELS = {
    "ts": 'kiln.compile(ir="ts")',
    "dynamo": 'kiln.compile(ir="dynamo")',
    "torch.compile": 'torch.compile(backend="kiln")',
}


def _small_resnet() -> tuple[torch.nn.Module, torch.Tensor]:
    return models.SmallResNet(), torch.randn(2, 3, 64, 64)


def _encoder(attention: str) -> Callable[[], tuple[torch.nn.Module, torch.Tensor]]:
    def make() -> tuple[torch.nn.Module, torch.Tensor]:
        model = models.SmallTransformerEncoder(attention=attention)
        return model, torch.randn(2, 16, model.d_model)

    return make


def _resnet18() -> tuple[torch.nn.Module, torch.Tensor]:
    return torchvision.models.resnet18(weights=None), torch.randn(1, 3, 224, 224)


MODELS: dict[str, Callable[[], tuple[torch.nn.Module, torch.Tensor]]] = {
    "small_resnet": _small_resnet,
    "encoder_matmul_softmax": _encoder("manual"),
    "encoder_sdpa": _encoder("sdpa"),
    "resnet18": _resnet18,
}


@dataclass
class Row:
    model: str
    path: str
    engines: int | None = None
    ops_in_kiln: int | None = None
    ops_in_torch: int | None = None
    relative_error: float | None = None
    compile_s: float | None = None
    eager_ms: float | None = None
    kiln_ms: float | None = None
    error: str | None = None

    @property
    def equal(self) -> bool:
        return self.error is None and self.relative_error is not None and self.relative_error <= TOLERANCE


class SummaryCollector(logging.Handler):
    """Collects the compile summaries Kiln logs. torch.compile returns no module to ask
    kiln.summary about, and compiles one Kiln graph per graph that dynamo captures."""

    PATTERN = re.compile(r"(\d+) op\(s\) in (\d+) engine\(s\), (\d+) op\(s\) left to PyTorch")

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.summaries: list[dict[str, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = self.PATTERN.search(record.getMessage())
        if match:
            self.summaries.append(
                {
                    "ops_in_kiln": int(match.group(1)),
                    "engines": int(match.group(2)),
                    "ops_in_torch": int(match.group(3)),
                }
            )


def time_ms(function: Callable[[], object], *, runs: int, budget_s: float) -> float:
    """The median time of one call, in milliseconds, after one warm-up call. Stops early, after
    at least three calls, once ``budget_s`` is spent (the CPU backend's kernels are plain)."""
    function()
    times = []
    started = time.perf_counter()
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
        if len(times) >= 3 and time.perf_counter() - started > budget_s:
            break
    return statistics.median(times) * 1e3


def compile_model(path: str, model: torch.nn.Module, example: torch.Tensor) -> torch.nn.Module:
    if path == "torch.compile":
        torch._dynamo.reset()
        return torch.compile(model, backend="kiln")
    return kiln.compile(model, ir=path, inputs=[kiln.Input.from_tensor(example)])


def run_one(name: str, path: str, args: argparse.Namespace) -> Row:
    row = Row(model=name, path=path)
    torch.manual_seed(0)
    model, example = MODELS[name]()
    model.eval()
    collector = SummaryCollector()
    kiln_logger = logging.getLogger("kiln")
    kiln_logger.addHandler(collector)
    previous_level = kiln_logger.level
    if not kiln_logger.isEnabledFor(logging.INFO):
        kiln_logger.setLevel(logging.INFO)
    try:
        with torch.no_grad():
            expected = model(example)
            start = time.perf_counter()
            compiled = compile_model(path, model, example)
            actual = compiled(example)  # torch.compile compiles on the first call
            row.compile_s = time.perf_counter() - start
            scale = expected.abs().max().item()
            row.relative_error = (actual - expected).abs().max().item() / scale
            row.eager_ms = time_ms(lambda: model(example), runs=args.runs, budget_s=args.budget)
            row.kiln_ms = time_ms(lambda: compiled(example), runs=args.runs, budget_s=args.budget)
        if path == "torch.compile":
            summaries = collector.summaries
        else:
            summaries = [kiln.summary(compiled)]
        if summaries:
            row.engines = sum(s["engines"] for s in summaries)
            row.ops_in_kiln = sum(s["ops_in_kiln"] for s in summaries)
            row.ops_in_torch = sum(s["ops_in_torch"] for s in summaries)
    except Exception as error:  # noqa: BLE001 - the demo reports every failure in its table
        row.error = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    finally:
        kiln_logger.removeHandler(collector)
        kiln_logger.setLevel(previous_level)
        if path == "torch.compile":
            torch._dynamo.reset()
    return row


def _cell(value: object, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def print_table(rows: list[Row]) -> None:
    header = [
        "model",
        "path",
        "engines",
        "ops Kiln/PyTorch",
        "max err / max|out|",
        "eager ms",
        "Kiln ms",
        "speedup",
        "compile s",
    ]
    table = [header]
    for row in rows:
        if row.error is not None:
            table.append([row.model, PATH_LABELS[row.path], "FAILED", row.error, "", "", "", "", ""])
            continue
        ops = f"{_cell(row.ops_in_kiln)}/{_cell(row.ops_in_torch)}"
        error = _cell(row.relative_error, "{:.1e}") + ("" if row.equal else " (NOT EQUAL)")
        speedup = (
            f"{row.eager_ms / row.kiln_ms:.2f}x" if row.eager_ms is not None and row.kiln_ms else "-"
        )
        table.append(
            [
                row.model,
                PATH_LABELS[row.path],
                _cell(row.engines),
                ops,
                error,
                _cell(row.eager_ms, "{:.2f}"),
                _cell(row.kiln_ms, "{:.2f}"),
                speedup,
                _cell(row.compile_s, "{:.1f}"),
            ]
        )
    widths = [max(len(line[i]) for line in table if len(line[i]) < 60) for i in range(len(header))]
    for i, line in enumerate(table):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * width for width in widths))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--runs", type=int, default=20, help="timed calls per model and path (at most)")
    parser.add_argument(
        "--budget", type=float, default=2.0, help="seconds of timed calls per model and path (about)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads for eager PyTorch (default 1: Kiln's CPU kernels run on one thread)",
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    torch.set_num_threads(args.threads)
    # torch.export's own deprecation notice, not about this program.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)

    # kiln.compile builds for its default device, the CPU, whose kernels are plain reference code:
    # the times show what runs where, not how fast Kiln is on a GPU.
    print(
        f"Kiln {kiln.__version__}, torch {torch.__version__}: Kiln's CPU backend, float32; "
        f"eager PyTorch on {torch.get_num_threads()} thread(s), Kiln on one"
    )
    rows = []
    for name in args.models:
        for path in args.paths:
            print(f"  compiling {name} with {PATH_LABELS[path]} ...", flush=True)
            rows.append(run_one(name, path, args))
    print()
    print_table(rows)
    failed = [row for row in rows if not row.equal]
    print()
    if failed:
        print(f"{len(failed)} of {len(rows)} result(s) failed or differ from eager (tolerance {TOLERANCE:g}).")
        return 1
    print(f"All {len(rows)} results equal eager within {TOLERANCE:g} x max |output|.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
