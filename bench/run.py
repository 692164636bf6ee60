"""Kiln's benchmark: ResNet-50, BERT-base and ViT-B/16 against eager and torch.compile.

One process, one run: every backend is timed on the same GPU, the same inputs and the same
weights, so the ratios are fair. For each model, batch and dtype it reports median and p90
latency (CUDA events around each forward, after warm-up), throughput, useful TFLOP/s (matmul,
convolution and attention work, as bench/roofline.py counts it), build time and the max error
against eager fp32, writes one JSON object a row to bench/results/<date>-<gpu>.jsonl (and, while
it runs, each row as it is measured to <date>-<gpu>.partial.jsonl) and prints a markdown table
(also written next to it as .md).

    python bench/run.py                       # everything
    python bench/run.py --models resnet50 --batches 1 32 --dtypes fp16 --backends eager kiln
    python bench/run.py ... --kernels         # also profile the kernels of each forward

With --kernels, each row also gets ``kernels_per_forward`` (kernels launched by one forward, as
the CUDA profiler sees them, CUDA-graph replays included), and the busiest kernels of each row are
written to <date>-<gpu>.kernels.md.

max-autotune compiles for minutes per model and batch, longer than one call to the GPU machine
may take for all of them. So a run can be put together from parts measured on one machine at one
commit: ``--compile-only`` builds each backend and runs it once, filling torch.compile's caches
(TORCHINDUCTOR_CACHE_DIR) so that a later timed call compiles from cache, and ``--merge`` joins
the parts' .jsonl files into one table with every ratio taken across all of them:

    python bench/run.py --models resnet50 --batches 256 --backends inductor-max-autotune --compile-only
    python bench/run.py --merge part1/DATE-GPU.jsonl part2/DATE-GPU.jsonl   # to bench/results
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import roofline

logger = logging.getLogger("kiln.bench")

BACKENDS = ["eager", "inductor", "inductor-max-autotune", "inductor-reduce-overhead", "kiln"]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
BATCHES = {"resnet50": [1, 32, 256], "bert_base": [1, 32, 128], "vit_b_16": [1, 32, 256]}
RESULTS = Path(__file__).resolve().parent / "results"


class BertLastHiddenState(torch.nn.Module):
    """HF BertModel, bert-base config, random init, returning the last hidden state."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        self.bert = BertModel(BertConfig(), add_pooling_layer=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids).last_hidden_state


def make_model(name: str) -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    if name == "resnet50":
        return torchvision.models.resnet50(weights=None)
    if name == "vit_b_16":
        model = torchvision.models.vit_b_16(weights=None)
        # torchvision zero-initializes the classifier, which would make every output (and the
        # max error) zero.
        torch.nn.init.normal_(model.heads.head.weight, std=0.02)
        return model
    if name == "bert_base":
        return BertLastHiddenState()
    raise ValueError(f"unknown model {name!r}")


def make_input(name: str, batch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(batch)
    if name == "bert_base":
        return torch.randint(0, 30522, (batch, 128), generator=generator)
    return torch.randn(batch, 3, 224, 224, generator=generator)


def time_forward(fn: Callable[[], torch.Tensor], *, warmup: int, iters: int) -> list[float]:
    """Per-iteration milliseconds, each between CUDA events on the current stream."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def profile_kernels(fn: Callable[[], torch.Tensor], *, forwards: int = 5
                    ) -> tuple[float, list[tuple[str, float, float]]]:
    """Kernels per forward, and (name, launches per forward, GPU microseconds per forward) of every
    kernel and memory copy or set, busiest first, from the CUDA profiler over ``forwards``
    forwards."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(forwards):
            fn()
        torch.cuda.synchronize()
    work: dict[str, list[float]] = {}
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        entry = work.setdefault(event.name, [0.0, 0.0])
        entry[0] += 1
        entry[1] += event.device_time_total
    table = sorted(((name, count / forwards, micros / forwards)
                    for name, (count, micros) in work.items()), key=lambda k: -k[2])
    kernels = sum(k[1] for k in table if not is_copy(k[0]))
    return kernels, table


def is_copy(name: str) -> bool:
    return "memcpy" in name.lower() or "memset" in name.lower()


def kernels_markdown(title: str, table: list[tuple[str, float, float]], top: int = 15) -> str:
    total = sum(k[2] for k in table) or 1.0
    copies = sum(k[1] for k in table if is_copy(k[0]))
    lines = [f"### {title}", "", f"{sum(k[1] for k in table) - copies:.0f} kernels, "
             f"{copies:.0f} memory copies and sets, {total / 1000:.3f} ms of GPU time a forward",
             "",
             "| kernel | per forward | us per forward | share |", "|---|---|---|---|"]
    for name, count, micros in table[:top]:
        lines.append(f"| `{name[:110]}` | {count:.0f} | {micros:.1f} | {100 * micros / total:.1f}% |")
    return "\n".join(lines) + "\n\n"


def build(backend: str, model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype):
    if backend == "eager":
        return model
    if backend == "kiln":
        import kiln  # only this backend needs Kiln built, so the others can run without it

        return kiln.compile(model, ir="dynamo", inputs=[x], enabled_precisions={dtype})
    torch._dynamo.reset()
    mode = {"inductor": None, "inductor-max-autotune": "max-autotune",
            "inductor-reduce-overhead": "reduce-overhead"}[backend]
    return torch.compile(model, mode=mode)


def run(args: argparse.Namespace, partial: Path, kernels_file: Path | None) -> list[dict]:
    """Times every (model, batch, dtype, backend); each row also goes to ``partial`` as soon as it
    is measured, so that a run stopped early keeps what it measured."""
    gpu = torch.cuda.get_device_name()
    rows = []

    def keep(row: dict) -> None:
        rows.append(row)
        with open(partial, "a") as f:
            f.write(json.dumps(row) + "\n")

    for name in args.models:
        base = make_model(name).eval().cuda()
        for batch in [b for b in BATCHES[name] if not args.batches or b in args.batches]:
            x32 = make_input(name, batch).cuda()
            with torch.no_grad():
                reference = base.float()(x32).float()
            for dtype_name in args.dtypes:
                dtype = DTYPES[dtype_name]
                model = make_model(name).eval().cuda().to(dtype)
                model.load_state_dict(base.state_dict())
                x = x32.to(dtype) if x32.is_floating_point() else x32
                for backend in args.backends:
                    row = {"model": name, "batch": batch, "dtype": dtype_name, "backend": backend,
                           "gpu": gpu}
                    logger.info("%s batch %d %s %s: building", name, batch, dtype_name, backend)
                    try:
                        with torch.no_grad():
                            started = time.perf_counter()
                            compiled = build(backend, model, x, dtype)
                            out = compiled(x)  # torch.compile builds on the first call
                            torch.cuda.synchronize()
                            row["build_s"] = round(time.perf_counter() - started, 2)
                            row["max_err"] = float(
                                (out.float() - reference).abs().max() / reference.abs().max())
                            if args.compile_only:
                                logger.info("%s batch %d %s %s: built in %.1f s", name, batch,
                                            dtype_name, backend, row["build_s"])
                                del compiled
                                continue
                            times = time_forward(lambda: compiled(x), warmup=args.warmup,
                                                 iters=args.iters)
                    except Exception as error:  # noqa: BLE001 - a failed backend is a row too
                        logger.exception("%s %s failed", name, backend)
                        row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
                        keep(row)
                        continue
                    times.sort()
                    row["median_ms"] = round(statistics.median(times), 4)
                    row["p90_ms"] = round(times[int(0.9 * (len(times) - 1))], 4)
                    row["throughput"] = round(batch / (row["median_ms"] / 1000.0), 1)
                    row["tflops"] = round(roofline.achieved_tflops(row), 1)
                    if backend == "kiln":
                        row["kiln_ops_in_torch"] = sys.modules["kiln"].summary(compiled)["ops_in_torch"]
                    if kernels_file is not None:
                        try:
                            with torch.no_grad():
                                per_forward, table = profile_kernels(lambda: compiled(x))
                        except Exception:  # noqa: BLE001 - the timing stands without a profile
                            logger.exception("%s %s: profiling the kernels failed", name, backend)
                        else:
                            row["kernels_per_forward"] = round(per_forward, 1)
                            with open(kernels_file, "a") as f:
                                f.write(kernels_markdown(
                                    f"{name} batch {batch} {dtype_name} {backend}", table))
                    logger.info("%s", row)
                    keep(row)
                    del compiled
                    torch.cuda.empty_cache()
    add_ratios(rows)
    return rows


def merge(paths: list[Path]) -> list[dict]:
    """The rows of several parts of one run; a (model, batch, dtype, backend) measured twice keeps
    its last measurement, and the ratios are taken again across all parts."""
    by_key: dict[tuple, dict] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            for key in ("speedup_vs_eager", "speedup_vs_best_inductor"):
                row.pop(key, None)
            by_key[(row["model"], row["batch"], row["dtype"], row["backend"])] = row
    gpus = {row["gpu"] for row in by_key.values()}
    if len(gpus) > 1:
        raise ValueError(f"the parts were measured on different GPUs ({sorted(gpus)}); "
                         "merge only parts of one run on one machine")
    order = {name: i for i, name in enumerate(BACKENDS)}
    rows = sorted(by_key.values(), key=lambda r: (list(BATCHES).index(r["model"]), r["batch"],
                                                  r["dtype"], order[r["backend"]]))
    add_ratios(rows)
    return rows


def write_results(rows: list[dict], stem: Path) -> str:
    """Writes <stem>.jsonl and <stem>.md and returns the markdown table."""
    with open(stem.with_suffix(".jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    table = markdown(rows)
    stem.with_suffix(".md").write_text(table + "\n")
    return table


def add_ratios(rows: list[dict]) -> None:
    """Speed-up of each row over eager and over the best torch.compile mode of its group."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["batch"], row["dtype"]), []).append(row)
    for group in groups.values():
        timed = {r["backend"]: r["median_ms"] for r in group if "median_ms" in r}
        inductor = [t for b, t in timed.items() if b.startswith("inductor")]
        for row in group:
            if "median_ms" not in row:
                continue
            if "eager" in timed:
                row["speedup_vs_eager"] = round(timed["eager"] / row["median_ms"], 3)
            if inductor:
                row["speedup_vs_best_inductor"] = round(min(inductor) / row["median_ms"], 3)


def ratio(row: dict, key: str) -> str:
    """A speed-up as "1.23x", or "n/a" when the run timed no backend to compare with."""
    return f"{row[key]:.2f}x" if key in row else "n/a"


def markdown(rows: list[dict]) -> str:
    lines = ["| model | batch | dtype | backend | median ms | p90 ms | throughput/s | vs eager | "
             "vs best inductor | TFLOP/s | build s | max err | kernels/forward |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['batch']} | {r['dtype']} | {r['backend']} | "
                         f"failed: {r['error'][:80]} | | | | | | | | |")
            continue
        # Measured with --kernels only.
        kernels = f"{r['kernels_per_forward']:g}" if "kernels_per_forward" in r else "n/a"
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['dtype']} | {r['backend']} | {r['median_ms']:.3f} | "
            f"{r['p90_ms']:.3f} | {r['throughput']:.0f} | {ratio(r, 'speedup_vs_eager')} | "
            f"{ratio(r, 'speedup_vs_best_inductor')} | {r['tflops']:.0f} | {r['build_s']} | "
            f"{r['max_err']:.1e} | {kernels} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(BATCHES), choices=list(BATCHES))
    parser.add_argument("--batches", nargs="+", type=int, default=[])
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--backends", nargs="+", default=BACKENDS, choices=BACKENDS)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--kernels", action="store_true",
                        help="profile each row's kernels (kernels per forward, busiest kernels)")
    parser.add_argument("--compile-only", action="store_true",
                        help="build each backend and run it once, to fill torch.compile's "
                             "caches; time nothing and write no results")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="JSONL",
                        help="join the .jsonl parts of one run into <out>/<the first part's "
                             "name> (.jsonl and .md); needs no GPU")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.merge:
        args.out.mkdir(parents=True, exist_ok=True)
        print(write_results(merge(args.merge), args.out / args.merge[0].name.split(".")[0]))
        return 0
    if not torch.cuda.is_available():
        print("bench/run.py needs a CUDA GPU", file=sys.stderr)
        return 2
    gpu = torch.cuda.get_device_name().replace(" ", "_")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{datetime.date.today().isoformat()}-{gpu}"
    partial = stem.with_suffix(".partial.jsonl")
    partial.unlink(missing_ok=True)
    kernels_file = stem.with_suffix(".kernels.md") if args.kernels else None
    if kernels_file is not None:
        kernels_file.unlink(missing_ok=True)
    rows = run(args, partial, kernels_file)
    partial.unlink(missing_ok=True)
    if args.compile_only:
        failed = [r for r in rows if "error" in r]
        for row in failed:
            print(f"{row['model']} batch {row['batch']} {row['dtype']} {row['backend']}: "
                  f"{row['error']}")
        return 1 if failed else 0
    print(write_results(rows, stem))
    return 0


if __name__ == "__main__":
    sys.exit(main())
