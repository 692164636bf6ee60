"""Dynamic shapes: one engine built for a range of input shapes runs every shape in the range
and refuses the others with a message naming the profile."""

import re

import pytest
import torch

import kiln
import models  # examples/models.py (tests/py/conftest.py puts examples/ on the path)
from kiln.inspect import find_engines

MIN_SHAPE = (1, 3, 64, 64)
OPT_SHAPE = (4, 3, 64, 64)
MAX_SHAPE = (8, 3, 64, 64)
IRS = ["ts", "dynamo"]


def make_model() -> torch.nn.Module:
    """The bundled ResNet-style CNN (examples/models.py): convolutions, batch norms, a max pool,
    residual adds, global pooling, a flatten and a linear head all see the dynamic batch."""
    return models.SmallResNet().eval()


def assert_close_to_eager(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape
    tolerance = 1e-4 * expected.abs().max().item()
    error = (actual - expected).abs().max().item()
    assert error <= tolerance, f"max abs error {error} > {tolerance}"


@pytest.fixture(scope="module", params=IRS)
def compiled(request):
    model = make_model()
    spec = kiln.Input(min_shape=MIN_SHAPE, opt_shape=OPT_SHAPE, max_shape=MAX_SHAPE)
    module = kiln.compile(
        model, ir=request.param, inputs=[spec], min_block_size=1, require_full_compilation=True
    )
    return model, module


def test_one_engine_for_the_whole_range(compiled):
    _, module = compiled
    summary = kiln.summary(module)
    assert summary["engines"] == 1
    assert summary["ops_in_torch"] == 0
    assert len(list(find_engines(module))) == 1


@pytest.mark.parametrize("batch", range(1, 9))
def test_every_batch_in_the_profile_equals_eager(compiled, batch):
    model, module = compiled
    torch.manual_seed(batch)
    x = torch.randn(batch, *MAX_SHAPE[1:])
    with torch.no_grad():
        assert_close_to_eager(module(x), model(x))


def test_batch_above_the_profile_is_refused(compiled):
    _, module = compiled
    with pytest.raises(RuntimeError) as raised, torch.no_grad():
        module(torch.randn(9, *MAX_SHAPE[1:]))
    message = str(raised.value)
    assert "dim 0 = 9" in message
    assert "optimization profile range [1, 8]" in message
    assert "profile 0: min [1, 3, 64, 64], max [8, 3, 64, 64]" in message
    assert "larger max_shape" in message


def test_static_dims_are_enforced(compiled):
    """H and W were given as 64 in min, opt and max: other sizes are outside the profile."""
    _, module = compiled
    with pytest.raises(RuntimeError, match=r"dim 2 is 32, but the engine was built for a fixed 64 there"):
        with torch.no_grad():
            module(torch.randn(2, 3, 32, 64))


def test_module_still_runs_after_a_refused_shape(compiled):
    model, module = compiled
    x = torch.randn(3, *MAX_SHAPE[1:])
    with torch.no_grad():
        with pytest.raises(RuntimeError, match="profile"):
            module(torch.randn(9, *MAX_SHAPE[1:]))
        assert_close_to_eager(module(x), model(x))


@pytest.mark.parametrize("ir", IRS)
def test_two_dynamic_dims(ir):
    """Batch and sequence length both dynamic, in a model that reshapes by them."""

    class Mixer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(16, 16)
            self.norm = torch.nn.LayerNorm(16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.norm(torch.relu(self.proj(x)) + x)
            return torch.softmax(y @ y.transpose(1, 2), dim=-1) @ y

    torch.manual_seed(0)
    model = Mixer().eval()
    spec = kiln.Input(min_shape=(1, 2, 16), opt_shape=(2, 8, 16), max_shape=(4, 12, 16))
    module = kiln.compile(model, ir=ir, inputs=[spec], min_block_size=1)
    assert kiln.summary(module)["engines"] == 1
    with torch.no_grad():
        for batch, length in [(1, 2), (2, 8), (4, 12), (3, 5), (1, 12), (4, 2)]:
            x = torch.randn(batch, length, 16)
            assert_close_to_eager(module(x), model(x))
        with pytest.raises(RuntimeError, match=r"dim 1 = 13 is outside the optimization profile range \[2, 12\]"):
            module(torch.randn(2, 13, 16))


class RunTimeSizes(torch.nn.Module):
    """Sizes known only at run time: a buffer sliced to the input's length, an arange to it (with
    a start and a step), and broadcasts of size-1 dims to the batch, as transformers' embeddings
    build position and token-type ids."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("positions", torch.arange(64).expand(1, -1).clone())
        self.table = torch.nn.Embedding(64, 8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        batch, length = ids.size(0), ids.size(1)
        positions = self.positions[:, :length].expand(batch, length)
        odd = torch.arange(1, length, 2)
        steps = torch.arange(length, dtype=torch.float32).view(1, -1, 1)
        return (self.table(ids) + self.table(positions) + steps).sum(-1) + odd.sum()


@pytest.mark.parametrize("ir", IRS)
def test_sizes_known_only_at_run_time_convert(ir):
    """slice to x.size(1), arange(x.size(1)) and expand(x.size(0), ...) run in the engine, and
    one engine serves every shape in the profile."""
    torch.manual_seed(0)
    model = RunTimeSizes().eval()
    spec = kiln.Input(min_shape=(1, 2), opt_shape=(4, 16), max_shape=(8, 64), dtype=torch.int64)
    module = kiln.compile(model, ir=ir, inputs=[spec], min_block_size=1, require_full_compilation=True)
    summary = kiln.summary(module)
    assert summary["ops_in_torch"] == 0, summary["fallback"]
    assert summary["engines"] == 1
    with torch.no_grad():
        for batch, length in [(1, 2), (4, 16), (8, 64), (3, 7), (8, 2), (1, 64)]:
            ids = torch.randint(0, 64, (batch, length))
            assert_close_to_eager(module(ids), model(ids))


def test_a_segment_that_reads_a_run_time_size_gets_the_input_that_has_it():
    """The engine reads no tensor at all, only the input's length: the partitioner gives it the
    graph input whose dim that length is, so the engine can size the arange at run time."""

    class ArangeOfLength(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.arange(x.size(1), dtype=torch.float32) * 2 + 1

    model = ArangeOfLength().eval()
    spec = kiln.Input(min_shape=(1, 2), opt_shape=(2, 8), max_shape=(4, 32))
    module = kiln.compile(model, ir="dynamo", inputs=[spec], min_block_size=1,
                          require_full_compilation=True)
    assert kiln.summary(module)["engines"] == 1
    with torch.no_grad():
        for length in (2, 9, 32):
            x = torch.randn(3, length)
            assert torch.equal(module(x), model(x))


def test_bert_with_dynamic_batch_and_sequence_compiles_once():
    """HF BERT (small config) compiled once for batch 1..64 and sequence 8..512 with nothing left
    to PyTorch gives eager's result at batch 1, 7, 64 and sequence 8, 77, 512."""
    hf = pytest.importorskip("transformers")

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            config = hf.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=128)
            self.bert = hf.BertModel(config, add_pooling_layer=False)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=ids).last_hidden_state

    torch.manual_seed(0)
    model = LastHiddenState().eval()
    spec = kiln.Input(min_shape=(1, 8), opt_shape=(8, 128), max_shape=(64, 512), dtype=torch.int64)
    module = kiln.compile(model, ir="dynamo", inputs=[spec], require_full_compilation=True)
    summary = kiln.summary(module)
    assert summary["ops_in_torch"] == 0, summary["fallback"]
    assert summary["engines"] == 1
    # The mask's key dim and the keys share the dynamic sequence length: fused attention, which
    # never stores the (batch, heads, sequence, sequence) scores.
    layers = str(kiln.inspect(module))
    assert layers.count(": Attention(") == 2 and ": Softmax(" not in layers
    # Called without an attention_mask, HF computes an all-true mask from arange(sequence): the
    # builder proves it masks nothing at any length, so attention reads no mask.
    attention_inputs = re.findall(r": Attention\([^)]*\)\s+\(([^)]*)\) ->", layers)
    assert [len(inputs.split(", ")) for inputs in attention_inputs] == [3, 3], attention_inputs
    # The head split's strides depend on the sequence length: q, k and v are row views of one
    # fused projection, and nothing is copied to split or merge the heads.
    assert layers.count("horizontal(") == 2 and ": Shuffle(" not in layers
    assert layers.count("queryView=[4, 16, 0]") == 2, layers
    with torch.no_grad():
        for batch in (1, 7, 64):
            for length in (8, 77, 512):
                ids = torch.randint(0, 30000, (batch, length))
                assert_close_to_eager(module(ids), model(ids))


def test_vit_with_dynamic_batch_reads_attention_operands_without_copies():
    """A torchvision ViT (small config) built once for batch 1..16: MultiheadAttention's
    transposes move next to the attention and its operands are row views of the projection, as
    at a static batch, and every batch equals eager."""
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                              hidden_dim=64, mlp_dim=128).eval()
    # torchvision zero-initializes the classifier: every output would be 0.
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    spec = kiln.Input(min_shape=(1, 3, 32, 32), opt_shape=(4, 3, 32, 32),
                      max_shape=(16, 3, 32, 32))
    module = kiln.compile(model, ir="dynamo", inputs=[spec], require_full_compilation=True)
    layers = str(kiln.inspect(module))
    assert layers.count("queryView=[4, 16, 0]") == 2, layers
    static = str(kiln.inspect(kiln.compile(model, ir="dynamo", inputs=[torch.randn(4, 3, 32, 32)])))
    assert layers.count(": Shuffle(") == static.count(": Shuffle("), layers
    with torch.no_grad():
        for batch in (1, 5, 16):
            x = torch.randn(batch, 3, 32, 32)
            assert_close_to_eager(module(x), model(x))


class FlattenedLinear(torch.nn.Module):
    """GPT-2's Conv1D: rows flattened for addmm, then viewed back as (batch, length, out)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(16, 24) * 0.1)
        self.bias = torch.nn.Parameter(torch.randn(24) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, features = x.shape
        rows = torch.addmm(self.bias, x.view(-1, features), self.weight)
        return rows.view(batch, length, 24).relu()


def test_view_back_to_two_dynamic_sizes_reads_them_from_a_tensor():
    """(batch * length, 24) viewed as (batch, length, 24) with both sizes dynamic: no input dim at
    the same index has them and only one can be inferred, so the reshape reads them from the
    input's dims at run time; nothing is left to PyTorch."""
    torch.manual_seed(0)
    model = FlattenedLinear().eval()
    spec = kiln.Input(min_shape=(1, 2, 16), opt_shape=(4, 8, 16), max_shape=(8, 32, 16))
    module = kiln.compile(model, ir="dynamo", inputs=[spec], require_full_compilation=True)
    assert kiln.summary(module)["ops_in_torch"] == 0
    with torch.no_grad():
        for batch, length in ((1, 2), (3, 7), (8, 32)):
            x = torch.randn(batch, length, 16)
            assert_close_to_eager(module(x), model(x))


class WhereAndFullLike(torch.nn.Module):
    """T5's relative position buckets in small: where and full_like over dynamic dims."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        large = torch.full_like(x, 0.5)
        picked = torch.where(x > 0, x, large)  # (N, L)
        mixed = torch.where(y < 0, y, 2.0)  # (N, 1) against a scalar
        return torch.where(picked > 0.25, picked, mixed) + torch.zeros_like(picked)


def test_where_and_full_like_over_dynamic_dims_convert():
    """where broadcasts its operands to dims known only at run time, and full_like / zeros_like
    broadcast one element to them: nothing is left to PyTorch."""
    model = WhereAndFullLike().eval()
    specs = [kiln.Input(min_shape=(1, 2), opt_shape=(4, 8), max_shape=(8, 32)),
             kiln.Input(min_shape=(1, 1), opt_shape=(4, 1), max_shape=(8, 1))]
    module = kiln.compile(model, ir="dynamo", inputs=specs, require_full_compilation=True)
    assert kiln.summary(module)["ops_in_torch"] == 0
    torch.manual_seed(0)
    with torch.no_grad():
        for batch, length in ((1, 2), (3, 7), (8, 32)):
            x, y = torch.randn(batch, length), torch.randn(batch, 1)
            assert_close_to_eager(module(x, y), model(x, y))


class PaddingMaskLookup(torch.nn.Module):
    """HF's padding mask lookup: mask[batch_idx, kv_idx] over aranges of the dynamic sizes."""

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        batch, length = mask.shape
        batch_idx = torch.arange(batch).view(-1, 1, 1)
        kv_idx = torch.arange(length).view(1, 1, -1)
        return mask[batch_idx, kv_idx] * 2 + mask[batch_idx * 0 - 1, kv_idx]  # -1: the last row


def test_several_index_tensors_into_dynamic_dims_convert():
    """Index tensors into several dims whose sizes are known only at run time: the flat index
    counts with those sizes read from the input's dims; negative indices wrap as in torch."""
    model = PaddingMaskLookup().eval()
    spec = kiln.Input(min_shape=(1, 2), opt_shape=(4, 8), max_shape=(8, 64))
    module = kiln.compile(model, ir="dynamo", inputs=[spec], require_full_compilation=True)
    assert kiln.summary(module)["ops_in_torch"] == 0
    with torch.no_grad():
        for batch, length in ((1, 2), (3, 7), (8, 64)):
            x = torch.randn(batch, length)
            assert_close_to_eager(module(x), model(x))


class HiddenStates(torch.nn.Module):
    """An HF model's last hidden state, from input_ids and, when `masked`, an attention_mask."""

    def __init__(self, model: torch.nn.Module, *, masked: bool = False) -> None:
        super().__init__()
        self.model = model
        self.masked = masked

    def forward(self, ids: torch.Tensor, *mask: torch.Tensor) -> torch.Tensor:
        kwargs = {"attention_mask": mask[0]} if self.masked else {}
        return self.model(input_ids=ids, **kwargs).last_hidden_state


def small_hf_model(name: str) -> torch.nn.Module:
    hf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if name == "gpt2":
        return hf.GPT2Model(hf.GPT2Config(n_embd=64, n_layer=2, n_head=4))
    if name == "t5_encoder":
        return hf.T5EncoderModel(hf.T5Config(d_model=64, d_kv=16, d_ff=128, num_layers=2,
                                             num_heads=4))
    return hf.BertModel(hf.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=128), add_pooling_layer=False)


@pytest.mark.parametrize(
    "name, masked",
    [("gpt2", False), ("t5_encoder", False), ("bert", True)],
    ids=["gpt2", "t5_encoder", "bert_with_a_padding_mask"],
)
def test_transformer_with_dynamic_batch_and_sequence_compiles_once(name: str, masked: bool):
    """GPT-2 (its Conv1D views back to (batch, length, features)), the T5 encoder (its relative
    position buckets: where, full_like) and BERT given a padding mask (HF's mask lookup, indexing
    two run-time dims): one engine each for batch 1..8 and sequence 8..128, nothing left to
    PyTorch, equal to eager at every shape tried (padded positions masked as in eager)."""
    model = HiddenStates(small_hf_model(name), masked=masked).eval()
    spec = kiln.Input(min_shape=(1, 8), opt_shape=(4, 32), max_shape=(8, 128), dtype=torch.int64)
    module = kiln.compile(model, ir="dynamo", inputs=[spec] * (2 if masked else 1),
                          require_full_compilation=True)
    summary = kiln.summary(module)
    assert summary["ops_in_torch"] == 0 and summary["engines"] == 1, summary
    with torch.no_grad():
        for batch, length in ((1, 8), (3, 77), (8, 128)):
            inputs = [torch.randint(0, 1000, (batch, length))]
            if masked:
                mask = torch.ones(batch, length, dtype=torch.int64)
                mask[:, length // 2:] = 0
                inputs.append(mask)
            assert_close_to_eager(module(*inputs), model(*inputs))


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_gpt2_mlp_gelu_runs_in_its_gemm_epilogue(dynamic: bool):
    """GPT-2 writes GELU's tanh approximation out in eight ops, behind a view of its Conv1D
    product: the builder recognizes it and fuses it into the GEMM before it, at static shapes and
    under a dynamic batch and sequence, and the result equals eager."""
    model = HiddenStates(small_hf_model("gpt2"), masked=False).eval()
    example = torch.randint(0, 1000, (3, 20))
    spec = (kiln.Input(min_shape=(1, 8), opt_shape=(4, 32), max_shape=(8, 128), dtype=torch.int64)
            if dynamic else example)
    module = kiln.compile(model, ir="dynamo", inputs=[spec], require_full_compilation=True)
    layers = str(kiln.inspect(module))
    assert layers.count("FullyConnected(activation=gelu_tanh)") == 2, layers
    assert "tanh," not in layers and ": Activation(" not in layers, layers
    with torch.no_grad():
        assert_close_to_eager(module(example), model(example))

