"""kiln.save and kiln.load: a compiled module saved to a file and loaded in a new Python process
gives the outputs it gave before saving; files that are not saved modules, or whose engines are
damaged, are refused with a message that says which."""

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

import kiln
from kiln.inspect import find_engines

IRS = ["ts", "dynamo"]


class Classifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        return self.head(torch.flatten(self.pool(y), 1))


class WithFallback(torch.nn.Module):
    """Two engines' worth of ops around torch.nonzero, which stays in PyTorch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.sigmoid(torch.relu(self.conv(x)) * 2.0)
        return y + 1.0, torch.nonzero(y > 0.6)


def make(model_class: type[torch.nn.Module]) -> torch.nn.Module:
    torch.manual_seed(0)
    model = model_class().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model


def python_env() -> dict[str, str]:
    """The environment of a new Python process that imports this kiln."""
    package_root = str(Path(kiln.__file__).resolve().parents[1])
    paths = [package_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def run_in_new_process(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def load_and_run_elsewhere(path: Path, inputs: list[torch.Tensor], tmp_path: Path, *, import_kiln: bool = True):
    """Loads ``path`` in a new Python process, runs it on each input and returns the outputs."""
    inputs_file, outputs_file = tmp_path / "inputs.pt", tmp_path / "outputs.pt"
    torch.save(inputs, inputs_file)
    if import_kiln:
        load = f"import kiln\nmodule = kiln.load({str(path)!r})"
    else:
        library = Path(kiln.__file__).resolve().parent / "libkiln_runtime.so"
        load = f"torch.ops.load_library({str(library)!r})\nmodule = torch.jit.load({str(path)!r})"
    code = f"""
import sys
import torch
{load}
assert ("kiln" in sys.modules) == {import_kiln}
inputs = torch.load({str(inputs_file)!r})
with torch.no_grad():
    outputs = [module(x) for x in inputs]
torch.save(outputs, {str(outputs_file)!r})
"""
    done = run_in_new_process(code)
    assert done.returncode == 0, f"the new process failed:\n{done.stderr}"
    return torch.load(outputs_file)


def assert_same(actual, expected) -> None:
    if isinstance(expected, (tuple, list)):
        assert isinstance(actual, (tuple, list)) and len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_same(a, e)
        return
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("ir", IRS)
def test_static_model_round_trips(ir, tmp_path):
    model = make(Classifier)
    x = torch.randn(2, 3, 32, 32)
    compiled = kiln.compile(model, ir=ir, inputs=[x], min_block_size=1)
    with torch.no_grad():
        before = compiled(x)
    path = tmp_path / "classifier.ts"
    kiln.save(compiled, path, inputs=[x])
    assert zipfile.is_zipfile(path)

    (after,) = load_and_run_elsewhere(path, [x], tmp_path)
    assert_same(after, before)

    loaded = kiln.load(path)
    assert len(list(find_engines(loaded))) == kiln.summary(compiled)["engines"]
    assert "engine" in kiln.inspect(loaded)


@pytest.mark.parametrize("ir", IRS)
def test_dynamic_model_round_trips(ir, tmp_path):
    """The engine's profile is saved with it: the loaded module takes every batch it took."""
    model = make(Classifier)
    spec = kiln.Input(min_shape=(1, 3, 32, 32), opt_shape=(4, 3, 32, 32), max_shape=(8, 3, 32, 32))
    compiled = kiln.compile(model, ir=ir, inputs=[spec], min_block_size=1)
    inputs = [torch.randn(batch, 3, 32, 32) for batch in (1, 3, 8)]
    with torch.no_grad():
        before = [compiled(x) for x in inputs]
    path = tmp_path / "dynamic.ts"
    kiln.save(compiled, path, inputs=[spec])

    assert_same(load_and_run_elsewhere(path, inputs, tmp_path), before)

    loaded = kiln.load(path)
    with pytest.raises(RuntimeError, match=r"outside the optimization profile range \[1, 8\]"):
        loaded(torch.randn(9, 3, 32, 32))


@pytest.mark.parametrize("ir", IRS)
def test_partitioned_model_round_trips(ir, tmp_path):
    model = make(WithFallback)
    x = torch.randn(2, 3, 16, 16)
    compiled = kiln.compile(model, ir=ir, inputs=[x], min_block_size=1)
    assert kiln.summary(compiled)["ops_in_torch"] >= 1
    with torch.no_grad():
        before = compiled(x)
    path = tmp_path / "fallback.ts"
    kiln.save(compiled, path, inputs=[x])

    (after,) = load_and_run_elsewhere(path, [x], tmp_path)
    assert_same(after, before)


def test_loads_with_only_the_runtime_library(tmp_path):
    """What a deployment needs: torch and libkiln_runtime.so, no kiln package."""
    model = make(Classifier)
    x = torch.randn(1, 3, 32, 32)
    compiled = kiln.compile(model, ir="ts", inputs=[x])
    with torch.no_grad():
        before = compiled(x)
    path = tmp_path / "deploy.ts"
    kiln.save(compiled, path)
    (after,) = load_and_run_elsewhere(path, [x], tmp_path, import_kiln=False)
    assert_same(after, before)


# -- files that are not saved modules ------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_file(tmp_path_factory) -> Path:
    model = make(Classifier)
    compiled = kiln.compile(model, ir="ts", inputs=[kiln.Input(shape=(1, 3, 16, 16))])
    path = tmp_path_factory.mktemp("saved") / "model.ts"
    kiln.save(compiled, path)
    return path


def rewrite_archive(source: Path, target: Path, change) -> None:
    """Copies a zip archive entry by entry, passing each entry's bytes through ``change``."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as new:
        for info in old.infolist():
            new.writestr(info.filename, change(info.filename, old.read(info.filename)))


def plan_entries(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return [n for n in archive.namelist() if archive.read(n).startswith(b"KILNPLAN")]


def test_saved_file_holds_the_plan(saved_file):
    assert len(plan_entries(saved_file)) == 1


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        kiln.load(tmp_path / "missing.ts")


def test_directory(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        kiln.load(tmp_path)


def test_text_file(tmp_path):
    path = tmp_path / "notes.ts"
    path.write_text("not a model\n")
    with pytest.raises(ValueError, match="not a zip archive"):
        kiln.load(path)


def test_truncated_file(saved_file, tmp_path):
    path = tmp_path / "truncated.ts"
    data = saved_file.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        kiln.load(path)


def test_torch_save_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(make(Classifier).state_dict(), path)
    with pytest.raises(ValueError, match="written by torch.save.*torch.load"):
        kiln.load(path)


def test_foreign_zip(tmp_path):
    path = tmp_path / "archive.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="zip archive but not a TorchScript module"):
        kiln.load(path)


def test_corrupt_engine_plan(saved_file, tmp_path):
    """A flipped byte in an engine's plan is caught by the plan's checksum when loading."""
    (entry,) = plan_entries(saved_file)
    path = tmp_path / "corrupt.ts"

    def flip_last_byte(name: str, data: bytes) -> bytes:
        return data[:-1] + bytes([data[-1] ^ 0xFF]) if name == entry else data

    rewrite_archive(saved_file, path, flip_last_byte)
    with pytest.raises(ValueError, match=r"(?is)kiln\.load: loading .* failed: .*corrupt"):
        kiln.load(path)


def test_unchanged_rewrite_still_loads(saved_file, tmp_path):
    """The rewriting above is not what breaks a file: an unchanged copy loads and runs."""
    path = tmp_path / "copy.ts"
    rewrite_archive(saved_file, path, lambda name, data: data)
    x = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(kiln.load(path)(x), kiln.load(saved_file)(x))


def test_save_argument_errors(tmp_path):
    with pytest.raises(TypeError, match="returned by kiln.compile"):
        kiln.save(make(Classifier), tmp_path / "eager.ts")
    with pytest.raises(TypeError, match="path must be"):
        kiln.save(torch.jit.script(make(Classifier)), 3)
