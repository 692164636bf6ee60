// recognizeExplicitAttention: attention written out in layers (q @ k^T, scaling, a bias,
// softmax, @ v) becomes one Attention layer with the bias as its additive mask, and what is not
// that stays. Each test compares the network's outputs before and after.
#include <gtest/gtest.h>

#include <memory>
#include <variant>
#include <vector>

#include "core/builder/builder.h"
#include "core/builder/passes.h"
#include "core/engine/execution_context.h"
#include "core/ir/network.h"
#include "tests/cpp/network_evaluator.h"

namespace kiln {
namespace {

constexpr int64_t kBatch = 2, kHeads = 3, kQueries = 5, kKeys = 7, kHeadDim = 8, kValueDim = 4;

Tensor* scalar(Network& network, float value) {
  return network
      .addConstant(Weights::fromValues(DataType::kFloat32, {}, std::vector<float>{value}))
      ->output(0);
}

struct Written {
  Network network;
  Tensor* scores = nullptr;  // q @ k^T, before scaling
  Tensor* logits = nullptr;  // what the softmax reads
};

// Options of the written-out attention.
struct Form {
  bool scaleQuery = true;        // q * 0.35 before the product, else the scores / 2.5 after
  bool transposeOperand = true;  // k^T as the product's transposed operand, else a transpose
  bool bias = true;              // + a (H, L, S) bias
  int64_t softmaxAxis = -1;
};

void writeAttention(Written& w, const Form& form) {
  Network& network = w.network;
  Tensor* q = network.addInput("q", DataType::kFloat32, {kBatch, kHeads, kQueries, kHeadDim});
  Tensor* k = network.addInput("k", DataType::kFloat32, {kBatch, kHeads, kKeys, kHeadDim});
  Tensor* v = network.addInput("v", DataType::kFloat32, {kBatch, kHeads, kKeys, kValueDim});
  if (form.scaleQuery) {
    q = network.addElementwise(q, scalar(network, 0.35f), ElementwiseOp::kProd)->output(0);
  }
  MatMulParams product;
  product.transposeB = form.transposeOperand;
  Tensor* kOperand = k;
  if (!form.transposeOperand) {
    // LeViT's keys: (N, S, H, E) permuted straight to (N, H, E, S).
    ShuffleParams toTokens;
    toTokens.firstPermutation = {0, 2, 1, 3};
    Tensor* tokens = network.addShuffle(k, toTokens)->output(0);
    ShuffleParams transpose;
    transpose.firstPermutation = {0, 2, 3, 1};
    kOperand = network.addShuffle(tokens, transpose)->output(0);
  }
  w.scores = network.addMatMul(q, kOperand, product)->output(0);
  Tensor* logits = w.scores;
  if (!form.scaleQuery) {
    logits = network.addElementwise(logits, scalar(network, 2.5f), ElementwiseOp::kDiv)->output(0);
  }
  if (form.bias) {
    const auto count = static_cast<size_t>(kHeads * kQueries * kKeys);
    Tensor* bias =
        network
            .addConstant(Weights::fromValues(DataType::kFloat32, {kHeads, kQueries, kKeys},
                                             ramp(count, -1.0f, 0.13f)))
            ->output(0);
    logits = network.addElementwise(bias, logits, ElementwiseOp::kSum)->output(0);
  }
  w.logits = logits;
  SoftmaxParams softmax;
  softmax.axis = form.softmaxAxis;
  Tensor* probabilities = network.addSoftmax(logits, softmax)->output(0);
  network.markOutput(network.addMatMul(probabilities, v, MatMulParams{})->output(0));
}

std::vector<std::vector<float>> attentionInputs() {
  return {ramp(kBatch * kHeads * kQueries * kHeadDim, -1.0f, 0.11f),
          ramp(kBatch * kHeads * kKeys * kHeadDim, -0.8f, 0.09f, 13),
          ramp(kBatch * kHeads * kKeys * kValueDim, -0.5f, 0.07f, 11)};
}

TEST(BuilderExplicitAttention, BecomesOneAttentionLayerWithTheBiasAsItsMask) {
  const Form forms[] = {{true, true, true, -1}, {false, false, true, 3}, {true, false, false, -1}};
  for (const Form& form : forms) {
    SCOPED_TRACE(::testing::Message()
                 << "scale query " << form.scaleQuery << ", transposed operand "
                 << form.transposeOperand << ", bias " << form.bias);
    Written w;
    writeAttention(w, form);
    const std::vector<std::vector<float>> before = evaluate(w.network, attentionInputs());

    recognizeExplicitAttention(w.network);

    EXPECT_EQ(countLayers(w.network, LayerKind::kSoftmax), 0u);
    EXPECT_EQ(countLayers(w.network, LayerKind::kMatMul), 0u);
    // The permutation to k^T is replaced by the one to k, after the one to tokens.
    EXPECT_EQ(countLayers(w.network, LayerKind::kShuffle), form.transposeOperand ? 0u : 2u);
    const Layer* attention = w.network.output(0)->producer();
    ASSERT_EQ(attention->kind(), LayerKind::kAttention);
    const double scale = form.scaleQuery ? 0.35 : 1.0 / 2.5;
    EXPECT_NEAR(attention->paramsAs<AttentionParams>().scale, scale, 1e-7);
    EXPECT_EQ(attention->inputs().size() > 3 && attention->input(3) != nullptr, form.bias);
    w.network.validate();
    expectNear(evaluate(w.network, attentionInputs()), before, 1e-5f);
  }
}

// Left alone: scores another layer also reads, a softmax over the queries, and a bias that
// broadcasts the scores to more elements than the product gives.
TEST(BuilderExplicitAttention, LeavesWhatIsNotOneAttentionAlone) {
  {
    Written w;
    writeAttention(w, {});
    w.network.markOutput(w.logits);
    recognizeExplicitAttention(w.network);
    EXPECT_EQ(countLayers(w.network, LayerKind::kAttention), 0u) << "scores read twice";
  }
  {
    Written w;
    writeAttention(w, {true, true, true, 2});
    recognizeExplicitAttention(w.network);
    EXPECT_EQ(countLayers(w.network, LayerKind::kAttention), 0u) << "softmax over the queries";
  }
  {
    Network network;
    Tensor* q = network.addInput("q", DataType::kFloat32, {1, kHeads, kQueries, kHeadDim});
    Tensor* k = network.addInput("k", DataType::kFloat32, {1, kHeads, kKeys, kHeadDim});
    Tensor* v = network.addInput("v", DataType::kFloat32, {kBatch, kHeads, kKeys, kValueDim});
    Tensor* bias = network.addInput("bias", DataType::kFloat32, {kBatch, kHeads, kQueries, kKeys});
    MatMulParams product;
    product.transposeB = true;
    Tensor* scores = network.addMatMul(q, k, product)->output(0);
    Tensor* logits = network.addElementwise(scores, bias, ElementwiseOp::kSum)->output(0);
    Tensor* probabilities = network.addSoftmax(logits, SoftmaxParams{})->output(0);
    network.markOutput(network.addMatMul(probabilities, v, MatMulParams{})->output(0));
    recognizeExplicitAttention(network);
    EXPECT_EQ(countLayers(network, LayerKind::kAttention), 0u) << "a bias that broadcasts";
  }
}

Tensor* reshaped(Network& network, Tensor* x, Dims dims) {
  ShuffleParams p;
  p.hasReshape = true;
  p.reshapeDims = std::move(dims);
  return network.addShuffle(x, p)->output(0);
}

// MaxViT's attention, as its einsums convert: (B, G, H, P, D) operands reshaped to (B*G*H, P, D)
// for the products, the scores reshaped to (B, G, H, P, P) for the bias and the softmax and back;
// the bias per head (broadcast over B and G) or per batch element, or none; and torch.bmm's form,
// scores of rank 3 and a bias of the same dims.
TEST(BuilderExplicitAttention, AttentionOverOtherBatchDimsBecomesOneLayerThroughReshapes) {
  constexpr int64_t kGroups = 4;
  enum class Bias { kPerHead, kPerBatch, kNone, kRank3 };
  for (Bias biasForm : {Bias::kPerHead, Bias::kPerBatch, Bias::kNone, Bias::kRank3}) {
    SCOPED_TRACE(static_cast<int>(biasForm));
    const bool rank3 = biasForm == Bias::kRank3;
    const Dims batchDims = rank3 ? Dims{kBatch * kGroups * kHeads} : Dims{kBatch, kGroups, kHeads};
    const auto dims = [&](int64_t rows, int64_t columns) {
      Dims d = batchDims;
      d.push_back(rows);
      d.push_back(columns);
      return d;
    };
    constexpr int64_t kMerged = kBatch * kGroups * kHeads;
    Network network;
    Tensor* q = network.addInput("q", DataType::kFloat32, dims(kQueries, kHeadDim));
    Tensor* k = network.addInput("k", DataType::kFloat32, dims(kKeys, kHeadDim));
    Tensor* v = network.addInput("v", DataType::kFloat32, dims(kKeys, kValueDim));
    k = network.addElementwise(k, scalar(network, 0.35f), ElementwiseOp::kProd)->output(0);
    MatMulParams product;
    product.transposeB = true;
    Tensor* scores = network
                         .addMatMul(reshaped(network, q, {kMerged, kQueries, kHeadDim}),
                                    reshaped(network, k, {kMerged, kKeys, kHeadDim}), product)
                         ->output(0);
    Tensor* logits = rank3 ? scores : reshaped(network, scores, dims(kQueries, kKeys));
    if (biasForm != Bias::kNone) {
      const Dims biasDims =
          biasForm == Bias::kPerHead ? Dims{kHeads, kQueries, kKeys} : dims(kQueries, kKeys);
      const auto count = static_cast<size_t>(volume(biasDims));
      Tensor* bias = network
                         .addConstant(Weights::fromValues(DataType::kFloat32, biasDims,
                                                          ramp(count, -1.0f, 0.13f, 19)))
                         ->output(0);
      logits = network.addElementwise(logits, bias, ElementwiseOp::kSum)->output(0);
    }
    SoftmaxParams softmax;
    softmax.axis = static_cast<int64_t>(batchDims.size()) + 1;
    Tensor* probabilities = network.addSoftmax(logits, softmax)->output(0);
    Tensor* out =
        network
            .addMatMul(rank3 ? probabilities
                             : reshaped(network, probabilities, {kMerged, kQueries, kKeys}),
                       reshaped(network, v, {kMerged, kKeys, kValueDim}), MatMulParams{})
            ->output(0);
    network.markOutput(reshaped(network, out, dims(kQueries, kValueDim)));
    const std::vector<std::vector<float>> inputs = {ramp(volume(q->dims()), -1.0f, 0.11f),
                                                    ramp(volume(k->dims()), -0.8f, 0.09f, 13),
                                                    ramp(volume(v->dims()), -0.5f, 0.07f, 11)};
    const std::vector<std::vector<float>> before = evaluate(network, inputs);

    recognizeExplicitAttention(network);

    EXPECT_EQ(countLayers(network, LayerKind::kSoftmax), 0u);
    EXPECT_EQ(countLayers(network, LayerKind::kMatMul), 0u);
    ASSERT_EQ(countLayers(network, LayerKind::kAttention), 1u);
    for (size_t i = 0; i < network.numLayers(); ++i) {
      const Layer* layer = network.layer(i);
      if (layer->kind() != LayerKind::kAttention) continue;
      EXPECT_NEAR(layer->paramsAs<AttentionParams>().scale, 0.35, 1e-7);
      // N: the batch dims every bias broadcasts over; H: the rest.
      const bool perHead = biasForm == Bias::kPerHead || biasForm == Bias::kNone;
      EXPECT_EQ(layer->input(0)->dims(),
                (perHead ? Dims{kBatch * kGroups, kHeads, kQueries, kHeadDim}
                         : Dims{1, kMerged, kQueries, kHeadDim}));
    }
    network.validate();
    expectNear(evaluate(network, inputs), before, 1e-5f);
  }
}

// Swin's shifted windows: the position bias (H, L, S) added at (B*W, H, L, S), the scores reshaped
// to (B, W, H, L, S) for the shift mask (1, W, 1, L, S) and back. The biases sum to one mask of
// (1, W*H, L, S) over the batch. A scaling after a bias would scale the bias too: that stays.
TEST(BuilderExplicitAttention, SwinShiftedWindowAttentionSumsItsBiasesIntoOneMask) {
  constexpr int64_t kWindows = 4;
  // Scaled last, keys transposed by a shuffle (Swin's k.transpose(-2, -1)).
  for (const auto& [scaleLast, keysTransposed] :
       {std::pair{false, false}, std::pair{false, true}, std::pair{true, false}}) {
    SCOPED_TRACE(::testing::Message()
                 << "scaled last " << scaleLast << ", keys transposed " << keysTransposed);
    Network network;
    Tensor* q =
        network.addInput("q", DataType::kFloat32, {kBatch * kWindows, kHeads, kQueries, kHeadDim});
    Tensor* k =
        network.addInput("k", DataType::kFloat32, {kBatch * kWindows, kHeads, kKeys, kHeadDim});
    Tensor* v =
        network.addInput("v", DataType::kFloat32, {kBatch * kWindows, kHeads, kKeys, kValueDim});
    if (!scaleLast) {
      q = network.addElementwise(q, scalar(network, 0.35f), ElementwiseOp::kProd)->output(0);
    }
    MatMulParams product;
    product.transposeB = !keysTransposed;
    Tensor* keys = k;
    if (keysTransposed) {
      ShuffleParams transpose;
      transpose.firstPermutation = {0, 1, 3, 2};
      keys = network.addShuffle(k, transpose)->output(0);
    }
    Tensor* scores = network.addMatMul(q, keys, product)->output(0);
    const auto constant = [&](const Dims& dims, float start) {
      const auto count = static_cast<size_t>(volume(dims));
      return network
          .addConstant(Weights::fromValues(DataType::kFloat32, dims, ramp(count, start, 0.13f, 17)))
          ->output(0);
    };
    scores =
        network
            .addElementwise(scores, constant({kHeads, kQueries, kKeys}, -1.0f), ElementwiseOp::kSum)
            ->output(0);
    Tensor* shifted = reshaped(network, scores, {kBatch, kWindows, kHeads, kQueries, kKeys});
    shifted = network
                  .addElementwise(shifted, constant({1, kWindows, 1, kQueries, kKeys}, -2.0f),
                                  ElementwiseOp::kSum)
                  ->output(0);
    Tensor* logits = reshaped(network, shifted, {kBatch * kWindows, kHeads, kQueries, kKeys});
    if (scaleLast) {
      logits =
          network.addElementwise(logits, scalar(network, 0.35f), ElementwiseOp::kProd)->output(0);
    }
    Tensor* probabilities = network.addSoftmax(logits, SoftmaxParams{})->output(0);
    network.markOutput(network.addMatMul(probabilities, v, MatMulParams{})->output(0));
    const std::vector<std::vector<float>> inputs = {ramp(volume(q->dims()), -1.0f, 0.11f),
                                                    ramp(volume(k->dims()), -0.8f, 0.09f, 13),
                                                    ramp(volume(v->dims()), -0.5f, 0.07f, 11)};
    const std::vector<std::vector<float>> before = evaluate(network, inputs);

    recognizeExplicitAttention(network);

    if (scaleLast) {
      EXPECT_EQ(countLayers(network, LayerKind::kAttention), 0u);
      continue;
    }
    ASSERT_EQ(countLayers(network, LayerKind::kAttention), 1u);
    EXPECT_EQ(countLayers(network, LayerKind::kSoftmax), 0u);
    for (size_t i = 0; i < network.numLayers(); ++i) {
      const Layer* layer = network.layer(i);
      if (layer->kind() != LayerKind::kAttention) continue;
      EXPECT_EQ(layer->input(0)->dims(), (Dims{kBatch, kWindows * kHeads, kQueries, kHeadDim}));
      EXPECT_EQ(layer->input(3)->dims(), (Dims{1, kWindows * kHeads, kQueries, kKeys}));
    }
    network.validate();
    expectNear(evaluate(network, inputs), before, 1e-5f);
  }
}

// The builder runs the pass: the engine computes the written-out attention in one layer.
TEST(BuilderExplicitAttention, BuiltEngineRunsOneAttentionLayer) {
  Written w;
  writeAttention(w, {});
  const std::vector<std::vector<float>> inputs = attentionInputs();
  const std::vector<std::vector<float>> expected = evaluate(w.network, inputs);
  std::shared_ptr<Engine> engine = Builder::build(w.network, {});
  size_t attentions = 0;
  for (const EngineLayer& layer : engine->definition().layers) {
    EXPECT_FALSE(std::holds_alternative<SoftmaxParams>(layer.params)) << layer.name;
    attentions += std::holds_alternative<AttentionParams>(layer.params) ? 1 : 0;
  }
  EXPECT_EQ(attentions, 1u);
  std::unique_ptr<ExecutionContext> context = engine->createExecutionContext();
  context->setInputShapes({{kBatch, kHeads, kQueries, kHeadDim},
                           {kBatch, kHeads, kKeys, kHeadDim},
                           {kBatch, kHeads, kKeys, kValueDim}});
  std::vector<float> out(kBatch * kHeads * kQueries * kValueDim);
  context->execute({inputs[0].data(), inputs[1].data(), inputs[2].data()}, {out.data()});
  expectNear({out}, expected, 1e-5f);
}

}  // namespace
}  // namespace kiln
