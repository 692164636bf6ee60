// The plan format (layout in plan.h). All numbers are little-endian, whatever the host.
//
//   header:  "KILNPLAN" | u32 format version | string Kiln version     (these three never change,
//            so that any later Kiln can say which version wrote a plan it cannot read)
//            | u8 backend | string device name | i32 compute capability major, minor
//            | i32 CUDA version | i32 cuDNN version | u64 payload size
//            | u64 checksum: FNV-1a 64 of every header byte before it and of the payload
//   payload: tensors | layers (name, kind, the params' fields in fields() order, inputs,
//            outputs) | input bindings | output bindings | profiles
//            | u8 TF32 for convolutions | u8 TF32 for matmuls                  (since format 2)
//   string:  u32 length | bytes;  vector: u32 count | elements;  optional: u8 present | value
//
// The writer never writes what the reader would refuse, and the reader checks every length
// against the bytes left and every enum value and tensor index against what exists.
#include "core/engine/plan.h"

#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

#ifndef KILN_VERSION
#error "KILN_VERSION must be defined by the build; CMake sets it from the project version"
#endif

namespace kiln {

const char* const kKilnVersion = KILN_VERSION;

namespace {

constexpr char kMagic[8] = {'K', 'I', 'L', 'N', 'P', 'L', 'A', 'N'};
constexpr size_t kMagicSize = sizeof(kMagic);
// Header strings are a version and a device name; a longer length means a damaged header.
constexpr uint32_t kMaxHeaderString = 1024;
constexpr const char* kRebuildAdvice =
    "Rebuild the engine from the model (kiln.compile) and save it again.";

// FNV-1a, 64 bit. Each step is a bijection of the state, so any one changed byte (every single
// bit flip among them) changes the result.
class Checksum {
 public:
  void add(const uint8_t* data, size_t size) {
    for (size_t i = 0; i < size; ++i) {
      state_ ^= data[i];
      state_ *= 0x100000001b3ULL;
    }
  }
  uint64_t value() const { return state_; }

 private:
  uint64_t state_ = 0xcbf29ce484222325ULL;
};

// The largest valid value of every enum the plan stores. There is deliberately no primary
// definition: storing a new enum type fails to compile until it is listed here, and a new
// enumerator must be appended to its enum and named here.
template <typename E>
struct EnumLimit;
template <>
struct EnumLimit<DataType> {
  static constexpr DataType kLast = DataType::kUInt8;
  static constexpr const char* kName = "data type";
};
static_assert(static_cast<int>(EnumLimit<DataType>::kLast) + 1 == kNumDataTypes,
              "EnumLimit<DataType> must name the last DataType");
template <>
struct EnumLimit<FusedActivation> {
  static constexpr FusedActivation kLast = FusedActivation::kHardSwish;
  static constexpr const char* kName = "fused activation";
};
template <>
struct EnumLimit<ElementwiseOp> {
  static constexpr ElementwiseOp kLast = ElementwiseOp::kXor;
  static constexpr const char* kName = "elementwise op";
};
template <>
struct EnumLimit<UnaryOp> {
  static constexpr UnaryOp kLast = UnaryOp::kNot;
  static constexpr const char* kName = "unary op";
};
template <>
struct EnumLimit<ActivationType> {
  static constexpr ActivationType kLast = ActivationType::kMish;
  static constexpr const char* kName = "activation type";
};
template <>
struct EnumLimit<PoolingType> {
  static constexpr PoolingType kLast = PoolingType::kAverage;
  static constexpr const char* kName = "pooling type";
};
template <>
struct EnumLimit<ReduceOp> {
  static constexpr ReduceOp kLast = ReduceOp::kAvg;
  static constexpr const char* kName = "reduce op";
};
template <>
struct EnumLimit<NormalizationType> {
  static constexpr NormalizationType kLast = NormalizationType::kLayer;
  static constexpr const char* kName = "normalization type";
};
template <>
struct EnumLimit<GatherMode> {
  static constexpr GatherMode kLast = GatherMode::kElement;
  static constexpr const char* kName = "gather mode";
};
template <>
struct EnumLimit<ResizeMode> {
  static constexpr ResizeMode kLast = ResizeMode::kCubic;
  static constexpr const char* kName = "resize mode";
};
template <>
struct EnumLimit<CumulativeOp> {
  static constexpr CumulativeOp kLast = CumulativeOp::kProd;
  static constexpr const char* kName = "cumulative op";
};
template <>
struct EnumLimit<PointwiseOpcode> {
  static constexpr PointwiseOpcode kLast = PointwiseOpcode::kCast;
  static constexpr const char* kName = "pointwise opcode";
};
template <>
struct EnumLimit<Backend> {
  static constexpr Backend kLast = Backend::kCuda;
  static constexpr const char* kName = "backend";
};

template <typename T>
struct IsVector : std::false_type {};
template <typename T, typename A>
struct IsVector<std::vector<T, A>> : std::true_type {};
template <typename T>
struct IsOptional : std::false_type {};
template <typename T>
struct IsOptional<std::optional<T>> : std::true_type {};
// A struct that lists its fields (a pointwise instruction inside a params struct) is stored as
// its fields in order.
template <typename T, typename = void>
struct HasFields : std::false_type {};
struct IgnoreField {
  template <typename T>
  void operator()(const char*, T&) const {}
};
template <typename T>
struct HasFields<T, std::void_t<decltype(std::declval<T&>().fields(IgnoreField{}))>>
    : std::true_type {};
template <typename T>
constexpr bool kUnsupportedField = false;

// Bytes a Weights' dims call for, or nothing when a dim is dynamic or the product overflows.
std::optional<uint64_t> expectedWeightBytes(const Weights& weights) {
  uint64_t count = 1;
  for (int64_t dim : weights.dims) {
    if (dim < 0) return std::nullopt;
    const auto size = static_cast<uint64_t>(dim);
    if (size != 0 && count > std::numeric_limits<uint64_t>::max() / size) return std::nullopt;
    count *= size;
  }
  const uint64_t element = elementSize(weights.dtype);
  if (element != 0 && count > std::numeric_limits<uint64_t>::max() / element) return std::nullopt;
  return count * element;
}

// ---- writing -----------------------------------------------------------------------------------

class Writer {
 public:
  void u8(uint8_t value) { bytes_.push_back(value); }
  template <typename T>
  void integer(T value) {
    using Unsigned = std::make_unsigned_t<T>;
    const auto bits = static_cast<Unsigned>(value);
    for (size_t i = 0; i < sizeof(T); ++i) bytes_.push_back(static_cast<uint8_t>(bits >> (8 * i)));
  }
  void count(size_t value, const std::string& what) {
    KILN_CHECK(value <= std::numeric_limits<uint32_t>::max(), "cannot write a plan: ", what,
               " has ", value, " elements, more than the plan format's limit of 2^32 - 1");
    integer<uint32_t>(static_cast<uint32_t>(value));
  }
  void string(const std::string& value, const std::string& what) {
    count(value.size(), what);
    bytes_.insert(bytes_.end(), value.begin(), value.end());
  }
  void raw(const uint8_t* data, size_t size) { bytes_.insert(bytes_.end(), data, data + size); }
  std::vector<uint8_t>& bytes() { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

template <typename T>
void writeValue(Writer& out, const T& value, const std::string& where);

void writeWeights(Writer& out, const Weights& weights, const std::string& where) {
  writeValue(out, weights.dtype, where);
  writeValue(out, weights.dims, where);
  out.u8(weights.bytes ? 1 : 0);
  if (!weights.bytes) return;
  const std::optional<uint64_t> expected = expectedWeightBytes(weights);
  KILN_CHECK(!expected || *expected == weights.bytes->size(), "cannot write a plan: ", where,
             " holds ", weights.bytes->size(), " bytes, but ", toString(weights.dtype),
             " weights of dims ", toString(weights.dims), " take ", *expected);
  out.integer<uint64_t>(weights.bytes->size());
  out.raw(weights.bytes->data(), weights.bytes->size());
}

// One value of any type a params struct (or the payload around it) holds.
template <typename T>
void writeValue(Writer& out, const T& value, const std::string& where) {
  if constexpr (std::is_same_v<T, bool>) {
    out.u8(value ? 1 : 0);
  } else if constexpr (std::is_enum_v<T>) {
    static_assert(std::is_same_v<std::underlying_type_t<T>, uint8_t>,
                  "the plan stores enums as one byte");
    out.u8(static_cast<uint8_t>(value));
  } else if constexpr (std::is_integral_v<T>) {
    out.integer(value);
  } else if constexpr (std::is_floating_point_v<T>) {
    // float and double both travel as double, which holds every float exactly.
    const auto wide = static_cast<double>(value);
    uint64_t bits = 0;
    std::memcpy(&bits, &wide, sizeof(bits));
    out.integer(bits);
  } else if constexpr (std::is_same_v<T, std::string>) {
    out.string(value, where);
  } else if constexpr (std::is_same_v<T, Weights>) {
    writeWeights(out, value, where);
  } else if constexpr (IsVector<T>::value) {
    out.count(value.size(), where);
    for (const auto& element : value) writeValue<typename T::value_type>(out, element, where);
  } else if constexpr (IsOptional<T>::value) {
    out.u8(value.has_value() ? 1 : 0);
    if (value) writeValue(out, *value, where);
  } else if constexpr (HasFields<T>::value) {
    T copy = value;  // fields() is not const
    copy.fields([&](const char* name, const auto& field) {
      writeValue(out, field, concat(where, " field '", name, "'"));
    });
  } else {
    static_assert(kUnsupportedField<T>,
                  "the plan format cannot store this field type: add it to writeValue and "
                  "readValue");
  }
}

// The visitor given to a params struct's fields().
struct FieldWriter {
  Writer& out;
  const std::string& layerWhere;
  template <typename T>
  void operator()(const char* name, const T& field) const {
    writeValue(out, field, concat(layerWhere, " field '", name, "'"));
  }
};

void writePayload(Writer& out, const EngineDefinition& definition) {
  out.count(definition.tensors.size(), "the tensor list");
  for (const EngineTensor& tensor : definition.tensors) {
    const std::string where = concat("tensor '", tensor.name, "'");
    writeValue(out, tensor.name, where);
    writeValue(out, tensor.dtype, where);
    writeValue(out, tensor.dims, where);
  }
  out.count(definition.layers.size(), "the layer list");
  for (const EngineLayer& layer : definition.layers) {
    const std::string where = concat("layer '", layer.name, "'");
    writeValue(out, layer.name, where);
    out.u8(static_cast<uint8_t>(layer.params.index()));
    // fields() is not const (the reader fills the same fields); a copy shares the weights.
    LayerParams params = layer.params;
    std::visit([&](auto& typed) { typed.fields(FieldWriter{out, where}); }, params);
    writeValue(out, layer.inputs, where);
    writeValue(out, layer.outputs, where);
  }
  writeValue(out, definition.inputs, "the input bindings");
  writeValue(out, definition.outputs, "the output bindings");
  out.count(definition.profiles.size(), "the profile list");
  for (size_t p = 0; p < definition.profiles.size(); ++p) {
    const std::string where = concat("profile ", p);
    out.count(definition.profiles[p].ranges.size(), where);
    for (const auto& [input, range] : definition.profiles[p].ranges) {
      writeValue(out, input, where);
      writeValue(out, range.min, where);
      writeValue(out, range.opt, where);
      writeValue(out, range.max, where);
    }
  }
  writeValue(out, definition.tf32.convolutions, "the TF32 policy");
  writeValue(out, definition.tf32.matmuls, "the TF32 policy");
  writeValue(out, definition.networkLayers, "the network's layer count");
}

// ---- reading -----------------------------------------------------------------------------------

// Reads from a byte range, checking every length against what is left. Running out of bytes in
// the header means the file was cut short; in the payload (whose size and checksum were already
// checked) it means the content is inconsistent, so the two raise different errors.
class Reader {
 public:
  enum class Region { kHeader, kPayload };
  Reader(const uint8_t* data, size_t size, size_t totalSize, Region region)
      : data_(data), size_(size), totalSize_(totalSize), region_(region) {}

  size_t position() const { return position_; }
  size_t remaining() const { return size_ - position_; }
  void setWhere(std::string where) { where_ = std::move(where); }
  const std::string& where() const { return where_; }

  const uint8_t* take(size_t size) {
    if (size > remaining()) {
      if (region_ == Region::kHeader) {
        throw PlanError(concat("the plan is truncated: its header goes on past the end of the ",
                               totalSize_, " bytes given (reading ", where_,
                               "). The file was cut short, e.g. by an interrupted copy or "
                               "download; copy it again or rebuild the engine."));
      }
      corrupt(concat("it ends in the middle of ", where_));
    }
    const uint8_t* start = data_ + position_;
    position_ += size;
    return start;
  }
  uint8_t u8() { return *take(1); }
  template <typename T>
  T integer() {
    const uint8_t* bytes = take(sizeof(T));
    using Unsigned = std::make_unsigned_t<T>;
    Unsigned bits = 0;
    for (size_t i = 0; i < sizeof(T); ++i) {
      bits = static_cast<Unsigned>(bits | (static_cast<Unsigned>(bytes[i]) << (8 * i)));
    }
    return static_cast<T>(bits);
  }
  // A count of elements that each take at least one byte: more than the bytes left is corrupt.
  size_t count() {
    const auto value = integer<uint32_t>();
    if (value > remaining()) {
      if (region_ == Region::kHeader) take(value);  // raises the truncation error
      corrupt(concat(where_, " claims ", value, " elements, but only ", remaining(),
                     " bytes are left"));
    }
    return value;
  }
  std::string string() {
    const size_t size = count();
    const uint8_t* bytes = take(size);
    return std::string(reinterpret_cast<const char*>(bytes), size);
  }

  [[noreturn]] void corrupt(const std::string& what) const {
    throw PlanError(concat("the plan is corrupt: ", what, ". ", kRebuildAdvice));
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t totalSize_;
  Region region_;
  size_t position_ = 0;
  std::string where_ = "the header";
};

template <typename T>
void readValue(Reader& in, T& value);

void readWeights(Reader& in, Weights& weights) {
  readValue(in, weights.dtype);
  readValue(in, weights.dims);
  bool hasBytes = false;
  readValue(in, hasBytes);
  if (!hasBytes) {
    weights.bytes.reset();
    return;
  }
  const auto size = in.integer<uint64_t>();
  if (size > in.remaining()) {
    in.corrupt(concat(in.where(), " claims ", size, " bytes of weights, but only ", in.remaining(),
                      " bytes are left"));
  }
  const std::optional<uint64_t> expected = expectedWeightBytes(weights);
  if (expected && *expected != size) {
    in.corrupt(concat(in.where(), " holds ", size, " bytes, but ", toString(weights.dtype),
                      " weights of dims ", toString(weights.dims), " take ", *expected));
  }
  const uint8_t* bytes = in.take(static_cast<size_t>(size));
  weights.bytes = std::make_shared<const std::vector<uint8_t>>(bytes, bytes + size);
}

template <typename T>
void readValue(Reader& in, T& value) {
  if constexpr (std::is_same_v<T, bool>) {
    const uint8_t byte = in.u8();
    if (byte > 1) in.corrupt(concat(in.where(), " is a flag holding ", int(byte)));
    value = byte == 1;
  } else if constexpr (std::is_enum_v<T>) {
    const uint8_t byte = in.u8();
    if (byte > static_cast<uint8_t>(EnumLimit<T>::kLast)) {
      in.corrupt(concat(in.where(), " holds ", int(byte), ", which is no ", EnumLimit<T>::kName));
    }
    value = static_cast<T>(byte);
  } else if constexpr (std::is_integral_v<T>) {
    value = in.integer<T>();
  } else if constexpr (std::is_floating_point_v<T>) {
    const auto bits = in.integer<uint64_t>();
    double wide = 0;
    std::memcpy(&wide, &bits, sizeof(wide));
    value = static_cast<T>(wide);
  } else if constexpr (std::is_same_v<T, std::string>) {
    value = in.string();
  } else if constexpr (std::is_same_v<T, Weights>) {
    readWeights(in, value);
  } else if constexpr (IsVector<T>::value) {
    const size_t size = in.count();
    value.clear();
    value.reserve(size);
    for (size_t i = 0; i < size; ++i) {
      typename T::value_type element{};
      readValue(in, element);
      value.push_back(std::move(element));
    }
  } else if constexpr (IsOptional<T>::value) {
    bool present = false;
    readValue(in, present);
    if (present) {
      typename T::value_type inner{};
      readValue(in, inner);
      value = std::move(inner);
    } else {
      value.reset();
    }
  } else if constexpr (HasFields<T>::value) {
    value.fields([&](const char*, auto& field) { readValue(in, field); });
  } else {
    static_assert(kUnsupportedField<T>,
                  "the plan format cannot store this field type: add it to writeValue and "
                  "readValue");
  }
}

struct FieldReader {
  Reader& in;
  const std::string& layerWhere;
  template <typename T>
  void operator()(const char* name, T& field) const {
    in.setWhere(concat(layerWhere, " field '", name, "'"));
    readValue(in, field);
  }
};

// Default parameters of the kind with this variant index.
template <size_t I = 0>
LayerParams defaultParams(size_t index) {
  if constexpr (I < std::variant_size_v<LayerParams>) {
    if (index == I) return LayerParams(std::in_place_index<I>);
    return defaultParams<I + 1>(index);
  } else {
    throw PlanError("unreachable: layer kind index checked before");
  }
}

void checkTensorIndex(const Reader& in, int32_t index, size_t tensorCount, bool mayBeAbsent) {
  if (mayBeAbsent && index == -1) return;
  if (index < 0 || static_cast<size_t>(index) >= tensorCount) {
    in.corrupt(concat(in.where(), " refers to tensor ", index, ", but the plan has ", tensorCount,
                      " tensors"));
  }
}

EngineDefinition readPayload(Reader& in, const BuildTarget& target) {
  EngineDefinition definition;
  definition.target = target;

  in.setWhere("the tensor count");
  definition.tensors.resize(in.count());
  for (size_t t = 0; t < definition.tensors.size(); ++t) {
    EngineTensor& tensor = definition.tensors[t];
    in.setWhere(concat("tensor ", t));
    readValue(in, tensor.name);
    in.setWhere(concat("tensor ", t, " ('", tensor.name, "')"));
    readValue(in, tensor.dtype);
    readValue(in, tensor.dims);
  }

  in.setWhere("the layer count");
  definition.layers.resize(in.count());
  const size_t tensorCount = definition.tensors.size();
  for (size_t l = 0; l < definition.layers.size(); ++l) {
    EngineLayer& layer = definition.layers[l];
    in.setWhere(concat("layer ", l));
    readValue(in, layer.name);
    const std::string where = concat("layer ", l, " ('", layer.name, "')");
    in.setWhere(where);
    const uint8_t kind = in.u8();
    if (kind >= std::variant_size_v<LayerParams>) {
      in.corrupt(concat(where, " has kind ", int(kind), ", but this Kiln knows ",
                        std::variant_size_v<LayerParams>, " layer kinds"));
    }
    layer.params = defaultParams(kind);
    std::visit([&](auto& typed) { typed.fields(FieldReader{in, where}); }, layer.params);
    in.setWhere(concat(where, " inputs"));
    readValue(in, layer.inputs);
    for (int32_t index : layer.inputs) checkTensorIndex(in, index, tensorCount, true);
    in.setWhere(concat(where, " outputs"));
    readValue(in, layer.outputs);
    for (int32_t index : layer.outputs) checkTensorIndex(in, index, tensorCount, false);
  }

  in.setWhere("the input bindings");
  readValue(in, definition.inputs);
  for (int32_t index : definition.inputs) checkTensorIndex(in, index, tensorCount, false);
  in.setWhere("the output bindings");
  readValue(in, definition.outputs);
  for (int32_t index : definition.outputs) checkTensorIndex(in, index, tensorCount, false);

  in.setWhere("the profile count");
  definition.profiles.resize(in.count());
  for (size_t p = 0; p < definition.profiles.size(); ++p) {
    in.setWhere(concat("profile ", p));
    const size_t rangeCount = in.count();
    for (size_t r = 0; r < rangeCount; ++r) {
      in.setWhere(concat("profile ", p, " range ", r));
      std::string input;
      ShapeRange range;
      readValue(in, input);
      readValue(in, range.min);
      readValue(in, range.opt);
      readValue(in, range.max);
      if (!definition.profiles[p].ranges.emplace(input, std::move(range)).second) {
        in.corrupt(concat("profile ", p, " holds two ranges for input '", input, "'"));
      }
    }
  }
  in.setWhere("the TF32 policy");
  readValue(in, definition.tf32.convolutions);
  readValue(in, definition.tf32.matmuls);
  in.setWhere("the network's layer count");
  readValue(in, definition.networkLayers);
  if (in.remaining() != 0) {
    in.corrupt(concat(in.remaining(), " bytes follow the network's layer count in the payload"));
  }
  return definition;
}

struct Header {
  BuildTarget target;
  uint64_t payloadSize = 0;
  uint64_t checksum = 0;
  size_t checksummedHeaderSize = 0;  // header bytes before the checksum field
  size_t payloadOffset = 0;
};

std::string describeForeignFile(const uint8_t* data, size_t size) {
  if (size >= 4 && std::memcmp(data, "PK\x03\x04", 4) == 0) {
    return "it is a zip archive, e.g. a module saved with torch.jit.save or torch.save; load "
           "that with torch.jit.load (after `import kiln`) instead";
  }
  return "it may be a TensorRT engine, a saved PyTorch module or another file. Pass the bytes "
         "that Engine::serialize (kiln's engine.serialize()) wrote";
}

Header readHeader(const void* data, size_t size) {
  if (data == nullptr && size > 0) {
    throw PlanError(concat("cannot read a plan from a null pointer with size ", size,
                           "; pass the plan's bytes"));
  }
  if (size == 0) {
    throw PlanError(
        "the plan is empty (0 bytes): the file is truncated or was never written. Check the "
        "path, or rebuild the engine and save it again.");
  }
  const auto* bytes = static_cast<const uint8_t*>(data);
  const size_t magicBytes = size < kMagicSize ? size : kMagicSize;
  if (std::memcmp(bytes, kMagic, magicBytes) != 0) {
    throw PlanError(concat("not a Kiln plan: the data does not start with \"KILNPLAN\"; ",
                           describeForeignFile(bytes, size), "."));
  }

  Reader in(bytes, size, size, Reader::Region::kHeader);
  in.setWhere("the magic \"KILNPLAN\"");
  in.take(kMagicSize);
  in.setWhere("the plan format version");
  const auto version = in.integer<uint32_t>();
  if (version > kPlanFormatVersion) {
    std::string writer = "a newer Kiln";
    try {
      in.setWhere("the Kiln version");
      writer = concat("Kiln ", in.string());
    } catch (const PlanError&) {
      // The version string is only for the message; the format version already decides.
    }
    throw PlanError(concat("the plan has format version ", version, ", newer than the version ",
                           kPlanFormatVersion, " this Kiln (", kKilnVersion, ") reads: it was ",
                           "built by ", writer, ". Upgrade Kiln, or rebuild the engine with ",
                           "this version."));
  }
  if (version == 0) in.corrupt("its format version is 0, which no Kiln writes");
  if (version < kPlanFormatVersion) {
    throw PlanError(concat("the plan has format version ", version, ", older than the version ",
                           kPlanFormatVersion, " this Kiln (", kKilnVersion, ") reads. Rebuild ",
                           "the engine from the model with this Kiln and save it again."));
  }

  Header header;
  in.setWhere("the Kiln version");
  const auto kilnVersionSize = in.integer<uint32_t>();
  if (kilnVersionSize > kMaxHeaderString) in.corrupt("the Kiln version in its header is too long");
  in.take(kilnVersionSize);
  in.setWhere("the backend");
  readValue(in, header.target.backend);
  in.setWhere("the device name");
  const auto deviceNameSize = in.integer<uint32_t>();
  if (deviceNameSize > kMaxHeaderString) in.corrupt("the device name in its header is too long");
  const uint8_t* deviceName = in.take(deviceNameSize);
  header.target.deviceName.assign(reinterpret_cast<const char*>(deviceName), deviceNameSize);
  in.setWhere("the build target's versions");
  header.target.computeCapabilityMajor = in.integer<int32_t>();
  header.target.computeCapabilityMinor = in.integer<int32_t>();
  header.target.cudaVersion = in.integer<int32_t>();
  header.target.cudnnVersion = in.integer<int32_t>();
  in.setWhere("the payload size");
  header.payloadSize = in.integer<uint64_t>();
  header.checksummedHeaderSize = in.position();
  in.setWhere("the checksum");
  header.checksum = in.integer<uint64_t>();
  header.payloadOffset = in.position();
  return header;
}

}  // namespace

std::vector<uint8_t> writePlan(const EngineDefinition& definition) {
  Writer payload;
  writePayload(payload, definition);

  Writer out;
  out.raw(reinterpret_cast<const uint8_t*>(kMagic), kMagicSize);
  out.integer<uint32_t>(kPlanFormatVersion);
  out.string(kKilnVersion, "the Kiln version");
  writeValue(out, definition.target.backend, "the backend");
  KILN_CHECK(definition.target.deviceName.size() <= kMaxHeaderString,
             "cannot write a plan: the device name is longer than ", kMaxHeaderString, " bytes");
  out.string(definition.target.deviceName, "the device name");
  out.integer<int32_t>(definition.target.computeCapabilityMajor);
  out.integer<int32_t>(definition.target.computeCapabilityMinor);
  out.integer<int32_t>(definition.target.cudaVersion);
  out.integer<int32_t>(definition.target.cudnnVersion);
  out.integer<uint64_t>(payload.bytes().size());

  Checksum checksum;
  checksum.add(out.bytes().data(), out.bytes().size());
  checksum.add(payload.bytes().data(), payload.bytes().size());
  out.integer<uint64_t>(checksum.value());
  out.raw(payload.bytes().data(), payload.bytes().size());
  return std::move(out.bytes());
}

EngineDefinition readPlan(const void* data, size_t size) {
  const Header header = readHeader(data, size);
  const auto* bytes = static_cast<const uint8_t*>(data);
  const size_t available = size - header.payloadOffset;
  if (header.payloadSize > available) {
    throw PlanError(concat("the plan is truncated: it is ", size, " bytes, but its header says ",
                           header.payloadOffset + header.payloadSize,
                           ". The file was cut short, e.g. by an interrupted copy or download; ",
                           "copy it again or rebuild the engine."));
  }
  const auto payloadSize = static_cast<size_t>(header.payloadSize);
  if (payloadSize < available) {
    throw PlanError(concat("the plan is corrupt: ", available - payloadSize, " bytes follow the ",
                           payloadSize, "-byte payload its header announces. ", kRebuildAdvice));
  }
  const uint8_t* payload = bytes + header.payloadOffset;
  Checksum checksum;
  checksum.add(bytes, header.checksummedHeaderSize);
  checksum.add(payload, payloadSize);
  if (checksum.value() != header.checksum) {
    throw PlanError(concat("the plan is corrupt: its checksum does not match its contents (the ",
                           "file was damaged after it was written). ", kRebuildAdvice));
  }
  Reader in(payload, payloadSize, size, Reader::Region::kPayload);
  return readPayload(in, header.target);
}

BuildTarget readPlanTarget(const void* data, size_t size) { return readHeader(data, size).target; }

}  // namespace kiln
