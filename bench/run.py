"""Kiln's benchmark: the model zoo (bench/zoo.py) against eager and torch.compile.

ResNet-50, BERT-base and ViT-B/16 by default, or any of the zoo's 42 models.

One process, one run: every backend is timed on the same GPU, the same inputs and the same
weights, so the ratios are fair. For each model, batch and dtype it reports median and p90
latency (CUDA events around each forward, after warm-up), throughput, useful TFLOP/s (matmul,
convolution and attention work, as bench/roofline.py counts it), build time and the error against
fp32 eager, writes one JSON object a row to bench/results/<date>-<gpu>.jsonl (and, while it runs,
each row as it is measured to <date>-<gpu>.partial.jsonl) and prints a markdown table (also
written next to it as .md, and the zoo's table, one line a model and batch, as .zoo.md).

    python bench/run.py                       # ResNet-50, BERT-base, ViT-B/16
    python bench/run.py --models resnet50 --batches 1 32 --dtypes fp16 --backends eager kiln
    python bench/run.py --zoo --part 2/6 --dtypes fp16 --layers   # the zoo's second sixth
    python bench/run.py ... --kernels         # also profile the kernels of each forward

A model or backend that fails is a row with its error, not the end of the run; ``--budget-s``
starts no new model and batch after that many seconds, so that a run inside a time limit ends
with its results written. With ``--layers``, each Kiln row also gets its slowest layer's kind and
share of the engines' time and each layer kind's share (kiln.profile).

Accuracy: every row has the error of its output against fp32 eager (``max_err``, max |out - ref|
over max |ref|, and ``rel_l2``, ||out - ref|| over ||ref||). The reference runs the row's own
weights and inputs (rounded to fp16 for an fp16 row) in fp32 without TF32, so that only the
arithmetic differs. Random weights can overflow fp16 where trained ones do not; when fp16 eager is
not finite or its error is over EAGER_TOLERANCE, the model is built again with its matrices and
kernels scaled down (zoo.scale_weights, halved up to MAX_WEIGHT_HALVINGS times, ``weight_scale`` in
the row) until fp16 eager is in range. A Kiln row whose ``rel_l2`` is over its tolerance (the
larger of KILN_TOLERANCE and KILN_TOLERANCE_VS_EAGER times fp16 eager's own) is flagged.

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
    python bench/run.py --merge parts/*.jsonl --readme   # and the zoo's table into README.md
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import logging
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

import roofline
import zoo

if TYPE_CHECKING:
    from kiln.inspect import Profile

logger = logging.getLogger("kiln.bench")

BACKENDS = ["eager", "inductor", "inductor-max-autotune", "inductor-reduce-overhead", "kiln"]
# The peers' names in the zoo's table.
PEER_MODES = {"eager": "eager", "inductor": "inductor", "inductor-max-autotune": "max-autotune",
              "inductor-reduce-overhead": "reduce-overhead"}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
CLASSIC = ["resnet50", "bert_base", "vit_b_16"]  # what a run without --models times
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
ZOO_TABLE_MARKERS = ("<!-- zoo-table:start -->", "<!-- zoo-table:end -->")

# fp16 eager's rel_l2 against fp32 eager beyond which the weights are scaled down: random weights
# that overflow give inf, NaN or errors near 1; in range, fp16 eager's error is 1e-4 to 1e-2.
EAGER_TOLERANCE = 0.1
MAX_WEIGHT_HALVINGS = 4
# A Kiln row is flagged when its rel_l2 is over the larger of these: a floor, and a multiple of
# fp16 eager's own error (random networks amplify rounding, deep ones 5 to 50 times).
KILN_TOLERANCE = 2e-2
KILN_TOLERANCE_VS_EAGER = 3.0


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


def build(backend: str, model: torch.nn.Module, inputs: Sequence[torch.Tensor],
          dtype: torch.dtype) -> Callable[..., torch.Tensor]:
    if backend == "eager":
        return model
    if backend == "kiln":
        import kiln  # only this backend needs Kiln built, so the others can run without it

        return kiln.compile(model, ir="default", inputs=list(inputs), enabled_precisions={dtype})
    torch._dynamo.reset()
    mode = {"inductor": None, "inductor-max-autotune": "max-autotune",
            "inductor-reduce-overhead": "reduce-overhead"}[backend]
    return torch.compile(model, mode=mode)


def errors(out: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """max |out - ref| / max |ref| and ||out - ref|| / ||ref|| (NaN where ``out`` is not finite)."""
    diff = out.float() - reference
    return {"max_err": float(diff.abs().max() / reference.abs().max()),
            "rel_l2": float(diff.norm() / reference.norm())}


def kiln_tolerance(eager_rel_l2: float | None) -> float:
    """The rel_l2 over which a Kiln row is flagged, given fp16 eager's own (None: not measured or
    not finite)."""
    if eager_rel_l2 is None or not math.isfinite(eager_rel_l2):
        return KILN_TOLERANCE
    return max(KILN_TOLERANCE, KILN_TOLERANCE_VS_EAGER * eager_rel_l2)


@dataclass
class Prepared:
    """A model and its inputs at one batch and dtype on the device, and fp32 eager's output."""

    model: torch.nn.Module
    inputs: list[torch.Tensor]
    reference: torch.Tensor
    weight_scale: float
    eager_rel_l2: float | None  # fp16 eager's error; None for an fp32 row


def prepare(name: str, batch: int, dtype: torch.dtype, built: dict[float, torch.nn.Module],
            device: str = "cuda") -> Prepared:
    """Moves zoo model ``name`` to ``device`` in ``dtype`` and computes the reference: the same
    weights and inputs (so rounded to ``dtype``) run in fp32 without TF32. Below fp32, when fp16
    eager is not finite or off by more than EAGER_TOLERANCE, the weights are scaled down (see the
    module's docstring). ``built`` caches the CPU models by weight scale."""
    cpu_inputs = zoo.make_inputs(name, batch)
    scale = 1.0
    for halvings in range(MAX_WEIGHT_HALVINGS + 1):
        if scale not in built:
            built[scale] = zoo.build(name, weight_scale=scale)
        model = copy.deepcopy(built[scale]).to(device, dtype)
        inputs = [x.to(device, dtype) if x.is_floating_point() else x.to(device)
                  for x in cpu_inputs]
        with torch.no_grad(), fp32_without_tf32():
            reference = copy.deepcopy(model).float()(
                *[x.float() if x.is_floating_point() else x for x in inputs]).float()
        if dtype == torch.float32:
            return Prepared(model, inputs, reference, scale, None)
        with torch.no_grad():
            eager_rel_l2 = errors(model(*inputs), reference)["rel_l2"]
        if math.isfinite(eager_rel_l2) and eager_rel_l2 <= EAGER_TOLERANCE:
            break
        if halvings == MAX_WEIGHT_HALVINGS:
            logger.warning("%s batch %d: eager's error is %.3g with the weights scaled by %g; "
                           "the rows keep it", name, batch, eager_rel_l2, scale)
            break
        logger.info("%s batch %d: eager's error is %.3g; scaling the weights by %g", name, batch,
                    eager_rel_l2, scale / 2)
        scale /= 2
    return Prepared(model, inputs, reference, scale,
                    eager_rel_l2 if math.isfinite(eager_rel_l2) else None)


@contextlib.contextmanager
def fp32_without_tf32() -> Iterator[None]:
    """fp32 convolutions and matmuls that do not round to TF32."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def slowest_layer(profile: Profile) -> dict | None:
    """The kind, name and share of the engines' layer time of the slowest layer in a
    kiln.profile result; None when no engine ran."""
    layers = [layer for engine in profile.engines for layer in engine.layers]
    if not layers:
        return None
    total = sum(layer.milliseconds for layer in layers)
    slowest = max(layers, key=lambda layer: layer.milliseconds)
    return {"kind": slowest.kind, "name": slowest.name,
            "share": round(slowest.milliseconds / total, 3) if total > 0 else 0.0}


def time_by_kind(profile: Profile) -> dict[str, float]:
    """Each layer kind's share of the engines' layer time in a kiln.profile result, largest
    first: where a model's time goes when no one layer dominates."""
    totals: dict[str, float] = {}
    for engine in profile.engines:
        for layer in engine.layers:
            totals[layer.kind] = totals.get(layer.kind, 0.0) + layer.milliseconds
    whole = sum(totals.values()) or 1.0
    return {kind: round(ms / whole, 3) for kind, ms in sorted(totals.items(), key=lambda k: -k[1])}


def git_commit() -> str | None:
    """The checkout's commit, when ROOT is a git checkout's top. A copy of the tree inside another
    checkout (a snapshot carried to the GPU machine) has no commit of its own: git would answer
    with the enclosing checkout's."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout.strip()
    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != Path(ROOT).resolve():
            return None
        return git("rev-parse", "--short", "HEAD") or None
    except (OSError, subprocess.CalledProcessError):
        return None


def error_text(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300] if lines else ''}"


def batches_of(name: str, wanted: Sequence[int]) -> list[int]:
    """The zoo entry's batch sizes, only those in ``wanted`` when it is not empty."""
    return [b for b in zoo.ZOO[name].batches if not wanted or b in wanted]


def run(args: argparse.Namespace, partial: Path, kernels_file: Path | None) -> list[dict]:
    """Times every (model, batch, dtype, backend); each row also goes to ``partial`` as soon as it
    is measured, so that a run stopped early keeps what it measured."""
    gpu = torch.cuda.get_device_name()
    commit = git_commit()
    started_run = time.perf_counter()
    rows: list[dict] = []
    skipped: list[str] = []

    def keep(row: dict) -> None:
        rows.append(row)
        with open(partial, "a") as f:
            f.write(json.dumps(row) + "\n")

    for name in args.models:
        built: dict[float, torch.nn.Module] = {}  # the CPU model by weight scale
        flops: list[int | None] = []  # counted once a model
        for batch in batches_of(name, args.batches):
            for dtype_name in args.dtypes:
                label = f"{name} batch {batch} {dtype_name}"
                if args.budget_s and time.perf_counter() - started_run > args.budget_s:
                    skipped.append(label)
                    continue
                dtype = DTYPES[dtype_name]
                base = {"model": name, "source": zoo.ZOO[name].source, "batch": batch,
                        "dtype": dtype_name, "gpu": gpu, "commit": commit}
                try:
                    prepared = prepare(name, batch, dtype, built)
                    base["weight_scale"] = prepared.weight_scale
                    base["eager_rel_l2"] = prepared.eager_rel_l2
                except Exception as error:  # noqa: BLE001 - a model that fails is rows too
                    logger.exception("%s: preparing the model failed", label)
                    for backend in args.backends:
                        keep({**base, "backend": backend, "error": error_text(error)})
                    torch.cuda.empty_cache()
                    continue
                if not flops:
                    flops.append(count_flops(label, prepared))
                base["flops_per_sample"] = flops[0]
                for backend in args.backends:
                    row = measure(args, prepared, {**base, "backend": backend}, kernels_file)
                    if row is not None:
                        keep(row)
                del prepared
                torch._dynamo.reset()  # frees the compiled graphs and CUDA graph pools
                torch.cuda.empty_cache()
    for label in skipped:
        logger.warning("%s: not started, past --budget-s %s", label, args.budget_s)
    add_ratios(rows)
    return rows


def count_flops(label: str, prepared: Prepared) -> int | None:
    """One sample's FLOPs (bench/roofline.py), or None if counting them fails."""
    try:
        return roofline.count_flops(prepared.model, [x[:1] for x in prepared.inputs])
    except Exception:  # noqa: BLE001 - the rows stand without their TFLOP/s
        logger.exception("%s: counting the FLOPs failed", label)
        return None


def measure(args: argparse.Namespace, prepared: Prepared, row: dict,
            kernels_file: Path | None) -> dict | None:
    """Builds and times one backend into ``row``; the row with its error if that fails, None
    with --compile-only."""
    label = f"{row['model']} batch {row['batch']} {row['dtype']} {row['backend']}"
    inputs = prepared.inputs
    logger.info("%s: building", label)
    try:
        with torch.no_grad():
            started = time.perf_counter()
            compiled = build(row["backend"], prepared.model, inputs, DTYPES[row["dtype"]])
            out = compiled(*inputs)  # torch.compile builds on the first call
            torch.cuda.synchronize()
            row["build_s"] = round(time.perf_counter() - started, 2)
            row.update(errors(out, prepared.reference))
            row["tolerance"] = kiln_tolerance(row["eager_rel_l2"])
            # NaN compares false: a non-finite output is flagged too.
            row["accuracy_flagged"] = not row["rel_l2"] <= row["tolerance"]
            del out
            if args.compile_only:
                logger.info("%s: built in %.1f s", label, row["build_s"])
                return None
            times = time_forward(lambda: compiled(*inputs), warmup=args.warmup, iters=args.iters)
            if row["backend"] == "kiln":
                kiln = sys.modules["kiln"]
                row["kiln_ops_in_torch"] = kiln.summary(compiled)["ops_in_torch"]
                if args.layers:
                    profile = kiln.profile(compiled, *inputs, iters=args.layer_iters)
                    row["kiln_slowest_layer"] = slowest_layer(profile)
                    row["kiln_time_by_kind"] = time_by_kind(profile)
    except Exception as error:  # noqa: BLE001 - a failed backend is a row too
        logger.exception("%s failed", label)
        row["error"] = error_text(error)
        torch.cuda.empty_cache()
        return row
    times.sort()
    row["median_ms"] = round(statistics.median(times), 4)
    row["p90_ms"] = round(times[int(0.9 * (len(times) - 1))], 4)
    row["throughput"] = round(row["batch"] / (row["median_ms"] / 1000.0), 1)
    tflops = roofline.achieved_tflops(row)
    row["tflops"] = None if tflops is None else round(tflops, 1)
    if kernels_file is not None:
        try:
            with torch.no_grad():
                per_forward, table = profile_kernels(lambda: compiled(*inputs))
        except Exception:  # noqa: BLE001 - the timing stands without a profile
            logger.exception("%s: profiling the kernels failed", label)
        else:
            row["kernels_per_forward"] = round(per_forward, 1)
            with open(kernels_file, "a") as f:
                f.write(kernels_markdown(label, table))
    logger.info("%s", row)
    return row


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
    rows = sorted(by_key.values(), key=row_order)
    add_ratios(rows)
    return rows


def row_order(row: dict) -> tuple:
    """Zoo order, then batch, dtype and BACKENDS' order; a model outside the zoo (a result of an
    older benchmark) after the zoo's, by name."""
    models = list(zoo.ZOO)
    model = (models.index(row["model"]), "") if row["model"] in models else (len(models), row["model"])
    return (*model, row["batch"], row["dtype"], BACKENDS.index(row["backend"]))


def write_results(rows: list[dict], stem: Path) -> str:
    """Writes <stem>.jsonl, <stem>.md and the zoo's table <stem>.zoo.md and returns the markdown
    table."""
    with open(stem.with_suffix(".jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    table = markdown(rows)
    stem.with_suffix(".md").write_text(table + "\n")
    stem.with_suffix(".zoo.md").write_text(zoo_table(rows) + "\n")
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


def optional(row: dict, key: str, spec: str) -> str:
    """``row[key]`` formatted, or "n/a" for a value that this row (or the run it is from) lacks."""
    return format(row[key], spec) if row.get(key) is not None else "n/a"


def markdown(rows: list[dict]) -> str:
    lines = ["| model | batch | dtype | backend | median ms | p90 ms | throughput/s | vs eager | "
             "vs best inductor | TFLOP/s | build s | max err | rel L2 err | kernels/forward |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['batch']} | {r['dtype']} | {r['backend']} | "
                         f"failed: {r['error'][:80]} | | | | | | | | | |")
            continue
        rel_l2 = optional(r, "rel_l2", ".1e") + (" (flagged)" if r.get("accuracy_flagged") else "")
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['dtype']} | {r['backend']} | {r['median_ms']:.3f} | "
            f"{r['p90_ms']:.3f} | {r['throughput']:.0f} | {ratio(r, 'speedup_vs_eager')} | "
            f"{ratio(r, 'speedup_vs_best_inductor')} | {optional(r, 'tflops', '.0f')} | "
            f"{r['build_s']} | {r['max_err']:.1e} | {rel_l2} | "
            f"{optional(r, 'kernels_per_forward', 'g')} |")  # kernels: measured with --kernels
    return "\n".join(lines)


@dataclass
class ZooLine:
    """One (model, batch) of the zoo's table: Kiln's row and the fastest peer's."""

    model: str
    batch: int
    kiln: dict | None  # None: Kiln was not measured
    peer: dict | None  # the fastest timed peer; None: no peer timed

    @property
    def ratio(self) -> float | None:
        """The best peer's time over Kiln's: above 1, Kiln is faster."""
        if self.peer is None or self.kiln is None or "median_ms" not in self.kiln:
            return None
        return self.peer["median_ms"] / self.kiln["median_ms"]


def zoo_lines(rows: list[dict], dtype: str = "fp16") -> list[ZooLine]:
    """The (model, batch) lines of ``rows`` in ``dtype``, in row_order."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for row in sorted((r for r in rows if r["dtype"] == dtype), key=row_order):
        groups.setdefault((row["model"], row["batch"]), []).append(row)
    lines = []
    for (model, batch), group in groups.items():
        kiln = next((r for r in group if r["backend"] == "kiln"), None)
        peers = [r for r in group if r["backend"] in PEER_MODES and "median_ms" in r]
        peer = min(peers, key=lambda r: r["median_ms"]) if peers else None
        lines.append(ZooLine(model, batch, kiln, peer))
    return lines


def geomean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def zoo_table(rows: list[dict], dtype: str = "fp16") -> str:
    """The zoo's table: a line a (model, batch) with Kiln's time, the fastest peer's time and mode,
    their ratio, the kind of Kiln's slowest layer and Kiln's error; then the geometric mean of
    the ratios and how many are below 1."""
    lines = zoo_lines(rows, dtype)
    if not lines:
        return f"No {dtype} rows."
    gpus = sorted({r["gpu"] for r in rows})
    commits = sorted({r["commit"] for r in rows if r.get("commit")})
    modes = [PEER_MODES[b] for b in PEER_MODES if any(r["backend"] == b for r in rows)]
    out = [f"{dtype} on {', '.join(gpus)}" + (f" at commit {', '.join(commits)}" if commits else "")
           + f"; peers measured: {', '.join(modes) or 'none'}. Ratio: the best peer's time over "
           "Kiln's (above 1: Kiln is faster).", "",
           "| model | source | batch | Kiln ms | best peer ms | best peer | ratio | "
           "Kiln's slowest layer | Kiln rel L2 err |",
           "|---|---|---|---|---|---|---|---|---|"]
    for line in lines:
        source = zoo.ZOO[line.model].source if line.model in zoo.ZOO else ""
        peer_ms = f"{line.peer['median_ms']:.3f}" if line.peer else "n/a"
        peer_mode = PEER_MODES[line.peer["backend"]] if line.peer else "n/a"
        kiln = line.kiln
        if kiln is None:
            kiln_ms, slowest, error = "not run", "", ""
        elif "error" in kiln:
            kiln_ms, slowest, error = f"failed: {kiln['error'][:100]}", "", ""
        else:
            kiln_ms = f"{kiln['median_ms']:.3f}"
            layer = kiln.get("kiln_slowest_layer")
            slowest = f"{layer['kind']} ({layer['share']:.0%})" if layer else "n/a"
            error = optional(kiln, "rel_l2", ".1e")
            if kiln.get("accuracy_flagged"):
                error = f"**{error} flagged** (over {kiln['tolerance']:.1e})"
        ratio_text = f"{line.ratio:.2f}x" if line.ratio is not None else "n/a"
        out.append(f"| {line.model} | {source} | {line.batch} | {kiln_ms} | {peer_ms} | "
                   f"{peer_mode} | {ratio_text} | {slowest} | {error} |")
    out += ["", zoo_summary(lines)]
    return "\n".join(out)


def zoo_summary(lines: list[ZooLine]) -> str:
    """The geometric mean of the ratios, the count below 1, and what has no ratio."""
    ratios = [line.ratio for line in lines if line.ratio is not None]
    if not ratios:
        return "No line has both Kiln and a peer timed."
    text = (f"Geometric mean of the ratios over {len(ratios)} lines: {geomean(ratios):.2f}x; "
            f"Kiln is slower than the best peer in {sum(r < 1.0 for r in ratios)} of them.")
    accurate = [line.ratio for line in lines
                if line.ratio is not None and not line.kiln.get("accuracy_flagged")]
    if len(accurate) < len(ratios):
        text += (f" Without the {len(ratios) - len(accurate)} whose accuracy is flagged: "
                 + (f"{geomean(accurate):.2f}x." if accurate else "none left."))
    failed = sum(1 for line in lines if line.kiln is not None and "error" in line.kiln)
    if failed:
        text += f" Kiln failed on {failed} line(s), which have no ratio."
    return text


def write_readme_table(readme: Path, table: str) -> None:
    """Replaces what lies between the zoo-table markers in ``readme`` with ``table``."""
    text = readme.read_text()
    start, end = ZOO_TABLE_MARKERS
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"{readme} needs one {start} before one {end}")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    readme.write_text(f"{head}{start}\n{table}\n{end}{tail}")


def select_models(models: list[str], part: str | None) -> list[str]:
    """``models`` with "all" expanded to the zoo, then only part I of N (``part`` "I/N"): N
    contiguous slices as equal as they can be."""
    names = list(zoo.ZOO) if "all" in models else list(dict.fromkeys(models))
    if part is None:
        return names
    index, count = (int(n) for n in part.split("/"))
    if not 1 <= index <= count:
        raise ValueError(f"--part {part}: need 1 <= I <= N")
    return names[(index - 1) * len(names) // count:index * len(names) // count]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=CLASSIC, choices=[*zoo.ZOO, "all"],
                        metavar="MODEL", help="zoo models (python bench/zoo.py lists them), or all")
    parser.add_argument("--zoo", action="store_true", help="every zoo model: --models all")
    parser.add_argument("--part", metavar="I/N",
                        help="only the I-th of N equal slices of the models, in zoo order")
    parser.add_argument("--batches", nargs="+", type=int, default=[],
                        help="only these of each model's batch sizes (default: all of them)")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--backends", nargs="+", default=BACKENDS, choices=BACKENDS)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--kernels", action="store_true",
                        help="profile each row's kernels (kernels per forward, busiest kernels)")
    parser.add_argument("--layers", action="store_true",
                        help="profile each Kiln row's layers: the slowest one's kind and share")
    parser.add_argument("--layer-iters", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=0.0,
                        help="start no new model and batch after this many seconds (0: no limit)")
    parser.add_argument("--compile-only", action="store_true",
                        help="build each backend and run it once, to fill torch.compile's "
                             "caches; time nothing and write no results")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="JSONL",
                        help="join the .jsonl parts of one run into <out>/<the first part's "
                             "name> (.jsonl, .md and .zoo.md); needs no GPU")
    parser.add_argument("--readme", nargs="?", type=Path, const=README, metavar="README",
                        help="also write the zoo's table into README (default: the repository's) "
                             "between its zoo-table markers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.merge:
        args.out.mkdir(parents=True, exist_ok=True)
        rows = merge(args.merge)
        print(write_results(rows, args.out / args.merge[0].name.split(".")[0]))
        if args.readme:
            write_readme_table(args.readme, zoo_table(rows))
        return 0
    args.models = select_models(["all"] if args.zoo else args.models, args.part)
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
    print(zoo_table(rows))
    if args.readme:
        write_readme_table(args.readme, zoo_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
