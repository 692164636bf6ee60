#include "lowering/ts_frontend.h"

#include <ATen/ATen.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/freeze_module.h>
#include <torch/csrc/jit/passes/inliner.h>

#include <algorithm>
#include <set>
#include <unordered_set>

#include "core/ir/types.h"
#include "lowering/fold_tensor_ranks.h"

namespace kiln {

using torch::jit::Node;
using torch::jit::Value;

namespace {

// Whether an op's schema says it writes to one of its inputs (aten::append writes its list).
bool mutates(const Node* node) {
  const c10::FunctionSchema* schema = node->maybeSchema();
  return schema != nullptr && schema->is_mutable();
}

// Whether a node only reads its inputs (a list's readers must not change it).
bool readsOnly(const Node* node) {
  return node->kind() == c10::prim::ListUnpack ||
         (node->maybeSchema() != nullptr && !mutates(node));
}

// Rewrites lists built by appending in straight-line code (DenseNet's features: ListConstruct,
// then append after append, with readers in between) into one ListConstruct per reader, holding
// the elements appended so far, so that the partitioner sees what each reader reads. torch's
// RemoveListMutation leaves such a list alone once a reader comes between construction and
// append. A list with any other use that may mutate it, or used in another block, stays as it is.
void splitAppendedLists(torch::jit::Block* block) {
  static const c10::Symbol append = c10::Symbol::fromQualString("aten::append");
  std::vector<Node*> constructs;
  for (Node* node : block->nodes()) {
    if (node->kind() == c10::prim::ListConstruct) constructs.push_back(node);
    for (torch::jit::Block* inner : node->blocks()) splitAppendedLists(inner);
  }
  for (Node* construct : constructs) {
    Value* list = construct->output();
    bool rewritable = !list->uses().empty();
    bool appended = false;
    for (const torch::jit::Use& use : list->uses()) {
      const Node* user = use.user;
      const bool isAppend = user->kind() == append && use.offset == 0 && !user->output()->hasUses();
      appended = appended || isAppend;
      rewritable = rewritable && user->owningBlock() == block && (isAppend || readsOnly(user));
    }
    if (!rewritable || !appended) continue;
    // The uses in node order: straight-line code runs them so.
    std::vector<torch::jit::Use> uses(list->uses().begin(), list->uses().end());
    std::sort(uses.begin(), uses.end(), [](const torch::jit::Use& a, const torch::jit::Use& b) {
      return a.user->isBefore(b.user);
    });
    std::vector<Value*> elements(construct->inputs().begin(), construct->inputs().end());
    for (const torch::jit::Use& use : uses) {
      if (use.user->kind() == append) {
        elements.push_back(use.user->input(1));
        use.user->destroy();
        continue;
      }
      Node* snapshot = block->owningGraph()->createList(list->type()->containedType(0), elements);
      snapshot->insertBefore(use.user);
      use.user->replaceInput(use.offset, snapshot->output());
    }
    construct->destroy();
  }
}

// Every node in `block` and its sub-blocks that writes to one of its inputs.
void collectMutations(torch::jit::Block* block, std::vector<Node*>& found) {
  for (Node* node : block->nodes()) {
    if (mutates(node)) found.push_back(node);
    for (torch::jit::Block* inner : node->blocks()) collectMutations(inner, found);
  }
}

// The partitioner orders nodes by the values they read and write, and does not see a loop or
// branch change a list or tensor made outside it: a later read of that value could run before
// the change, or the control flow be dropped as dead. Refuses such graphs instead of running
// them wrongly.
void refuseMutationsInControlFlow(torch::jit::Graph& graph) {
  for (Node* node : graph.nodes()) {
    std::vector<Node*> mutations;
    for (torch::jit::Block* inner : node->blocks()) collectMutations(inner, mutations);
    for (const Node* mutation : mutations) {
      const c10::FunctionSchema& schema = *mutation->maybeSchema();
      for (size_t i = 0; i < mutation->inputs().size(); ++i) {
        const Value* input = mutation->input(i);
        if (!schema.is_mutable({c10::SchemaArgType::input, i})) continue;  // only read
        if (input->node()->owningBlock() != graph.block()) continue;       // made inside the block
        for (const torch::jit::Use& use : input->uses()) {
          if (use.user->owningBlock() == graph.block() && node->isBefore(use.user)) {
            throw Error(concat(
                "Kiln's TorchScript front end cannot compile a ", node->kind().toQualString(),
                " that changes a value made before it (", mutation->kind().toQualString(), " on '",
                input->debugName(),
                "'), which is read after it: compile with "
                "ir=\"dynamo\", or build the value without mutating it in the loop or branch"));
          }
        }
      }
    }
  }
}

// Whether a node returns a view of its first input (aten::slice, select, view, transpose, ...).
bool returnsView(const Node* node) {
  const c10::FunctionSchema* schema = node->maybeSchema();
  if (schema == nullptr || schema->returns().empty()) return false;
  const c10::AliasInfo* alias = schema->returns()[0].alias_info();
  return alias != nullptr && !alias->isWrite();
}

// An in-place op that writes through a view (`mask[:, 0:2].fill_(1)`) changes the view's base,
// but the graph records the write on the view only: the importer would let readers of the base
// see it unwritten, and the partitioner would drop the write as unused. Such a graph is refused
// when the base (or any view between) is read after the write or returned.
void refuseWritesThroughViews(torch::jit::Graph& graph) {
  for (Node* node : graph.nodes()) {
    const c10::FunctionSchema* schema = node->maybeSchema();
    if (schema == nullptr) continue;
    // A vararg schema (prim ops) lists fewer arguments than the node has inputs.
    const size_t arguments = std::min(node->inputs().size(), schema->arguments().size());
    for (size_t i = 0; i < arguments; ++i) {
      if (!schema->is_mutable({c10::SchemaArgType::input, i})) continue;
      for (const Node* view = node->input(i)->node(); returnsView(view);
           view = view->input(0)->node()) {
        const Value* base = view->input(0);
        bool readAfter = false;
        for (const torch::jit::Use& use : base->uses()) {
          readAfter = readAfter || use.user->kind() == torch::jit::prim::Return ||
                      (use.user != view && node->isBefore(use.user));
        }
        if (!readAfter) continue;
        throw Error(concat(
            "Kiln's TorchScript front end cannot compile ", node->kind().toQualString(),
            " writing in place through a view (", view->kind().toQualString(), ") of '",
            base->debugName(), "', which is read afterwards: compile with ir=\"dynamo\" (which ",
            "turns such writes into functional ops), or build the value without in-place writes"));
      }
    }
  }
}

}  // namespace

at::Tensor exampleInput(const InputSpec& spec, const std::vector<int64_t>& shape) {
  const auto options = at::TensorOptions().dtype(spec.dtype).device(spec.device);
  if (c10::isFloatingType(spec.dtype)) return at::randn(shape, options);
  if (spec.dtype == c10::ScalarType::Bool) return at::ones(shape, options);
  // Small positive ints: valid indices into any table and safe divisors.
  return at::randint(1, 3, shape, options);
}

std::shared_ptr<torch::jit::Graph> graphReturning(torch::jit::Graph& graph,
                                                  const std::vector<Value*>& values) {
  std::unordered_map<const Value*, Value*> toCopy;
  auto copy = std::make_shared<torch::jit::Graph>();
  for (Value* input : graph.inputs()) {
    Value* copied = copy->addInput();
    copied->copyMetadata(input);
    toCopy[input] = copied;
  }
  for (Node* node : graph.nodes()) {
    Node* cloned = copy->createClone(node, [&](Value* v) { return toCopy.at(v); });
    copy->appendNode(cloned);
    for (size_t i = 0; i < node->outputs().size(); ++i) toCopy[node->output(i)] = cloned->output(i);
  }
  std::vector<Value*> copiedValues;
  for (const Value* v : values) copiedValues.push_back(toCopy.at(v));
  Node* tuple = copy->createTuple(copiedValues);
  copy->appendNode(tuple);
  copy->registerOutput(tuple->output());
  return copy;
}

torch::jit::Module lowerTorchScript(const torch::jit::Module& module,
                                    const std::vector<InputSpec>& inputs) {
  torch::jit::Module copy = module.clone();
  copy.eval();
  torch::jit::Module frozen = torch::jit::freeze_module(copy);
  auto graph = frozen.get_method("forward").graph();
  torch::jit::Inline(*graph);
  splitAppendedLists(graph->block());
  torch::jit::ConstantPropagation(graph);
  torch::jit::EliminateDeadCode(graph);
  foldTensorRanks(frozen, inputs);
  refuseMutationsInControlFlow(*graph);
  refuseWritesThroughViews(*graph);
  return frozen;
}

namespace {

bool isTensorType(const Value* v) { return v->type()->kind() == c10::TypeKind::TensorType; }
bool isIntType(const Value* v) { return v->type()->kind() == c10::TypeKind::IntType; }
bool isIntListType(const Value* v) { return v->type()->isSubtypeOf(*c10::ListType::ofInts()); }

// Ops through which a value stays a function of input shapes alone.
bool propagatesShapes(const std::string& kind) {
  static const std::set<std::string> ops = {"prim::NumToTensor",
                                            "aten::Int",
                                            "aten::ScalarImplicit",
                                            "aten::IntImplicit",
                                            "prim::ListUnpack",
                                            "prim::ListConstruct",
                                            "aten::__getitem__",
                                            "aten::mul",
                                            "aten::add",
                                            "aten::sub",
                                            "aten::floordiv",
                                            "aten::floor_divide",
                                            "aten::div",
                                            "aten::remainder",
                                            "aten::neg",
                                            "aten::floor",
                                            "aten::ceil",
                                            "prim::min",
                                            "prim::max",
                                            "aten::__derive_index",
                                            "aten::len"};
  return ops.count(kind) > 0;
}
// Ops that read only the shape of their tensor input.
bool readsShapeOnly(const std::string& kind) {
  return kind == "aten::size" || kind == "aten::dim" || kind == "aten::numel";
}

// An op returning Tensor[] that one prim::ListUnpack takes apart (aten::split, chunk, unbind):
// imported as one node whose outputs are the pieces, as the FX front end sees it.
torch::jit::Node* absorbedListUnpack(const torch::jit::Node* node) {
  if (node->outputs().size() != 1 || node->kind() == c10::prim::ListConstruct) return nullptr;
  const Value* list = node->output();
  if (!list->type()->isSubtypeOf(*c10::ListType::ofTensors()) || list->uses().size() != 1) {
    return nullptr;
  }
  Node* user = list->uses()[0].user;
  return user->kind() == c10::prim::ListUnpack ? user : nullptr;
}

SymInt symIntOf(int64_t atMin, int64_t atOpt, int64_t atMax) {
  if (atMin == atOpt && atOpt == atMax) return SymInt::of(atOpt);
  SymInt s;
  s.min = std::min({atMin, atOpt, atMax});
  s.opt = atOpt;
  s.max = std::max({atMin, atOpt, atMax});
  s.symbol = concat("s", atMin, "_", atOpt, "_", atMax);
  return s;
}

// Runs the graph at the min, opt and max shapes and records every top-level tensor, int and
// int-list value. Returns, per recorded value, its three observations.
std::unordered_map<const Value*, std::array<c10::IValue, 3>> profile(
    const torch::jit::Module& lowered, const std::vector<InputSpec>& inputs) {
  auto graph = lowered.get_method("forward").graph();
  KILN_CHECK(graph->inputs().size() == inputs.size() + 1, "the module's forward takes ",
             graph->inputs().size() - 1, " input(s), but ", inputs.size(),
             " input spec(s) were given; pass one kiln.Input per forward argument");
  std::vector<Value*> recorded;
  for (Node* node : graph->nodes()) {
    if (node->kind() == c10::prim::Constant) continue;
    for (Value* output : node->outputs()) {
      if (isTensorType(output) || isIntType(output) || isIntListType(output)) {
        recorded.push_back(output);
      }
    }
  }

  std::shared_ptr<torch::jit::Graph> copy = graphReturning(*graph, recorded);

  // The simple executor: the profiling one would run TorchScript's fusers on these example runs
  // (on a GPU the TensorExpr fuser compiles a CUDA kernel per fusion group).
  torch::jit::GraphFunction function("kiln_profile", copy, nullptr,
                                     torch::jit::ExecutorExecutionMode::SIMPLE);
  std::unordered_map<const Value*, std::array<c10::IValue, 3>> observations;
  at::NoGradGuard noGrad;
  for (int point = 0; point < 3; ++point) {
    torch::jit::Stack stack{lowered._ivalue()};
    for (const InputSpec& spec : inputs) {
      const auto& shape = point == 0 ? spec.min : (point == 1 ? spec.opt : spec.max);
      stack.emplace_back(exampleInput(spec, shape));
    }
    try {
      function.run(stack);
    } catch (const std::exception& e) {
      throw Error(
          concat("running the module at its ", point == 0 ? "min" : (point == 1 ? "opt" : "max"),
                 " input shapes failed (check the kiln.Input shapes and dtypes): ", e.what()));
    }
    auto results = stack.back().toTupleRef().elements();
    for (size_t i = 0; i < recorded.size(); ++i) observations[recorded[i]][point] = results[i];
  }
  return observations;
}

ValueKind kindOfType(const c10::TypePtr& type) {
  switch (type->kind()) {
    case c10::TypeKind::TensorType:
      return ValueKind::kTensor;
    case c10::TypeKind::IntType:
      return ValueKind::kInt;
    case c10::TypeKind::FloatType:
      return ValueKind::kFloat;
    case c10::TypeKind::BoolType:
      return ValueKind::kBool;
    case c10::TypeKind::NoneType:
      return ValueKind::kNone;
    case c10::TypeKind::StringType:
      return ValueKind::kString;
    default:
      break;
  }
  if (type->isSubtypeOf(*c10::ListType::ofInts())) return ValueKind::kIntList;
  if (type->isSubtypeOf(*c10::ListType::ofFloats())) return ValueKind::kFloatList;
  if (type->isSubtypeOf(*c10::ListType::ofBools())) return ValueKind::kBoolList;
  if (type->isSubtypeOf(*c10::ListType::ofTensors())) return ValueKind::kTensorList;
  return ValueKind::kOther;
}

ValueKind kindOfConstant(const c10::IValue& value, const c10::TypePtr& type) {
  if (value.isTensor()) return ValueKind::kTensor;
  if (value.isInt()) return ValueKind::kInt;
  if (value.isDouble()) return ValueKind::kFloat;
  if (value.isBool()) return ValueKind::kBool;
  if (value.isNone()) return ValueKind::kNone;
  return kindOfType(type);
}

// Values a node's sub-blocks read from the enclosing (top-level) block.
void collectCapturedValues(Node* node, const torch::jit::Block* top,
                           std::vector<Value*>& captured) {
  auto capture = [&](Value* value) {
    const Node* producer = value->node();
    const bool fromTop = producer->owningBlock() == top || producer == top->param_node();
    if (fromTop && std::find(captured.begin(), captured.end(), value) == captured.end()) {
      captured.push_back(value);
    }
  };
  for (torch::jit::Block* block : node->blocks()) {
    for (Node* inner : block->nodes()) {
      for (Value* input : inner->inputs()) capture(input);
      collectCapturedValues(inner, top, captured);
    }
    // What a block returns may come straight from outside it (`-> (%x)`).
    for (Value* output : block->outputs()) capture(output);
  }
}

class Importer {
 public:
  Importer(const torch::jit::Module& lowered, const std::vector<InputSpec>& inputs)
      : graph_(lowered.get_method("forward").graph()),
        inputs_(inputs),
        observations_(profile(lowered, inputs)) {}

  TorchScriptImport run() {
    addGraphInputs();
    std::unordered_set<const Node*> absorbed;
    for (Node* node : graph_->nodes()) {
      if (absorbed.count(node)) continue;
      if (node->kind() == c10::prim::Constant) {
        addConstant(node->output());
        continue;
      }
      Node* unpack = absorbedListUnpack(node);
      if (unpack) absorbed.insert(unpack);
      addNode(node, unpack);
    }
    for (Value* output : graph_->outputs()) result_.graph.addOutput(ids_.at(output));
    return std::move(result_);
  }

 private:
  int add(Value* v, OpValue value) {
    if (v) value.name = v->debugName();
    int id = result_.graph.addValue(std::move(value));
    result_.values.resize(static_cast<size_t>(id) + 1, nullptr);
    result_.values[static_cast<size_t>(id)] = v;
    if (v) ids_[v] = id;
    return id;
  }

  void addGraphInputs() {
    OpValue self;
    self.kind = ValueKind::kOther;
    add(graph_->inputs()[0], self);
    for (size_t i = 0; i < inputs_.size(); ++i) {
      const InputSpec& spec = inputs_[i];
      Value* input = graph_->inputs()[i + 1];
      KILN_CHECK(isTensorType(input), "forward argument ", i, " ('", input->debugName(),
                 "') is not a Tensor; Kiln compiles modules whose inputs are tensors");
      OpValue value;
      value.kind = ValueKind::kTensor;
      value.dtype = spec.dtype;
      for (size_t d = 0; d < spec.opt.size(); ++d) {
        value.shape.push_back(symIntOf(spec.min[d], spec.opt[d], spec.max[d]));
      }
      result_.graph.addInput(add(input, value));
    }
  }

  void addConstant(Value* v) {
    OpValue value;
    std::optional<c10::IValue> constant = torch::jit::toIValue(v);
    KILN_CHECK(constant.has_value(), "internal error: constant ", v->debugName(), " has no value");
    value.kind = kindOfConstant(*constant, v->type());
    if (constant->isTensor()) {
      value.dtype = constant->toTensor().scalar_type();
      for (int64_t size : constant->toTensor().sizes()) value.shape.push_back(SymInt::of(size));
    }
    value.constant = std::move(*constant);
    add(v, std::move(value));
  }

  bool isShapeDerived(const Value* v) const {
    return shapeDerived_.count(v) > 0 || v->node()->kind() == c10::prim::Constant;
  }

  // Marks the node's outputs when they are functions of input shapes alone.
  bool derivesFromShapes(const Node* node) {
    const std::string kind = node->kind().toQualString();
    bool derived = false;
    if (readsShapeOnly(kind)) {
      derived = std::all_of(node->inputs().begin() + 1, node->inputs().end(),
                            [this](const Value* v) { return isShapeDerived(v); });
    } else if (propagatesShapes(kind)) {
      derived = std::all_of(node->inputs().begin(), node->inputs().end(),
                            [this](const Value* v) { return isShapeDerived(v); });
    }
    if (derived) {
      for (const Value* output : node->outputs()) shapeDerived_.insert(output);
    }
    return derived;
  }

  // `unpack`, when given, takes the node's Tensor[] apart: its outputs become the node's.
  void addNode(Node* node, Node* unpack) {
    OpNode opNode;
    opNode.op = node->kind().toQualString();
    if (const c10::FunctionSchema* schema = node->maybeSchema()) {
      opNode.schema = std::make_shared<c10::FunctionSchema>(*schema);
      opNode.overload = schema->overload_name();
    } else {
      opNode.unsupportedReason = concat(opNode.op, " has no operator schema");
    }
    const bool shapeNode = derivesFromShapes(node);
    if (shapeNode && opNode.unsupportedReason.empty()) {
      opNode.unsupportedReason = "computes sizes from input shapes";
    }
    for (Value* input : node->inputs()) opNode.inputs.push_back(ids_.at(input));
    if (!node->blocks().empty()) {
      opNode.unsupportedReason = concat("control flow (", opNode.op, ") stays in PyTorch");
      std::vector<Value*> captured;
      collectCapturedValues(node, graph_->block(), captured);
      for (Value* v : captured) {
        int id = ids_.at(v);
        if (std::find(opNode.inputs.begin(), opNode.inputs.end(), id) == opNode.inputs.end()) {
          opNode.inputs.push_back(id);
        }
      }
    }
    if (unpack) {
      for (Value* output : unpack->outputs()) {
        opNode.outputs.push_back(add(output, describeOutput(unpack, output)));
      }
    } else {
      for (Value* output : node->outputs()) {
        opNode.outputs.push_back(add(output, describeOutput(node, output)));
      }
    }
    result_.nodes.push_back(node);
    int id = result_.graph.addNode(std::move(opNode));
    KILN_CHECK(static_cast<size_t>(id) + 1 == result_.nodes.size(),
               "internal error: node ids out of step");
  }

  OpValue describeOutput(const Node* node, const Value* output) {
    OpValue value;
    value.kind = kindOfType(output->type());
    auto observed = observations_.find(output);
    if (value.kind == ValueKind::kTensor) {
      if (observed == observations_.end() || !observed->second[1].isTensor()) {
        value.kind = ValueKind::kOther;
        return value;
      }
      const auto& obs = observed->second;
      const at::Tensor& atOpt = obs[1].toTensor();
      value.dtype = atOpt.scalar_type();
      for (int64_t d = 0; d < atOpt.dim(); ++d) {
        value.shape.push_back(
            symIntOf(obs[0].toTensor().size(d), atOpt.size(d), obs[2].toTensor().size(d)));
      }
      return value;
    }
    if (node->kind() == c10::prim::ListConstruct) {
      // A list that an op changes after construction (aten::append, ...) has no known elements:
      // the ops that read it stay in PyTorch.
      const auto& uses = output->uses();
      if (std::any_of(uses.begin(), uses.end(),
                      [](const torch::jit::Use& use) { return mutates(use.user); })) {
        return value;
      }
      std::vector<int> elements;
      for (const Value* input : node->inputs()) elements.push_back(ids_.at(input));
      value.elements = std::move(elements);
      return value;
    }
    if (!isShapeDerived(output) || observed == observations_.end()) return value;
    const auto& obs = observed->second;
    if (value.kind == ValueKind::kInt) {
      setShapeInt(value, obs[0].toInt(), obs[1].toInt(), obs[2].toInt());
    } else if (value.kind == ValueKind::kIntList) {
      auto atMin = obs[0].toIntVector();
      auto atOpt = obs[1].toIntVector();
      auto atMax = obs[2].toIntVector();
      if (atMin == atOpt && atOpt == atMax) {
        value.constant = c10::IValue(atOpt);
      } else {
        std::vector<int> elements;
        for (size_t i = 0; i < atOpt.size(); ++i) {
          OpValue element;
          element.kind = ValueKind::kInt;
          element.name = concat(output->debugName(), "[", i, "]");
          setShapeInt(element, atMin[i], atOpt[i], atMax[i]);
          elements.push_back(add(nullptr, std::move(element)));
        }
        value.elements = std::move(elements);
      }
    }
    return value;
  }

  static void setShapeInt(OpValue& value, int64_t atMin, int64_t atOpt, int64_t atMax) {
    SymInt s = symIntOf(atMin, atOpt, atMax);
    if (s.isStatic()) {
      value.constant = c10::IValue(s.opt);
    } else {
      value.shapeInt = s;
    }
  }

  std::shared_ptr<torch::jit::Graph> graph_;
  const std::vector<InputSpec>& inputs_;
  std::unordered_map<const Value*, std::array<c10::IValue, 3>> observations_;
  std::unordered_map<const Value*, int> ids_;
  std::unordered_set<const Value*> shapeDerived_;
  TorchScriptImport result_;
};

}  // namespace

TorchScriptImport importTorchScript(const torch::jit::Module& lowered,
                                    const std::vector<InputSpec>& inputs) {
  return Importer(lowered, inputs).run();
}

torch::jit::Module rewriteTorchScript(
    const torch::jit::Module& lowered, const TorchScriptImport& import, const Partition& partition,
    const std::vector<c10::intrusive_ptr<EngineHolder>>& engines) {
  auto oldGraph = lowered.get_method("forward").graph();
  torch::jit::Module module(c10::QualifiedName("__torch__.kiln.CompiledModule"));
  const auto engineType = c10::getCustomClassType<c10::intrusive_ptr<EngineHolder>>();
  for (size_t i = 0; i < engines.size(); ++i) {
    module.register_attribute(concat("_kiln_engine_", i), engineType, c10::IValue(engines[i]));
  }

  auto graph = std::make_shared<torch::jit::Graph>();
  std::unordered_map<const Value*, Value*> env;
  Value* self = graph->addInput("self")->setType(module.type());
  env[oldGraph->inputs()[0]] = self;
  for (size_t i = 1; i < oldGraph->inputs().size(); ++i) {
    Value* input = graph->addInput();
    input->copyMetadata(oldGraph->inputs()[i]);
    // The saved code names forward's arguments after these: "x", never the unique "x.1".
    input->setDebugName(oldGraph->inputs()[i]->debugNameBase());
    env[oldGraph->inputs()[i]] = input;
  }
  auto lookup = [&](Value* v) -> Value* {
    auto it = env.find(v);
    KILN_CHECK(it != env.end(), "internal error: value ", v->debugName(),
               " is used before it is computed in the rewritten graph");
    return it->second;
  };
  for (Node* node : oldGraph->nodes()) {
    if (node->kind() != c10::prim::Constant) continue;
    Node* cloned = graph->appendNode(graph->createClone(node, lookup));
    env[node->output()] = cloned->output();
  }

  for (const PartitionItem& item : partition.order) {
    if (item.kind == PartitionItem::Kind::kTorchNode) {
      Node* node = import.nodes.at(static_cast<size_t>(item.index));
      Node* cloned = graph->appendNode(graph->createClone(node, lookup));
      for (size_t i = 0; i < node->outputs().size(); ++i) env[node->output(i)] = cloned->output(i);
      if (Node* unpack = absorbedListUnpack(node)) {
        Node* clonedUnpack = graph->appendNode(graph->createClone(unpack, lookup));
        for (size_t i = 0; i < unpack->outputs().size(); ++i) {
          env[unpack->output(i)] = clonedUnpack->output(i);
        }
      }
      continue;
    }
    const Segment& segment = partition.segments.at(static_cast<size_t>(item.index));
    std::vector<Value*> inputs;
    for (int v : segment.inputs) inputs.push_back(lookup(import.values.at(static_cast<size_t>(v))));
    Node* engine =
        graph->appendNode(graph->createGetAttr(self, concat("_kiln_engine_", item.index)));
    Node* list = graph->appendNode(graph->createList(c10::TensorType::get(), inputs));
    Node* call =
        graph->appendNode(graph->create(c10::Symbol::fromQualString("kiln::execute_engine"),
                                        {list->output(), engine->output()}, 1));
    call->output()->setType(c10::ListType::ofTensors());
    Node* unpack =
        graph->appendNode(graph->createListUnpack(call->output(), segment.outputs.size()));
    for (size_t i = 0; i < segment.outputs.size(); ++i) {
      Value* original = import.values.at(static_cast<size_t>(segment.outputs[i]));
      unpack->output(i)->setType(c10::TensorType::get());
      env[original] = unpack->output(i);
    }
  }
  for (Value* output : oldGraph->outputs()) graph->registerOutput(lookup(output));
  torch::jit::EliminateDeadCode(graph);

  auto* function = module._ivalue()->compilation_unit()->create_function(
      c10::QualifiedName(*module.type()->name(), "forward"), graph);
  std::vector<c10::Argument> arguments;
  // debugNameBase: "x", not the unique "x.1", which is no valid argument name in saved code.
  for (Value* input : graph->inputs()) {
    arguments.emplace_back(input->debugNameBase(), input->type());
  }
  std::vector<c10::Argument> returns;
  for (Value* output : graph->outputs()) returns.emplace_back("", output->type());
  function->setSchema(c10::FunctionSchema("forward", "", std::move(arguments), std::move(returns)));
  module.type()->addMethod(function);
  return module;
}

}  // namespace kiln
