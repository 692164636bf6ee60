"""bench/zoo.py's model list and bench/run.py's zoo table: every model builds offline with random
weights and a few run a forward; the table's best peer, ratios, geometric mean, failed and flagged
lines, merged parts and the README's table, on synthetic rows."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import run as bench  # noqa: E402  (bench/run.py)
import zoo  # noqa: E402  (bench/zoo.py)

ISSUE_MODELS = {
    "torchvision": ["resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v2",
                    "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0",
                    "efficientnet_v2_s", "convnext_tiny", "regnet_x_1_6gf", "densenet121",
                    "googlenet", "inception_v3", "vgg16", "vit_b_16", "swin_t", "maxvit_t",
                    "deeplabv3_resnet50"],
    "timm": ["efficientformer_l1", "levit_128s", "mixer_b16_224", "poolformer_s12",
             "ghostnet_100", "cspdarknet53", "rexnet_100", "hrnet_w18_small", "convnextv2_atto",
             "fastvit_t8", "edgenext_small", "coatnet_0_rw_224", "efficientvit_b0"],
    "transformers": ["bert_base", "distilbert", "roberta_base", "gpt2", "t5_small_encoder",
                     "wav2vec2_base", "clip_vit_b_32_vision", "bart_base_encoder", "llama_small",
                     # In place of torchvision's raft_small, which cannot run in fp16.
                     "clip_vit_b_32"],
}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that tries to download fails instead of waiting on the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_the_zoo_has_the_issues_models_from_each_family():
    assert len(zoo.ZOO) >= 40
    for source, names in ISSUE_MODELS.items():
        for name in names:
            assert zoo.ZOO[name].source == source, name
    multi_input = [name for name, entry in zoo.ZOO.items() if len(entry.inputs(1)) > 1]
    assert multi_input == ["clip_vit_b_32"]
    assert [name for name, entry in zoo.ZOO.items() if entry.note] == ["clip_vit_b_32"]
    assert zoo.ZOO["resnet50"].batches == zoo.ZOO["vit_b_16"].batches == (1, 32, 256)
    assert all(1 in entry.batches and 32 in entry.batches for entry in zoo.ZOO.values())


@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_every_model_constructs_offline_and_its_inputs_fit(name: str):
    entry = zoo.ZOO[name]
    pytest.importorskip(entry.source)
    torch.manual_seed(0)
    model = entry.make()
    assert isinstance(model, nn.Module)
    inputs = entry.inputs(2)
    assert all(x.shape[0] == 2 for x in inputs)
    for x in inputs:
        if not x.is_floating_point():  # token ids: within the model's vocabulary
            embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
            assert 0 <= int(x.min()) and int(x.max()) < embeddings[0].num_embeddings
    # Seeded: the same inputs every time.
    assert all(torch.equal(a, b) for a, b in zip(inputs, entry.inputs(2)))


# A model of each family and kind of input, the quick ones (a second or two each on the CPU).
FORWARD = ["resnet18", "efficientnet_b0", "levit_128s", "convnextv2_atto", "distilbert",
           "llama_small", "wav2vec2_base"]


@pytest.mark.parametrize("name", FORWARD)
def test_a_forward_at_batch_1_returns_one_finite_tensor_in_fp16s_range(name: str):
    pytest.importorskip(zoo.ZOO[name].source)
    model = zoo.build(name)
    with torch.no_grad():
        out = model(*zoo.make_inputs(name, 1))
    assert isinstance(out, torch.Tensor) and out.shape[0] == 1
    assert torch.isfinite(out).all()
    # Calibrated batch norms keep outputs near unit scale (EfficientNet-B0's are 1e-14
    # without), so that an fp16 error means something.
    assert 1e-2 < float(out.abs().max()) < 1e3


def test_clip_takes_token_ids_and_images_and_returns_their_similarities():
    pytest.importorskip("transformers")
    model = zoo.build("clip_vit_b_32")
    ids, images = zoo.make_inputs("clip_vit_b_32", 2)
    assert ids.dtype == torch.int64 and images.shape == (2, 3, 224, 224)
    with torch.no_grad():
        logits = model(ids, images)
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


def test_zero_initialized_weights_are_filled():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    nn.init.zeros_(model[2].weight)
    nn.init.zeros_(model[1].weight)
    kept = model[0].weight.clone()
    zoo.fill_zero_weights(model)
    assert model[2].weight.abs().sum() > 0 and torch.equal(model[1].weight, torch.ones(4))
    assert torch.equal(model[0].weight, kept)


def test_batch_norms_are_calibrated_to_unit_rms():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8))
    with torch.no_grad():
        for conv in (model[0], model[3]):
            conv.weight.mul_(50.0)
    x = torch.randn(4, 3, 16, 16)
    zoo.calibrate_batch_norms(model, [x])
    with torch.no_grad():
        out = model(x)
    rms = out.pow(2).mean(dim=(0, 2, 3)).sqrt()
    assert torch.allclose(rms, torch.ones(8), rtol=1e-3)
    assert not model.training


# Synthetic rows.

def row(model: str, backend: str, median_ms: float | None, *, batch: int = 1, **extra) -> dict:
    result = {"model": model, "batch": batch, "dtype": "fp16", "backend": backend,
              "gpu": "NVIDIA H200", "commit": "abc1234", "rel_l2": 1e-3, "max_err": 1e-3,
              "tolerance": 2e-2, "accuracy_flagged": False, **extra}
    if median_ms is not None:
        result.update(median_ms=median_ms, p90_ms=median_ms, throughput=batch / median_ms * 1e3,
                      tflops=1.0, build_s=1.0)
    return result


def synthetic_rows() -> list[dict]:
    return [
        # Kiln 1.0 ms, reduce-overhead the best peer at 2.0 ms: 2x.
        row("resnet18", "eager", 4.0), row("resnet18", "inductor-reduce-overhead", 2.0),
        row("resnet18", "kiln", 1.0, kiln_slowest_layer={"kind": "Convolution", "name": "conv1",
                                                        "share": 0.25}),
        # Kiln slower than eager: 0.5x.
        row("gpt2", "eager", 1.0), row("gpt2", "inductor-reduce-overhead", 1.5),
        row("gpt2", "kiln", 2.0),
        # Kiln failed.
        row("deeplabv3_resnet50", "eager", 3.0),
        row("deeplabv3_resnet50", "kiln", None, error="RuntimeError: no converter for grid_sampler_2d"),
        # Kiln fast but wrong: 8x, flagged.
        row("vit_b_16", "eager", 8.0, batch=32),
        row("vit_b_16", "kiln", 1.0, batch=32, rel_l2=0.5, accuracy_flagged=True,
            kiln_slowest_layer={"kind": "MatrixMultiply", "name": "fc", "share": 0.5}),
    ]


def test_best_peer_ratio_and_lines():
    lines = {(line.model, line.batch): line for line in bench.zoo_lines(synthetic_rows())}
    resnet = lines[("resnet18", 1)]
    assert resnet.peer["backend"] == "inductor-reduce-overhead" and resnet.ratio == 2.0
    assert lines[("gpt2", 1)].peer["backend"] == "eager" and lines[("gpt2", 1)].ratio == 0.5
    assert lines[("deeplabv3_resnet50", 1)].ratio is None
    assert lines[("vit_b_16", 32)].ratio == 8.0
    # Zoo order, whatever the rows' order.
    assert [line.model for line in bench.zoo_lines(synthetic_rows()[::-1])] == \
        ["resnet18", "vit_b_16", "deeplabv3_resnet50", "gpt2"]


def test_the_table_names_the_peer_the_slowest_layer_failures_and_flags():
    table = bench.zoo_table(synthetic_rows())
    assert "| resnet18 | torchvision | 1 | 1.000 | 2.000 | reduce-overhead | 2.00x | " \
           "Convolution (25%) | 1.0e-03 |" in table
    assert "| gpt2 | transformers | 1 | 2.000 | 1.000 | eager | 0.50x |" in table
    assert "| deeplabv3_resnet50 | torchvision | 1 | failed: RuntimeError: no converter for " \
           "grid_sampler_2d | 3.000 | eager | n/a |" in table
    assert "**5.0e-01 flagged** (over 2.0e-02)" in table
    assert "peers measured: eager, reduce-overhead" in table and "at commit abc1234" in table
    summary = table.splitlines()[-1]
    geomean = math.exp((math.log(2.0) + math.log(0.5) + math.log(8.0)) / 3)
    assert f"over 3 lines: {geomean:.2f}x" in summary
    assert "slower than the best peer in 1 of them" in summary
    assert "Without the 1 whose accuracy is flagged: 1.00x." in summary
    assert "Kiln failed on 1 line(s)" in summary


def test_a_line_without_kiln_or_peers():
    table = bench.zoo_table([row("resnet18", "kiln", 1.0), row("gpt2", "eager", 1.0)])
    assert "| resnet18 | torchvision | 1 | 1.000 | n/a | n/a | n/a |" in table
    assert "| gpt2 | transformers | 1 | not run | 1.000 | eager | n/a |" in table
    assert table.endswith("No line has both Kiln and a peer timed.")


def test_kiln_tolerance_follows_fp16_eagers_error():
    assert bench.kiln_tolerance(None) == bench.KILN_TOLERANCE
    assert bench.kiln_tolerance(float("nan")) == bench.KILN_TOLERANCE
    assert bench.kiln_tolerance(1e-4) == bench.KILN_TOLERANCE
    assert bench.kiln_tolerance(0.05) == pytest.approx(0.15)


def test_errors_are_relative_to_the_reference():
    reference = torch.tensor([1.0, -2.0, 2.0])
    out = torch.tensor([1.0, -2.0, 2.3])
    assert bench.errors(out, reference) == pytest.approx({"max_err": 0.15, "rel_l2": 0.1})
    assert math.isnan(bench.errors(torch.tensor([1.0, float("nan"), 2.0]), reference)["rel_l2"])


def write_part(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_parts_merge_in_zoo_order_and_write_the_readme_table(tmp_path):
    rows = synthetic_rows()
    part1 = write_part(tmp_path / "2026-12-08-NVIDIA_H200.jsonl", rows[6:])
    # An older benchmark's model that the zoo does not have goes last.
    part2 = write_part(tmp_path / "2026-12-08-NVIDIA_H200.partial.jsonl",
                       rows[:6] + [row("old_model", "kiln", 1.0)])
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\nbefore\n<!-- zoo-table:start -->\nNo zoo run has been "
                      "committed yet.\n<!-- zoo-table:end -->\nafter\n")

    out = tmp_path / "out"
    assert bench.main(["--merge", str(part1), str(part2), "--out", str(out),
                       "--readme", str(readme)]) == 0

    merged = [json.loads(line) for line in
              (out / "2026-12-08-NVIDIA_H200.jsonl").read_text().splitlines()]
    assert [r["model"] for r in merged] == ["resnet18"] * 3 + ["vit_b_16"] * 2 + \
        ["deeplabv3_resnet50"] * 2 + ["gpt2"] * 3 + ["old_model"]
    assert merged[2]["speedup_vs_best_inductor"] == 2.0
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n<!-- zoo-table:start -->\nfp16 on NVIDIA H200")
    assert text.endswith("<!-- zoo-table:end -->\nafter\n")
    assert "committed yet" not in text and "| gpt2 | transformers | 1 | 2.000 |" in text
    assert (out / "2026-12-08-NVIDIA_H200.zoo.md").read_text().strip() in text
    # Written again, the table replaces the last one.
    bench.write_readme_table(readme, "table 2")
    assert readme.read_text() == ("# Title\n\nbefore\n<!-- zoo-table:start -->\ntable 2\n"
                                  "<!-- zoo-table:end -->\nafter\n")


def test_a_readme_without_markers_is_refused(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="zoo-table"):
        bench.write_readme_table(readme, "table")


def test_the_repositorys_readme_has_the_markers():
    text = bench.README.read_text()
    for marker in bench.ZOO_TABLE_MARKERS:
        assert text.count(marker) == 1


def test_models_all_and_parts():
    assert bench.select_models(["all"], None) == list(zoo.ZOO)
    parts = [bench.select_models(["all"], f"{i}/5") for i in range(1, 6)]
    assert sum(parts, []) == list(zoo.ZOO)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert bench.select_models(["gpt2", "resnet18", "gpt2"], None) == ["gpt2", "resnet18"]
    with pytest.raises(ValueError):
        bench.select_models(["all"], "6/5")


class Constant(nn.Module):
    """y = W x with every weight ``value``: on ones(16), every output is 16 * value."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.linear = nn.Linear(16, 16, bias=False)
        nn.init.constant_(self.linear.weight, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def fake_zoo_model(monkeypatch: pytest.MonkeyPatch, value: float) -> str:
    monkeypatch.setitem(zoo.ZOO, "constant", zoo.ZooModel(
        "constant", "torch", lambda: Constant(value), lambda batch: [torch.ones(batch, 16)]))
    return "constant"


def test_weights_are_scaled_down_until_fp16_eager_is_in_range(monkeypatch):
    # 16 * 5000 = 80000 overflows fp16 (65504); halved, 40000 does not.
    name = fake_zoo_model(monkeypatch, 5000.0)
    prepared = bench.prepare(name, 2, torch.float16, {}, device="cpu")
    assert prepared.weight_scale == 0.5 and prepared.eager_rel_l2 == 0.0
    assert torch.equal(prepared.reference, torch.full((2, 16), 40000.0))


def test_weights_in_range_are_kept(monkeypatch):
    name = fake_zoo_model(monkeypatch, 0.5)
    prepared = bench.prepare(name, 2, torch.float16, {}, device="cpu")
    assert prepared.weight_scale == 1.0 and prepared.eager_rel_l2 == 0.0


def test_an_overflow_that_scaling_cannot_fix_keeps_the_last_scale_and_no_eager_error(monkeypatch):
    name = fake_zoo_model(monkeypatch, 1e6)
    prepared = bench.prepare(name, 2, torch.float16, {}, device="cpu")
    assert prepared.weight_scale == 0.5 ** bench.MAX_WEIGHT_HALVINGS
    assert prepared.eager_rel_l2 is None


def test_a_failing_backend_is_a_row_with_its_error(monkeypatch):
    name = fake_zoo_model(monkeypatch, 0.5)
    prepared = bench.prepare(name, 2, torch.float32, {}, device="cpu")

    def fail(*args, **kwargs):
        raise RuntimeError("no converter for aten::grid_sampler_2d\nsecond line")

    monkeypatch.setattr(bench, "build", fail)
    args = bench.argparse.Namespace(compile_only=False, warmup=1, iters=1, layers=False)
    row = bench.measure(args, prepared, {"model": name, "batch": 2, "dtype": "fp32",
                                         "backend": "kiln", "eager_rel_l2": None}, None)
    assert row["error"] == "RuntimeError: no converter for aten::grid_sampler_2d"
    assert "median_ms" not in row


class SmallConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


@pytest.fixture
def on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> str:
    """bench.measure on the CPU: the wall clock instead of CUDA events, and a small zoo model."""

    def wall_clock(fn, *, warmup: int, iters: int) -> list[float]:
        fn()
        return [1.0] * iters

    monkeypatch.setattr(bench, "time_forward", wall_clock)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setitem(zoo.ZOO, "small_conv_net", zoo.ZooModel(
        "small_conv_net", "torch", SmallConvNet,
        lambda batch: [torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(batch))]))
    return "small_conv_net"


def measure(name: str, backend: str, *, layers: bool = False) -> dict:
    prepared = bench.prepare(name, 2, torch.float32, {}, device="cpu")
    args = bench.argparse.Namespace(compile_only=False, warmup=1, iters=3, layers=layers,
                                    layer_iters=1)
    return bench.measure(args, prepared, {"model": name, "batch": 2, "dtype": "fp32",
                                          "backend": backend, "eager_rel_l2": None}, None)


def test_a_kiln_row_has_its_error_ops_in_torch_and_slowest_layer(on_the_cpu):
    pytest.importorskip("kiln")
    row = measure(on_the_cpu, "kiln", layers=True)
    assert "error" not in row, row.get("error")
    assert row["median_ms"] == 1.0 and row["kiln_ops_in_torch"] == 0
    assert row["rel_l2"] < 1e-5 and not row["accuracy_flagged"]
    assert row["kiln_slowest_layer"]["kind"] in {"Convolution", "FullyConnected"}
    assert 0 < row["kiln_slowest_layer"]["share"] <= 1
    assert sum(row["kiln_time_by_kind"].values()) == pytest.approx(1.0, abs=0.01)


def test_a_wrong_output_is_flagged(on_the_cpu, monkeypatch):
    monkeypatch.setattr(bench, "build", lambda backend, model, inputs, dtype:
                        lambda *xs: model(*xs) * 1.1)
    row = measure(on_the_cpu, "inductor")
    assert "error" not in row and row["median_ms"] == 1.0
    assert row["rel_l2"] == pytest.approx(0.1, rel=1e-3)
    assert row["accuracy_flagged"] and row["tolerance"] == bench.KILN_TOLERANCE


def test_slowest_layer_is_taken_over_every_engine():
    from kiln.inspect import EngineProfile, LayerTime, Profile

    profile = Profile([
        EngineProfile("a", "a", "CUDA", 5, [LayerTime("conv", "Convolution", "k", "fp16", 1.0)]),
        EngineProfile("b", "b", "CUDA", 5, [LayerTime("mm", "MatrixMultiply", "k", "fp16", 2.0),
                                            LayerTime("add", "Pointwise", "k", "fp16", 1.0)]),
    ])
    assert bench.slowest_layer(profile) == {"kind": "MatrixMultiply", "name": "mm", "share": 0.5}
    assert bench.slowest_layer(Profile([])) is None
    assert list(bench.time_by_kind(profile).items()) == \
        [("MatrixMultiply", 0.5), ("Convolution", 0.25), ("Pointwise", 0.25)]
