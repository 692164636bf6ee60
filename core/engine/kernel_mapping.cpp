#include "core/engine/kernel_mapping.h"

#include "core/ir/types.h"

namespace kiln {

kernels::ScalarType toKernelType(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return kernels::ScalarType::kFloat32;
    case DataType::kFloat16:
      return kernels::ScalarType::kFloat16;
    case DataType::kBFloat16:
      return kernels::ScalarType::kBFloat16;
    case DataType::kInt8:
      return kernels::ScalarType::kInt8;
    case DataType::kInt32:
      return kernels::ScalarType::kInt32;
    case DataType::kInt64:
      return kernels::ScalarType::kInt64;
    case DataType::kBool:
      return kernels::ScalarType::kBool;
    case DataType::kUInt8:
      return kernels::ScalarType::kUInt8;
  }
  throw Error(concat("unknown data type ", static_cast<int>(type)));
}

kernels::BinaryOp toBinaryOp(ElementwiseOp op) {
  switch (op) {
    case ElementwiseOp::kSum:
      return kernels::BinaryOp::kAdd;
    case ElementwiseOp::kSub:
      return kernels::BinaryOp::kSub;
    case ElementwiseOp::kProd:
      return kernels::BinaryOp::kMul;
    case ElementwiseOp::kDiv:
      return kernels::BinaryOp::kDiv;
    case ElementwiseOp::kPow:
      return kernels::BinaryOp::kPow;
    case ElementwiseOp::kMax:
      return kernels::BinaryOp::kMax;
    case ElementwiseOp::kMin:
      return kernels::BinaryOp::kMin;
    case ElementwiseOp::kFloorDiv:
      return kernels::BinaryOp::kFloorDiv;
    case ElementwiseOp::kEqual:
      return kernels::BinaryOp::kEqual;
    case ElementwiseOp::kLess:
      return kernels::BinaryOp::kLess;
    case ElementwiseOp::kGreater:
      return kernels::BinaryOp::kGreater;
    case ElementwiseOp::kAnd:
      return kernels::BinaryOp::kAnd;
    case ElementwiseOp::kOr:
      return kernels::BinaryOp::kOr;
    case ElementwiseOp::kXor:
      return kernels::BinaryOp::kXor;
  }
  throw Error(concat("unknown elementwise op ", static_cast<int>(op)));
}

kernels::UnaryFunction toUnaryFunction(UnaryOp op) {
  switch (op) {
    case UnaryOp::kExp:
      return kernels::UnaryFunction::kExp;
    case UnaryOp::kLog:
      return kernels::UnaryFunction::kLog;
    case UnaryOp::kSqrt:
      return kernels::UnaryFunction::kSqrt;
    case UnaryOp::kRsqrt:
      return kernels::UnaryFunction::kRsqrt;
    case UnaryOp::kRecip:
      return kernels::UnaryFunction::kRecip;
    case UnaryOp::kAbs:
      return kernels::UnaryFunction::kAbs;
    case UnaryOp::kNeg:
      return kernels::UnaryFunction::kNeg;
    case UnaryOp::kSin:
      return kernels::UnaryFunction::kSin;
    case UnaryOp::kCos:
      return kernels::UnaryFunction::kCos;
    case UnaryOp::kTan:
      return kernels::UnaryFunction::kTan;
    case UnaryOp::kErf:
      return kernels::UnaryFunction::kErf;
    case UnaryOp::kFloor:
      return kernels::UnaryFunction::kFloor;
    case UnaryOp::kCeil:
      return kernels::UnaryFunction::kCeil;
    case UnaryOp::kRound:
      return kernels::UnaryFunction::kRound;
    case UnaryOp::kSign:
      return kernels::UnaryFunction::kSign;
    case UnaryOp::kNot:
      return kernels::UnaryFunction::kNot;
  }
  throw Error(concat("unknown unary op ", static_cast<int>(op)));
}

kernels::Activation toActivation(ActivationType type) {
  switch (type) {
    case ActivationType::kRelu:
      return kernels::Activation::kRelu;
    case ActivationType::kSigmoid:
      return kernels::Activation::kSigmoid;
    case ActivationType::kTanh:
      return kernels::Activation::kTanh;
    case ActivationType::kLeakyRelu:
      return kernels::Activation::kLeakyRelu;
    case ActivationType::kElu:
      return kernels::Activation::kElu;
    case ActivationType::kSelu:
      return kernels::Activation::kSelu;
    case ActivationType::kSoftplus:
      return kernels::Activation::kSoftplus;
    case ActivationType::kClip:
      return kernels::Activation::kClip;
    case ActivationType::kHardSigmoid:
      return kernels::Activation::kHardSigmoid;
    case ActivationType::kHardSwish:
      return kernels::Activation::kHardSwish;
    case ActivationType::kGeluErf:
      return kernels::Activation::kGeluErf;
    case ActivationType::kGeluTanh:
      return kernels::Activation::kGeluTanh;
    case ActivationType::kSilu:
      return kernels::Activation::kSilu;
    case ActivationType::kMish:
      return kernels::Activation::kMish;
  }
  throw Error(concat("unknown activation ", static_cast<int>(type)));
}

kernels::Activation toActivation(FusedActivation activation) {
  switch (activation) {
    case FusedActivation::kNone:
      break;
    case FusedActivation::kRelu:
      return kernels::Activation::kRelu;
    case FusedActivation::kGeluErf:
      return kernels::Activation::kGeluErf;
    case FusedActivation::kGeluTanh:
      return kernels::Activation::kGeluTanh;
    case FusedActivation::kSilu:
      return kernels::Activation::kSilu;
    case FusedActivation::kHardSwish:
      return kernels::Activation::kHardSwish;
    case FusedActivation::kRelu6:
      // A clip to [0, 6]: its bounds do not fit in the enum (fusedActivationParams has them).
      break;
  }
  throw Error(concat("the fused activation ", toString(activation), " (",
                     static_cast<int>(activation), ") is no kernel activation"));
}

kernels::ReduceFunction toReduceFunction(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return kernels::ReduceFunction::kSum;
    case ReduceOp::kProd:
      return kernels::ReduceFunction::kProd;
    case ReduceOp::kMax:
      return kernels::ReduceFunction::kMax;
    case ReduceOp::kMin:
      return kernels::ReduceFunction::kMin;
    case ReduceOp::kAvg:
      return kernels::ReduceFunction::kMean;
  }
  throw Error(concat("unknown reduce op ", static_cast<int>(op)));
}

kernels::ResizeMode toResizeMode(ResizeMode mode) {
  switch (mode) {
    case ResizeMode::kNearest:
      return kernels::ResizeMode::kNearest;
    case ResizeMode::kNearestExact:
      return kernels::ResizeMode::kNearestExact;
    case ResizeMode::kLinear:
      return kernels::ResizeMode::kLinear;
    case ResizeMode::kCubic:
      return kernels::ResizeMode::kCubic;
  }
  throw Error(concat("unknown resize mode ", static_cast<int>(mode)));
}

kernels::CumulativeFunction toCumulativeFunction(CumulativeOp op) {
  switch (op) {
    case CumulativeOp::kSum:
      return kernels::CumulativeFunction::kSum;
    case CumulativeOp::kProd:
      return kernels::CumulativeFunction::kProd;
  }
  throw Error(concat("unknown cumulative op ", static_cast<int>(op)));
}

kernels::PointwiseProgram toPointwiseProgram(const PointwiseParams& params) {
  kernels::PointwiseProgram program;
  for (const PointwiseInstruction& instruction : params.program) {
    kernels::PointwiseStep step;
    step.type = toKernelType(instruction.type);
    step.a = static_cast<int32_t>(instruction.a);
    step.b = static_cast<int32_t>(instruction.b);
    switch (instruction.opcode) {
      case PointwiseOpcode::kInput:
        step.kind = kernels::PointwiseStepKind::kLoad;
        break;
      case PointwiseOpcode::kElementwise:
        step.kind = kernels::PointwiseStepKind::kBinary;
        step.binary = toBinaryOp(instruction.elementwise);
        break;
      case PointwiseOpcode::kUnary:
        step.kind = kernels::PointwiseStepKind::kUnary;
        step.unary = toUnaryFunction(instruction.unary);
        break;
      case PointwiseOpcode::kActivation:
        step.kind = kernels::PointwiseStepKind::kActivation;
        step.activation = toActivation(instruction.activation);
        step.alpha = instruction.alpha;
        step.beta = instruction.beta;
        break;
      case PointwiseOpcode::kCast:
        step.kind = kernels::PointwiseStepKind::kCast;
        break;
    }
    program.steps.push_back(step);
  }
  for (int64_t output : params.outputs) program.outputs.push_back(static_cast<int32_t>(output));
  return program;
}

}  // namespace kiln
