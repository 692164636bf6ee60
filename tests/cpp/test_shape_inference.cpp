// Shape inference of every layer kind, on static and dynamic (-1) dims, against hand-computed
// dims, and the errors it gives for inconsistent layers.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "core/ir/shape_inference.h"

namespace kiln {
namespace {

TensorType typeOf(Dims dims, DataType dtype = DataType::kFloat32) {
  return {dtype, std::move(dims)};
}

// The one output of a layer; null entries of `inputs` are absent optional inputs.
TensorType inferOne(const LayerParams& params, const std::vector<const TensorType*>& inputs) {
  const std::vector<TensorType> outputs = inferOutputTypes(params, inputs);
  EXPECT_EQ(outputs.size(), 1u);
  return outputs.at(0);
}

std::vector<const TensorType*> pointersTo(const std::vector<TensorType>& inputs) {
  std::vector<const TensorType*> pointers;
  pointers.reserve(inputs.size());
  for (const TensorType& input : inputs) pointers.push_back(&input);
  return pointers;
}

Dims inferDims(const LayerParams& params, const std::vector<TensorType>& inputs) {
  return inferOne(params, pointersTo(inputs)).dims;
}

// Expects inference to throw an Error whose message holds every part.
void expectError(const LayerParams& params, const std::vector<const TensorType*>& inputs,
                 const std::vector<std::string>& parts) {
  try {
    inferOutputTypes(params, inputs);
  } catch (const Error& error) {
    const std::string message = error.what();
    for (const std::string& part : parts) {
      EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
    }
    return;
  }
  ADD_FAILURE() << "expected an error for " << describe(params);
}

void expectError(const LayerParams& params, const std::vector<TensorType>& inputs,
                 const std::vector<std::string>& parts) {
  expectError(params, pointersTo(inputs), parts);
}

ConvolutionParams conv(int64_t outChannels, Dims kernel, Dims stride = {}, const Dims& padding = {},
                       Dims dilation = {}, int64_t groups = 1) {
  ConvolutionParams p;
  p.outChannels = outChannels;
  p.kernel = std::move(kernel);
  p.stride = std::move(stride);
  p.prePadding = padding;
  p.postPadding = padding;
  p.dilation = std::move(dilation);
  p.groups = groups;
  return p;
}

// ---- convolution ------------------------------------------------------------------------------

TEST(ShapeInference, Convolution2DStridePadding) {
  const TensorType x = typeOf({2, 3, 32, 32});
  const TensorType w = typeOf({16, 3, 3, 3});
  const TensorType b = typeOf({16});
  // (32 + 1 + 1 - 3) / 2 + 1 = 16
  EXPECT_EQ(inferOne(conv(16, {3, 3}, {2, 2}, {1, 1}), {&x, &w, &b}).dims, (Dims{2, 16, 16, 16}));
  EXPECT_EQ(inferOne(conv(16, {3, 3}), {&x, &w, nullptr}).dims, (Dims{2, 16, 30, 30}));
}

TEST(ShapeInference, ConvolutionGroupsDilationAsymmetricPadding) {
  ConvolutionParams p = conv(8, {3, 3}, {1, 3}, {}, {2, 1}, 2);
  p.prePadding = {0, 1};
  p.postPadding = {1, 0};
  // H: 10 + 0 + 1 - (2 * 2 + 1) = 6 -> 6 / 1 + 1 = 7. W: 12 + 1 + 0 - 3 = 10 -> 10 / 3 + 1 = 4.
  EXPECT_EQ(inferDims(p, {typeOf({1, 4, 10, 12}), typeOf({8, 2, 3, 3})}), (Dims{1, 8, 7, 4}));
}

TEST(ShapeInference, Convolution1DAnd3D) {
  // (100 - 5) / 4 + 1 = 24
  EXPECT_EQ(inferDims(conv(12, {5}, {4}), {typeOf({4, 6, 100}), typeOf({12, 6, 5})}),
            (Dims{4, 12, 24}));
  EXPECT_EQ(inferDims(conv(4, {3, 3, 3}), {typeOf({1, 2, 8, 8, 8}), typeOf({4, 2, 3, 3, 3})}),
            (Dims{1, 4, 6, 6, 6}));
}

TEST(ShapeInference, ConvolutionDynamicDims) {
  EXPECT_EQ(
      inferDims(conv(16, {3, 3}, {2, 2}, {1, 1}), {typeOf({-1, 3, -1, 32}), typeOf({16, 3, 3, 3})}),
      (Dims{-1, 16, -1, 16}));
  // An unknown channel count cannot be checked until run time.
  EXPECT_EQ(inferDims(conv(16, {3, 3}), {typeOf({1, -1, 5, 5}), typeOf({16, 3, 3, 3})}),
            (Dims{1, 16, 3, 3}));
}

TEST(ShapeInference, ConvolutionErrors) {
  const TensorType w = typeOf({16, 3, 3, 3});
  expectError(conv(16, {3, 3}), {typeOf({2, 4, 8, 8}), w}, {"channel mismatch", "4 channels"});
  expectError(conv(16, {3, 3}), {typeOf({2, 3, 8}), w}, {"mismatched ranks", "rank 3", "rank 4"});
  expectError(conv(16, {3, 3}), {typeOf({2, 3, 8, 8}), typeOf({16, 3, 3})},
              {"mismatched ranks", "weight"});
  expectError(conv(8, {3, 3}), {typeOf({2, 3, 8, 8}), w}, {"outChannels", "16 vs 8"});
  expectError(conv(16, {5, 5}), {typeOf({2, 3, 8, 8}), w}, {"kernel", "3 vs 5"});
  expectError(conv(16, {3, 3}), {typeOf({2, 3, 2, 8}), w}, {"smaller than the dilated kernel"});
  expectError(conv(16, {3, 3}), {typeOf({2, 3, 8, 8}), typeOf({16, 3, 3, 3}, DataType::kFloat16)},
              {"dtype mismatch", "float16", "float32"});
  expectError(conv(16, {3, 3}), {typeOf({2, 3, 8, 8}), w, typeOf({8})}, {"bias", "8 vs 16"});
  expectError(conv(16, {3, 3}, {1}), {typeOf({2, 3, 8, 8}), w}, {"stride", "2 spatial dims"});
  expectError(conv(16, {3, 3}, {}, {}, {}, 2), {typeOf({2, 3, 8, 8}), typeOf({16, 1, 3, 3})},
              {"not divisible by groups 2"});
  expectError(conv(16, {3, 3}), {typeOf({2, 3, 8, 8})}, {"inputs", "[x, weight, bias, residual]"});
}

TEST(ShapeInference, ConvolutionResidual) {
  const TensorType w = typeOf({16, 3, 3, 3});
  const TensorType x = typeOf({-1, 3, 8, 8});
  const TensorType residual = typeOf({2, 16, 6, 6});
  EXPECT_EQ(inferOne(conv(16, {3, 3}), {&x, &w, nullptr, &residual}).dims, (Dims{2, 16, 6, 6}));
  const TensorType wrongSize = typeOf({2, 16, 5, 6});
  expectError(conv(16, {3, 3}), {&x, &w, nullptr, &wrongSize}, {"residual's dim 2", "6 vs 5"});
  const TensorType wrongType = typeOf({2, 16, 6, 6}, DataType::kFloat16);
  expectError(conv(16, {3, 3}), {&x, &w, nullptr, &wrongType}, {"residual", "float16"});
}

// ---- deconvolution ----------------------------------------------------------------------------

DeconvolutionParams deconv(int64_t outChannels, Dims kernel, Dims stride, const Dims& padding,
                           Dims outputPadding = {}, Dims dilation = {}, int64_t groups = 1) {
  DeconvolutionParams p;
  p.outChannels = outChannels;
  p.kernel = std::move(kernel);
  p.stride = std::move(stride);
  p.prePadding = padding;
  p.postPadding = padding;
  p.outputPadding = std::move(outputPadding);
  p.dilation = std::move(dilation);
  p.groups = groups;
  return p;
}

TEST(ShapeInference, DeconvolutionStridePaddingOutputPadding) {
  // (5 - 1) * 2 - 1 - 1 + 1 * (3 - 1) + 1 + 1 = 10
  EXPECT_EQ(inferDims(deconv(4, {3, 3}, {2, 2}, {1, 1}, {1, 1}),
                      {typeOf({1, 8, 5, 5}), typeOf({8, 4, 3, 3}), typeOf({4})}),
            (Dims{1, 4, 10, 10}));
  // Without output padding: 9.
  EXPECT_EQ(
      inferDims(deconv(4, {3, 3}, {2, 2}, {1, 1}), {typeOf({1, 8, 5, 5}), typeOf({8, 4, 3, 3})}),
      (Dims{1, 4, 9, 9}));
}

TEST(ShapeInference, DeconvolutionGroupsDilation1D) {
  // Groups 2: weight (C=8, K/groups=2, 4, 4) gives K = 4. (5 - 1) * 2 - 2 + 3 + 1 = 10.
  EXPECT_EQ(inferDims(deconv(4, {4, 4}, {2, 2}, {1, 1}, {}, {}, 2),
                      {typeOf({1, 8, 5, 5}), typeOf({8, 2, 4, 4})}),
            (Dims{1, 4, 10, 10}));
  // 1-D, dilation 2: (7 - 1) * 1 + 2 * 2 + 1 = 11.
  EXPECT_EQ(inferDims(deconv(5, {3}, {1}, {0}, {}, {2}), {typeOf({2, 3, 7}), typeOf({3, 5, 3})}),
            (Dims{2, 5, 11}));
}

TEST(ShapeInference, DeconvolutionDynamicDims) {
  EXPECT_EQ(inferDims(deconv(4, {3, 3}, {2, 2}, {1, 1}, {1, 1}),
                      {typeOf({-1, 8, -1, 5}), typeOf({8, 4, 3, 3})}),
            (Dims{-1, 4, -1, 10}));
}

TEST(ShapeInference, DeconvolutionErrors) {
  expectError(deconv(4, {3, 3}, {2, 2}, {1, 1}, {2, 2}),
              {typeOf({1, 8, 5, 5}), typeOf({8, 4, 3, 3})},
              {"outputPadding", "smaller than the stride"});
  expectError(deconv(4, {3, 3}, {2, 2}, {1, 1}), {typeOf({1, 6, 5, 5}), typeOf({8, 4, 3, 3})},
              {"channel mismatch", "6 channels"});
  expectError(deconv(6, {3, 3}, {2, 2}, {1, 1}), {typeOf({1, 8, 5, 5}), typeOf({8, 4, 3, 3})},
              {"outChannels is 6"});
}

// ---- matmul and fully connected ---------------------------------------------------------------

TEST(ShapeInference, MatMulTransposes) {
  EXPECT_EQ(inferDims(MatMulParams{}, {typeOf({5, 7}), typeOf({7, 3})}), (Dims{5, 3}));
  EXPECT_EQ(inferDims(MatMulParams{true, false}, {typeOf({7, 5}), typeOf({7, 3})}), (Dims{5, 3}));
  EXPECT_EQ(inferDims(MatMulParams{false, true}, {typeOf({5, 7}), typeOf({3, 7})}), (Dims{5, 3}));
  EXPECT_EQ(inferDims(MatMulParams{true, true}, {typeOf({7, 5}), typeOf({3, 7})}), (Dims{5, 3}));
}

TEST(ShapeInference, MatMulBatchBroadcast) {
  EXPECT_EQ(inferDims(MatMulParams{}, {typeOf({2, 1, 4, 5}), typeOf({3, 5, 6})}),
            (Dims{2, 3, 4, 6}));
  EXPECT_EQ(inferDims(MatMulParams{}, {typeOf({3, 4, 5}), typeOf({5, 6})}), (Dims{3, 4, 6}));
  EXPECT_EQ(inferDims(MatMulParams{}, {typeOf({4, 5}), typeOf({2, 3, 5, 6})}), (Dims{2, 3, 4, 6}));
}

TEST(ShapeInference, MatMulDynamicDims) {
  EXPECT_EQ(inferDims(MatMulParams{}, {typeOf({-1, 4, 5}), typeOf({5, 6})}), (Dims{-1, 4, 6}));
  EXPECT_EQ(inferDims(MatMulParams{}, {typeOf({-1, -1, 5}), typeOf({1, 5, 6})}), (Dims{-1, -1, 6}));
  // A dynamic batch against 3 is 3; a dynamic K against 7 is checked at run time.
  EXPECT_EQ(inferDims(MatMulParams{}, {typeOf({-1, 4, -1}), typeOf({3, 7, 2})}), (Dims{3, 4, 2}));
}

TEST(ShapeInference, MatMulErrors) {
  expectError(MatMulParams{}, {typeOf({5, 7}), typeOf({6, 3})}, {"inner dims", "7 vs 6"});
  expectError(MatMulParams{}, {typeOf({7}), typeOf({7, 3})}, {"rank >= 2", "a [7]"});
  expectError(MatMulParams{}, {typeOf({2, 4, 5}), typeOf({3, 5, 6})},
              {"cannot broadcast", "[2]", "[3]"});
  expectError(MatMulParams{}, {typeOf({4, 5}), typeOf({5, 6}, DataType::kFloat16)},
              {"dtype mismatch"});
}

TEST(ShapeInference, FullyConnected) {
  const TensorType w = typeOf({4, 10});
  const TensorType b = typeOf({4});
  const TensorType x = typeOf({2, 3, 10});
  EXPECT_EQ(inferOne(FullyConnectedParams{}, {&x, &w, &b}).dims, (Dims{2, 3, 4}));
  const TensorType dynamic = typeOf({-1, 10});
  EXPECT_EQ(inferOne(FullyConnectedParams{}, {&dynamic, &w, nullptr}).dims, (Dims{-1, 4}));
  expectError(FullyConnectedParams{}, {typeOf({2, 12}), w}, {"input features", "12 vs 10"});
  expectError(FullyConnectedParams{}, {x, w, typeOf({5})}, {"bias", "5 vs 4"});
  expectError(FullyConnectedParams{}, {x, typeOf({4, 10, 1})}, {"mismatched ranks", "(N, K)"});
}

TEST(ShapeInference, FullyConnectedResidual) {
  const TensorType w = typeOf({4, 10});
  const TensorType x = typeOf({-1, 3, 10});
  const TensorType residual = typeOf({2, 3, 4});
  FullyConnectedParams gelu;
  gelu.activation = FusedActivation::kGeluErf;
  EXPECT_EQ(inferOne(gelu, {&x, &w, nullptr, &residual}).dims, (Dims{2, 3, 4}));
  const TensorType wrongSize = typeOf({2, 3, 5});
  expectError(gelu, {&x, &w, nullptr, &wrongSize}, {"residual [2, 3, 5]", "dim 2", "4 vs 5"});
  const TensorType wrongRank = typeOf({6, 4});
  expectError(gelu, {&x, &w, nullptr, &wrongRank}, {"residual [6, 4]", "output's dims"});
  const TensorType wrongType = typeOf({2, 3, 4}, DataType::kBFloat16);
  expectError(gelu, {&x, &w, nullptr, &wrongType}, {"residual", "bfloat16"});
  expectError(gelu, {x, w, typeOf({4}), residual, residual}, {"[x, weight, bias, residual]"});
}

TEST(ShapeInference, ConvolutionTakesNoGelu) {
  for (FusedActivation gelu : {FusedActivation::kGeluErf, FusedActivation::kGeluTanh}) {
    ConvolutionParams p = conv(16, {3, 3});
    p.activation = gelu;
    expectError(
        p, {typeOf({2, 3, 8, 8}), typeOf({16, 3, 3, 3})},
        {"convolution's fused activation is none, relu, relu6, silu or hardswish", toString(gelu)});
  }
}

// ---- elementwise, unary, activation, cast -----------------------------------------------------

TEST(ShapeInference, ElementwiseBroadcasting) {
  const ElementwiseParams sum{ElementwiseOp::kSum};
  EXPECT_EQ(inferDims(sum, {typeOf({2, 3, 4}), typeOf({4})}), (Dims{2, 3, 4}));
  EXPECT_EQ(inferDims(sum, {typeOf({2, 1, 4}), typeOf({3, 1})}), (Dims{2, 3, 4}));
  EXPECT_EQ(inferDims(sum, {typeOf({}), typeOf({2, 3})}), (Dims{2, 3}));
  EXPECT_EQ(inferDims(sum, {typeOf({0, 3}), typeOf({1, 3})}), (Dims{0, 3}));
}

TEST(ShapeInference, ElementwiseBroadcastingDynamicDims) {
  const ElementwiseParams prod{ElementwiseOp::kProd};
  EXPECT_EQ(inferDims(prod, {typeOf({-1, 3}), typeOf({1, 3})}), (Dims{-1, 3}));
  EXPECT_EQ(inferDims(prod, {typeOf({-1, 3}), typeOf({5, 3})}), (Dims{5, 3}));
  EXPECT_EQ(inferDims(prod, {typeOf({-1, 1}), typeOf({1, -1})}), (Dims{-1, -1}));
  EXPECT_EQ(inferDims(prod, {typeOf({-1, 4}), typeOf({-1, 4})}), (Dims{-1, 4}));
  EXPECT_EQ(inferDims(prod, {typeOf({3}), typeOf({-1, -1})}), (Dims{-1, 3}));
}

TEST(ShapeInference, ElementwiseOutputTypes) {
  const TensorType a = typeOf({2, 3}, DataType::kInt32);
  for (ElementwiseOp op : {ElementwiseOp::kEqual, ElementwiseOp::kLess, ElementwiseOp::kGreater}) {
    EXPECT_EQ(inferOne(ElementwiseParams{op}, {&a, &a}).dtype, DataType::kBool) << toString(op);
  }
  for (ElementwiseOp op : {ElementwiseOp::kSum, ElementwiseOp::kFloorDiv, ElementwiseOp::kMax}) {
    EXPECT_EQ(inferOne(ElementwiseParams{op}, {&a, &a}).dtype, DataType::kInt32) << toString(op);
  }
  const TensorType flag = typeOf({4}, DataType::kBool);
  EXPECT_EQ(inferOne(ElementwiseParams{ElementwiseOp::kAnd}, {&flag, &flag}).dtype,
            DataType::kBool);
}

TEST(ShapeInference, ElementwiseErrors) {
  expectError(ElementwiseParams{ElementwiseOp::kSum}, {typeOf({2, 3}), typeOf({4, 3})},
              {"cannot broadcast", "[2, 3]", "[4, 3]", "dim 0"});
  expectError(ElementwiseParams{ElementwiseOp::kSub},
              {typeOf({2, 3}), typeOf({2, 3}, DataType::kInt32)},
              {"dtype mismatch", "int32", "float32"});
  expectError(ElementwiseParams{ElementwiseOp::kSum}, {typeOf({2, 3})}, {"[a, b]"});
}

TEST(ShapeInference, UnaryActivationAndCastKeepDims) {
  const TensorType x = typeOf({-1, 3, 5}, DataType::kFloat16);
  const TensorType unary = inferOne(UnaryParams{UnaryOp::kExp}, {&x});
  EXPECT_EQ(unary.dims, x.dims);
  EXPECT_EQ(unary.dtype, DataType::kFloat16);
  const TensorType flag = typeOf({2}, DataType::kBool);
  EXPECT_EQ(inferOne(UnaryParams{UnaryOp::kNot}, {&flag}).dtype, DataType::kBool);
  const TensorType activation = inferOne(ActivationParams{ActivationType::kClip, 0.0, 6.0}, {&x});
  EXPECT_EQ(activation.dims, x.dims);
  EXPECT_EQ(activation.dtype, DataType::kFloat16);
  const TensorType cast = inferOne(CastParams{DataType::kInt64}, {&x});
  EXPECT_EQ(cast.dims, x.dims);
  EXPECT_EQ(cast.dtype, DataType::kInt64);
  expectError(UnaryParams{UnaryOp::kExp}, {x, x}, {"[x]"});
  expectError(ActivationParams{}, std::vector<const TensorType*>{nullptr}, {"x", "missing"});
}

// ---- pooling ----------------------------------------------------------------------------------

PoolingParams pool(PoolingType type, Dims kernel, Dims stride, const Dims& padding,
                   bool ceilMode = false) {
  PoolingParams p;
  p.type = type;
  p.kernel = std::move(kernel);
  p.stride = std::move(stride);
  p.prePadding = padding;
  p.postPadding = padding;
  p.ceilMode = ceilMode;
  return p;
}

TEST(ShapeInference, PoolingMaxAndAverage) {
  // H: (11 + 2 - 3) / 2 + 1 = 6. W: (10 + 2 - 3) / 2 + 1 = 5.
  EXPECT_EQ(inferDims(pool(PoolingType::kMax, {3, 3}, {2, 2}, {1, 1}), {typeOf({2, 3, 11, 10})}),
            (Dims{2, 3, 6, 5}));
  // An empty stride is 1 in every dim.
  EXPECT_EQ(inferDims(pool(PoolingType::kAverage, {2, 2}, {}, {}), {typeOf({1, 1, 5, 5})}),
            (Dims{1, 1, 4, 4}));
  EXPECT_EQ(inferDims(pool(PoolingType::kMax, {2}, {2}, {0}), {typeOf({1, 1, 7})}),
            (Dims{1, 1, 3}));
  EXPECT_EQ(inferDims(pool(PoolingType::kAverage, {2, 2, 2}, {2, 2, 2}, {0, 0, 0}),
                      {typeOf({1, 1, 4, 4, 5})}),
            (Dims{1, 1, 2, 2, 2}));
  PoolingParams dilated = pool(PoolingType::kMax, {2, 2}, {1, 1}, {0, 0});
  dilated.dilation = {2, 1};
  // H: 8 - (2 * 1 + 1) = 5 -> 6. W: 8 - 2 = 6 -> 7.
  EXPECT_EQ(inferDims(dilated, {typeOf({1, 1, 8, 8})}), (Dims{1, 1, 6, 7}));
}

TEST(ShapeInference, PoolingCeilMode) {
  // Ceil mode rounds up, unless the last window would start in the right padding (torch's rule).
  // (10 + 2 - 3) = 9 -> ceil(9 / 2) + 1 = 6; (9 - 2) = 7 -> ceil(7 / 2) + 1 = 5.
  PoolingParams p = pool(PoolingType::kMax, {3, 2}, {2, 2}, {1, 0}, true);
  EXPECT_EQ(inferDims(p, {typeOf({1, 1, 10, 9})}), (Dims{1, 1, 6, 5}));
  // 5 + 2 - 2 = 5 -> ceil(5 / 2) + 1 = 4, but window 3 would start at 6 >= 5 + 1: 3.
  EXPECT_EQ(inferDims(pool(PoolingType::kMax, {2}, {2}, {1}, true), {typeOf({1, 1, 5})}),
            (Dims{1, 1, 3}));
  EXPECT_EQ(inferDims(pool(PoolingType::kMax, {2}, {2}, {1}, false), {typeOf({1, 1, 5})}),
            (Dims{1, 1, 3}));
  EXPECT_EQ(inferDims(pool(PoolingType::kMax, {2}, {2}, {0}, true), {typeOf({1, 1, 5})}),
            (Dims{1, 1, 3}));
  EXPECT_EQ(inferDims(pool(PoolingType::kMax, {2}, {2}, {0}, false), {typeOf({1, 1, 5})}),
            (Dims{1, 1, 2}));
}

TEST(ShapeInference, PoolingAdaptiveAndDynamic) {
  PoolingParams adaptive;
  adaptive.type = PoolingType::kAverage;
  adaptive.adaptive = true;
  adaptive.outputSize = {1, 1};
  EXPECT_EQ(inferDims(adaptive, {typeOf({2, 3, -1, -1})}), (Dims{2, 3, 1, 1}));
  adaptive.outputSize = {3, 4};
  EXPECT_EQ(inferDims(adaptive, {typeOf({1, 1, 5, 7})}), (Dims{1, 1, 3, 4}));
  EXPECT_EQ(inferDims(pool(PoolingType::kMax, {3, 3}, {2, 2}, {1, 1}), {typeOf({-1, 3, -1, 10})}),
            (Dims{-1, 3, -1, 5}));
}

TEST(ShapeInference, PoolingErrors) {
  expectError(pool(PoolingType::kMax, {3, 3}, {2, 2}, {1, 1}), {typeOf({2, 3, 8, 8, 8})},
              {"mismatched ranks", "rank 5", "rank 4"});
  expectError(pool(PoolingType::kMax, {3, 3}, {2, 2}, {1, 1}), {typeOf({8, 8})}, {"rank >= 3"});
  expectError(pool(PoolingType::kMax, {5, 5}, {1, 1}, {0, 0}), {typeOf({1, 1, 4, 8})},
              {"smaller than the dilated kernel"});
  expectError(pool(PoolingType::kMax, {3, 3}, {0, 1}, {0, 0}), {typeOf({1, 1, 8, 8})},
              {"stride", ">= 1"});
  PoolingParams adaptive;
  adaptive.adaptive = true;
  adaptive.outputSize = {2};
  expectError(adaptive, {typeOf({1, 1, 8, 8})}, {"outputSize", "2 spatial dims"});
}

// ---- reduce and softmax -----------------------------------------------------------------------

TEST(ShapeInference, ReduceAxesAndKeepDims) {
  const TensorType x = typeOf({2, 3, 4});
  EXPECT_EQ(inferDims(ReduceParams{ReduceOp::kSum, {1}, true}, {x}), (Dims{2, 1, 4}));
  EXPECT_EQ(inferDims(ReduceParams{ReduceOp::kMax, {1}, false}, {x}), (Dims{2, 4}));
  EXPECT_EQ(inferDims(ReduceParams{ReduceOp::kAvg, {0, -1}, false}, {x}), (Dims{3}));
  EXPECT_EQ(inferDims(ReduceParams{ReduceOp::kProd, {}, false}, {x}), (Dims{}));
  EXPECT_EQ(inferDims(ReduceParams{ReduceOp::kMin, {}, true}, {x}), (Dims{1, 1, 1}));
  EXPECT_EQ(inferDims(ReduceParams{ReduceOp::kSum, {1}, false}, {typeOf({-1, 3, -1})}),
            (Dims{-1, -1}));
  const TensorType ints = typeOf({2, 3}, DataType::kInt32);
  EXPECT_EQ(inferOne(ReduceParams{ReduceOp::kSum, {1}, false}, {&ints}).dtype, DataType::kInt32);
}

TEST(ShapeInference, ReduceErrors) {
  expectError(ReduceParams{ReduceOp::kSum, {3}, false}, {typeOf({2, 3, 4})},
              {"reduce axis 3", "rank 3"});
  expectError(ReduceParams{ReduceOp::kSum, {-4}, false}, {typeOf({2, 3, 4})},
              {"reduce axis -4", "rank 3"});
  expectError(ReduceParams{ReduceOp::kSum, {1, -2}, false}, {typeOf({2, 3, 4})}, {"listed twice"});
}

TEST(ShapeInference, Softmax) {
  EXPECT_EQ(inferDims(SoftmaxParams{-1, false}, {typeOf({-1, 10})}), (Dims{-1, 10}));
  EXPECT_EQ(inferDims(SoftmaxParams{0, true}, {typeOf({4, 10})}), (Dims{4, 10}));
  EXPECT_EQ(inferDims(SoftmaxParams{-1, false}, {typeOf({})}), (Dims{}));
  expectError(SoftmaxParams{2, false}, {typeOf({4, 10})}, {"softmax axis 2", "rank 2"});
  expectError(SoftmaxParams{-1, false}, {typeOf({4}, DataType::kInt32)},
              {"floating-point", "int32"});
}

// ---- normalization ----------------------------------------------------------------------------

TEST(ShapeInference, BatchNormalization) {
  const NormalizationParams p{NormalizationType::kBatch, 1e-5, 1};
  const TensorType x = typeOf({2, 3, 4, 4});
  const TensorType c = typeOf({3});
  EXPECT_EQ(inferOne(p, {&x, &c, &c, &c, &c}).dims, x.dims);
  EXPECT_EQ(inferOne(p, {&x, nullptr, nullptr, &c, &c}).dims, x.dims);
  const TensorType dynamic = typeOf({-1, -1, 7});
  EXPECT_EQ(inferOne(p, {&dynamic, &c, &c, &c, &c}).dims, dynamic.dims);

  const TensorType four = typeOf({4});
  expectError(p, {&x, &c, &c, &four, &c}, {"channel mismatch", "mean", "4 vs 3"});
  expectError(p, {&x, &c, &c, nullptr, &c}, {"mean", "missing"});
  const TensorType half = typeOf({3}, DataType::kFloat16);
  expectError(p, {&x, &half, &c, &c, &c}, {"dtype mismatch", "scale"});
  const TensorType vector = typeOf({3});
  expectError(p, {&vector, &c, &c, &c, &c}, {"rank >= 2"});

  // Channels last: the channels at the axis named.
  const NormalizationParams last{NormalizationType::kBatch, 1e-5, -1};
  const TensorType nhwc = typeOf({2, 4, 4, 3});
  EXPECT_EQ(inferOne(last, {&nhwc, &c, &c, &c, &c}).dims, nhwc.dims);
  expectError(last, {&x, &c, &c, &c, &c}, {"channel mismatch", "dim 3"});
  expectError(NormalizationParams{NormalizationType::kBatch, 1e-5, 4}, {&x, &c, &c, &c, &c},
              {"axis 4"});
}

TEST(ShapeInference, LayerNormalization) {
  const TensorType x = typeOf({2, 5, 8});
  const TensorType last = typeOf({8});
  const TensorType lastTwo = typeOf({5, 8});
  EXPECT_EQ(
      inferOne(NormalizationParams{NormalizationType::kLayer, 1e-5, 2}, {&x, &last, &last}).dims,
      x.dims);
  EXPECT_EQ(inferOne(NormalizationParams{NormalizationType::kLayer, 1e-5, -2},
                     {&x, &lastTwo, nullptr, nullptr, nullptr})
                .dims,
            x.dims);
  const TensorType dynamic = typeOf({-1, -1, 8});
  EXPECT_EQ(
      inferOne(NormalizationParams{NormalizationType::kLayer, 1e-5, -1}, {&dynamic, &last}).dims,
      dynamic.dims);

  const TensorType seven = typeOf({7});
  expectError(NormalizationParams{NormalizationType::kLayer, 1e-5, 2}, {&x, &seven, nullptr},
              {"scale [7]", "normalized dims [8]"});
  expectError(NormalizationParams{NormalizationType::kLayer, 1e-5, 1}, {x, last},
              {"mismatched ranks", "scale [8]", "[5, 8]"});
  expectError(NormalizationParams{NormalizationType::kLayer, 1e-5, 3}, {x},
              {"layer normalization axis 3", "rank 3"});
  expectError(NormalizationParams{NormalizationType::kLayer, 1e-5, 2},
              {&x, &last, &last, nullptr, &last}, {"var", "must be null"});
  EXPECT_EQ(
      inferOne(NormalizationParams{NormalizationType::kLayer, 1e-5, 2}, {&x, &last, &last, &x})
          .dims,
      x.dims);
  expectError(NormalizationParams{NormalizationType::kLayer, 1e-5, 2}, {&x, &last, &last, &last},
              {"residual", "rank"});
}

// ---- shuffle ----------------------------------------------------------------------------------

ShuffleParams reshapeTo(Dims dims) {
  ShuffleParams p;
  p.hasReshape = true;
  p.reshapeDims = std::move(dims);
  return p;
}

TEST(ShapeInference, ShuffleReshapeZeroAndMinusOne) {
  const TensorType x = typeOf({2, 3, 4});
  EXPECT_EQ(inferDims(reshapeTo({0, -1}), {x}), (Dims{2, 12}));
  EXPECT_EQ(inferDims(reshapeTo({-1}), {x}), (Dims{24}));
  EXPECT_EQ(inferDims(reshapeTo({4, 0, 2}), {x}), (Dims{4, 3, 2}));
  EXPECT_EQ(inferDims(reshapeTo({2, 3, 2, -1}), {x}), (Dims{2, 3, 2, 2}));
  EXPECT_EQ(inferDims(reshapeTo({}), {typeOf({1, 1})}), (Dims{}));
}

TEST(ShapeInference, ShuffleReshapeDynamicDims) {
  // The copied unknown batch cancels, so the -1 is still known.
  EXPECT_EQ(inferDims(reshapeTo({0, -1}), {typeOf({-1, 3, 4})}), (Dims{-1, 12}));
  EXPECT_EQ(inferDims(reshapeTo({0, 0, 2, 2}), {typeOf({-1, 3, 4})}), (Dims{-1, 3, 2, 2}));
  EXPECT_EQ(inferDims(reshapeTo({-1, 4}), {typeOf({-1, 3, 4})}), (Dims{-1, 4}));
  EXPECT_EQ(inferDims(reshapeTo({-1}), {typeOf({2, -1})}), (Dims{-1}));
  EXPECT_EQ(inferDims(reshapeTo({6, 2}), {typeOf({-1, 3, 4})}), (Dims{6, 2}));
}

// GPT-2's (N * L, C) viewed back as (N, L, C): N and L read from a reference (N, L) tensor.
TEST(ShapeInference, ShuffleReshapeDimsFromAReference) {
  ShuffleParams p = reshapeTo({1, 1, 8});  // the 1s: placeholders of the referenced sizes
  p.reshapeReferences = {0, 1, -1};
  EXPECT_EQ(inferDims(p, {typeOf({6, 8}), typeOf({2, 3})}), (Dims{2, 3, 8}));
  EXPECT_EQ(inferDims(p, {typeOf({-1, 8}), typeOf({-1, -1})}), (Dims{-1, -1, 8}));
  EXPECT_EQ(inferDims(p, {typeOf({-1, 8}), typeOf({-1, 5})}), (Dims{-1, 5, 8}));
  expectError(p, {typeOf({7, 8}), typeOf({2, 3})}, {"cannot reshape", "element counts"});
  expectError(p, {typeOf({6, 8})}, {"[x, reference]"});
  ShuffleParams outside = p;
  outside.reshapeReferences = {0, 2, -1};
  expectError(outside, {typeOf({6, 8}), typeOf({2, 3})}, {"reference dim 2", "[2, 3]"});
}

TEST(ShapeInference, ShuffleTransposes) {
  ShuffleParams first;
  first.firstPermutation = {2, 0, 1};
  EXPECT_EQ(inferDims(first, {typeOf({2, 3, 4})}), (Dims{4, 2, 3}));
  EXPECT_EQ(inferDims(first, {typeOf({-1, 3, 4})}), (Dims{4, -1, 3}));
  // (2, 3, 4) -> (3, 2, 4) -> (3, 8) -> (8, 3)
  ShuffleParams both = reshapeTo({3, 8});
  both.firstPermutation = {1, 0, 2};
  both.secondPermutation = {1, 0};
  EXPECT_EQ(inferDims(both, {typeOf({2, 3, 4})}), (Dims{8, 3}));
  ShuffleParams none;
  EXPECT_EQ(inferDims(none, {typeOf({2, 3})}), (Dims{2, 3}));
}

TEST(ShapeInference, ShuffleErrors) {
  const TensorType x = typeOf({2, 3});
  expectError(reshapeTo({4, 2}), {x}, {"cannot reshape [2, 3] to [4, 2]", "element counts"});
  expectError(reshapeTo({4, -1}), {x}, {"cannot reshape [2, 3] to [4, -1]", "divide"});
  expectError(reshapeTo({-1, -1}), {x}, {"more than one -1"});
  expectError(reshapeTo({0, 0, 0}), {x}, {"copy dim 2", "rank 2"});
  expectError(reshapeTo({-2, 3}), {x}, {"hold -2"});
  ShuffleParams badPermutation;
  badPermutation.firstPermutation = {0, 0};
  expectError(badPermutation, {x}, {"firstPermutation [0, 0]", "not a permutation"});
  ShuffleParams wrongLength;
  wrongLength.firstPermutation = {0, 1, 2};
  expectError(wrongLength, {x}, {"mismatched ranks", "firstPermutation", "rank 2"});
  ShuffleParams secondWrong = reshapeTo({6});
  secondWrong.secondPermutation = {1, 0};
  expectError(secondWrong, {x}, {"secondPermutation", "rank 1"});
}

// ---- concat, slice, gather --------------------------------------------------------------------

TEST(ShapeInference, Concat) {
  EXPECT_EQ(inferDims(ConcatParams{1}, {typeOf({2, 1, 3}), typeOf({2, 2, 3})}), (Dims{2, 3, 3}));
  EXPECT_EQ(inferDims(ConcatParams{-2}, {typeOf({2, 1, 3}), typeOf({2, 2, 3})}), (Dims{2, 3, 3}));
  EXPECT_EQ(inferDims(ConcatParams{0}, {typeOf({2}), typeOf({1}), typeOf({2})}), (Dims{5}));
  // A known dim refines an unknown one off the axis; along it, one unknown makes the sum unknown.
  EXPECT_EQ(inferDims(ConcatParams{1}, {typeOf({-1, 2}), typeOf({4, 3})}), (Dims{4, 5}));
  EXPECT_EQ(inferDims(ConcatParams{1}, {typeOf({2, -1}), typeOf({2, 3})}), (Dims{2, -1}));
}

TEST(ShapeInference, ConcatErrors) {
  expectError(ConcatParams{1}, {typeOf({2, 3}), typeOf({2, 3, 1})},
              {"mismatched ranks", "input 1", "rank 3"});
  expectError(ConcatParams{1}, {typeOf({2, 3}), typeOf({4, 3})},
              {"only along axis 1", "dim 0", "2 vs 4"});
  expectError(ConcatParams{2}, {typeOf({2, 3}), typeOf({2, 3})}, {"concat axis 2", "rank 2"});
  expectError(ConcatParams{0}, {typeOf({2}), typeOf({2}, DataType::kInt64)}, {"dtype mismatch"});
  expectError(ConcatParams{0}, std::vector<const TensorType*>{}, {"at least one input"});
}

TEST(ShapeInference, Slice) {
  const TensorType x = typeOf({5, 6});
  // Axis 0: [1, 4) step 2 = 2 elements. Axis 1: [-4 = 2, end) = 4 elements.
  EXPECT_EQ(inferDims(SliceParams{{0, 1}, {1, -4}, {4, kSliceEnd}, {2, 1}, {}}, {x}), (Dims{2, 4}));
  // Python clamps out-of-range bounds.
  EXPECT_EQ(inferDims(SliceParams{{0}, {-10}, {100}, {}, {}}, {x}), (Dims{5, 6}));
  EXPECT_EQ(inferDims(SliceParams{{-1}, {4}, {2}, {}, {}}, {x}), (Dims{5, 0}));
  EXPECT_EQ(inferDims(SliceParams{{1}, {0}, {-1}, {3}, {}}, {x}), (Dims{5, 2}));
  // Slicing a dynamic axis leaves it unknown; other axes stay exact.
  EXPECT_EQ(inferDims(SliceParams{{0, 1}, {1, 0}, {kSliceEnd, 3}, {}, {}}, {typeOf({-1, 6})}),
            (Dims{-1, 3}));
}

TEST(ShapeInference, SliceEndingAtAReferenceDim) {
  const TensorType x = typeOf({1, 512});
  const TensorType ids = typeOf({4, 77});
  // x[:, :ids.size(1)] and x[:, 2:ids.size(1) + 3].
  EXPECT_EQ(inferDims(SliceParams{{1}, {0}, {0}, {1}, {1}}, {x, ids}), (Dims{1, 77}));
  EXPECT_EQ(inferDims(SliceParams{{1}, {2}, {3}, {1}, {1}}, {x, ids}), (Dims{1, 78}));
  // The end is still clamped to the dim.
  EXPECT_EQ(inferDims(SliceParams{{1}, {0}, {0}, {1}, {1}}, {x, typeOf({1, 600})}), (Dims{1, 512}));
  // Step 0 broadcasts a size-1 dim to the reference's dim, without clamping.
  EXPECT_EQ(inferDims(SliceParams{{0}, {0}, {0}, {0}, {0}}, {x, ids}), (Dims{4, 512}));
  // A dynamic reference dim leaves the axis unknown.
  EXPECT_EQ(inferDims(SliceParams{{0}, {0}, {0}, {0}, {0}}, {x, typeOf({-1, 77})}),
            (Dims{-1, 512}));
  // -1 keeps the given end (axis 0); a reference end adds the given end (axis 1: 4 + 5).
  EXPECT_EQ(inferDims(SliceParams{{0, 1}, {0, 0}, {3, 5}, {0, 1}, {-1, 0}}, {x, ids}),
            (Dims{3, 9}));
}

TEST(ShapeInference, SliceErrors) {
  const TensorType x = typeOf({5, 6});
  expectError(SliceParams{{0}, {0}, {2}, {-1}, {}}, {x}, {"step -1", "must not be negative"});
  expectError(SliceParams{{0}, {5}, {7}, {0}, {}}, {x}, {"step 0 repeats element 5", "dim of 5"});
  expectError(SliceParams{{0}, {0}, {2}, {1}, {0}}, {x}, {"[x, reference]", "1 were given"});
  expectError(SliceParams{{0}, {0}, {2}, {1}, {2}}, {x, x}, {"reference dim 2"});
  expectError(SliceParams{{2}, {0}, {2}, {}, {}}, {x}, {"slice axis 2", "rank 2"});
  expectError(SliceParams{{0, 1}, {0}, {2, 2}, {}, {}}, {x},
              {"one start, end, step and end reference per axis"});
  expectError(SliceParams{{0, -2}, {0, 0}, {2, 2}, {}, {}}, {x}, {"listed twice"});
}

TEST(ShapeInference, Gather) {
  const TensorType data = typeOf({5, 4});
  EXPECT_EQ(inferDims(GatherParams{0}, {data, typeOf({3}, DataType::kInt64)}), (Dims{3, 4}));
  EXPECT_EQ(inferDims(GatherParams{1}, {data, typeOf({2, 2}, DataType::kInt32)}), (Dims{5, 2, 2}));
  EXPECT_EQ(inferDims(GatherParams{-1}, {data, typeOf({}, DataType::kInt32)}), (Dims{5}));
  EXPECT_EQ(inferDims(GatherParams{0}, {typeOf({-1, 4}), typeOf({-1}, DataType::kInt64)}),
            (Dims{-1, 4}));
  const TensorType indices = typeOf({3}, DataType::kInt64);
  EXPECT_EQ(inferOne(GatherParams{0}, {&data, &indices}).dtype, DataType::kFloat32);
  expectError(GatherParams{0}, {data, typeOf({3})}, {"int32 or int64", "float32"});
  expectError(GatherParams{2}, {data, indices}, {"gather axis 2", "rank 2"});

  const GatherParams element{1, GatherMode::kElement};
  EXPECT_EQ(inferDims(element, {data, typeOf({5, 9}, DataType::kInt64)}), (Dims{5, 9}));
  EXPECT_EQ(inferDims(element, {typeOf({-1, 4}), typeOf({-1, 2}, DataType::kInt64)}),
            (Dims{-1, 2}));
  expectError(element, {data, typeOf({5}, DataType::kInt64)}, {"element gather", "rank 2"});
  expectError(element, {data, typeOf({3, 2}, DataType::kInt64)},
              {"element gather along axis 1", "[3, 2]", "except along the axis"});
}

// ---- constant ---------------------------------------------------------------------------------

TEST(ShapeInference, Constant) {
  const Weights weights = Weights::fromValues(DataType::kInt32, {2, 3}, std::vector<int32_t>(6));
  const TensorType out = inferOne(ConstantParams{weights}, {});
  EXPECT_EQ(out.dims, (Dims{2, 3}));
  EXPECT_EQ(out.dtype, DataType::kInt32);
  const Weights scalar = Weights::fromValues(DataType::kFloat32, {}, std::vector<float>{1.0f});
  EXPECT_EQ(inferOne(ConstantParams{scalar}, {}).dims, (Dims{}));

  Weights truncated = weights;
  truncated.dims = {2, 4};
  expectError(ConstantParams{truncated}, std::vector<const TensorType*>{},
              {"need 32 bytes", "hold 24"});
  const TensorType x = typeOf({1});
  expectError(ConstantParams{weights}, {&x}, {"no inputs"});
}

// ---- attention ---------------------------------------------------------------------------

TEST(ShapeInference, AttentionGroupedHeadsAndMasks) {
  const TensorType q = typeOf({2, 8, 5, 16}, DataType::kFloat16);
  const TensorType k = typeOf({2, 2, 7, 16}, DataType::kFloat16);
  const TensorType v = typeOf({2, 2, 7, 32}, DataType::kFloat16);
  const TensorType out = inferOne(AttentionParams{}, {&q, &k, &v});
  EXPECT_EQ(out.dims, (Dims{2, 8, 5, 32}));
  EXPECT_EQ(out.dtype, DataType::kFloat16);
  const TensorType boolMask = typeOf({5, 7}, DataType::kBool);
  EXPECT_EQ(inferOne(AttentionParams{}, {&q, &k, &v, &boolMask}).dims, (Dims{2, 8, 5, 32}));
  const TensorType dynamic = typeOf({-1, 8, -1, 16}, DataType::kFloat16);
  const TensorType dynamicKeys = typeOf({-1, 8, -1, 16}, DataType::kFloat16);
  EXPECT_EQ(inferOne(AttentionParams{}, {&dynamic, &dynamicKeys, &dynamicKeys}).dims,
            (Dims{-1, 8, -1, 16}));
}

TEST(ShapeInference, AttentionErrors) {
  const TensorType q = typeOf({2, 6, 5, 16});
  const TensorType k = typeOf({2, 4, 7, 16});
  const TensorType v = typeOf({2, 4, 7, 16});
  expectError(AttentionParams{}, {&q, &k, &v}, {"key/value head count 4", "query head count 6"});
  const TensorType k3 = typeOf({2, 7, 16});
  expectError(AttentionParams{}, {&q, &k3, &k3}, {"rank 4"});
  const TensorType kv = typeOf({2, 6, 7, 16});
  const TensorType badMask = typeOf({5, 1}, DataType::kBool);
  expectError(AttentionParams{}, {&q, &kv, &kv, &badMask}, {"last dim", "key count 7"});
  const TensorType intMask = typeOf({5, 7}, DataType::kInt32);
  expectError(AttentionParams{}, {&q, &kv, &kv, &intMask}, {"mask must be bool", "int32"});
  const TensorType halfKeys = typeOf({2, 6, 7, 16}, DataType::kFloat16);
  expectError(AttentionParams{}, {&q, &halfKeys, &kv}, {"dtype mismatch"});
}

ResizeParams resize(ResizeMode mode, Dims outputSize, std::vector<double> scales = {}) {
  ResizeParams p;
  p.mode = mode;
  p.outputSize = std::move(outputSize);
  p.scales = std::move(scales);
  return p;
}

TEST(ShapeInference, ResizeKeepsBatchAndChannels) {
  EXPECT_EQ(inferDims(resize(ResizeMode::kLinear, {7, 9}), {typeOf({-1, 3, 5, 6})}),
            (Dims{-1, 3, 7, 9}));
  EXPECT_EQ(inferDims(resize(ResizeMode::kNearest, {4}, {0.5}), {typeOf({2, 3, 8})}),
            (Dims{2, 3, 4}));
  const TensorType half = inferOne(resize(ResizeMode::kCubic, {2, 2}),
                                   pointersTo({typeOf({1, 1, 3, 3}, DataType::kFloat16)}));
  EXPECT_EQ(half.dtype, DataType::kFloat16);
}

TEST(ShapeInference, ResizeErrors) {
  expectError(resize(ResizeMode::kLinear, {7, 9}), {typeOf({2, 3, 5})}, {"mismatched ranks"});
  expectError(resize(ResizeMode::kLinear, {7}), {typeOf({2, 3, 5}, DataType::kInt32)},
              {"floating-point"});
  expectError(resize(ResizeMode::kCubic, {7}), {typeOf({2, 3, 5})}, {"cubic", "2 spatial"});
  expectError(resize(ResizeMode::kNearest, {0}), {typeOf({2, 3, 5})}, {"outputSize"});
  expectError(resize(ResizeMode::kNearest, {4}, {1.0, 2.0}), {typeOf({2, 3, 5})},
              {"one per spatial dim"});
}

TEST(ShapeInference, CumulativeKeepsTypeAndDims) {
  const TensorType x = typeOf({-1, 4, 5}, DataType::kInt64);
  const TensorType y = inferOne(CumulativeParams{CumulativeOp::kSum, -2}, pointersTo({x}));
  EXPECT_EQ(y.dtype, DataType::kInt64);
  EXPECT_EQ(y.dims, x.dims);
  expectError(CumulativeParams{CumulativeOp::kProd, 3}, {typeOf({2, 3, 4})}, {"axis 3"});
  expectError(CumulativeParams{CumulativeOp::kSum, 0}, {typeOf({2}, DataType::kBool)},
              {"int32, int64"});
}

}  // namespace
}  // namespace kiln
