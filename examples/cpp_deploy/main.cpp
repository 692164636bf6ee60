// Runs a module saved by kiln.save from C++: loads it with torch::jit::load (libkiln_runtime.so,
// linked in, provides the Kiln engines inside it), runs it on one input and prints the output.
//
//   kiln_deploy MODULE.ts (--input INPUT.pt | --shape 1,3,64,64) [--output OUTPUT.pt]
//
// --input reads a tensor written by Python's torch.save; --shape makes a deterministic input,
// torch.linspace(-1, 1, numel).reshape(shape) in float32, that Python can make the same way.
// --output writes the output with torch::pickle_save, which Python's torch.load reads.
#include <torch/script.h>
#include <torch/serialize.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Options {
  std::string modulePath;
  std::string inputPath;
  std::vector<int64_t> shape;
  std::string outputPath;
};

const char* const kUsage =
    "usage: kiln_deploy MODULE.ts (--input INPUT.pt | --shape 1,3,64,64) [--output OUTPUT.pt]";

std::vector<int64_t> parseShape(const std::string& text) {
  std::vector<int64_t> dims;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t end = std::min(text.find(',', start), text.size());
    const std::string dim = text.substr(start, end - start);
    size_t parsed = 0;
    int64_t value = 0;
    try {
      value = std::stoll(dim, &parsed);
    } catch (const std::exception&) {
      parsed = 0;
    }
    if (parsed == 0 || parsed != dim.size() || value < 1) {
      throw std::invalid_argument("--shape takes positive ints separated by commas, got '" + text +
                                  "'");
    }
    dims.push_back(value);
    start = end + 1;
  }
  return dims;
}

Options parseOptions(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool hasValue = i + 1 < argc;
    if (arg == "--input" && hasValue) {
      options.inputPath = argv[++i];
    } else if (arg == "--shape" && hasValue) {
      options.shape = parseShape(argv[++i]);
    } else if (arg == "--output" && hasValue) {
      options.outputPath = argv[++i];
    } else if (arg.rfind("--", 0) != 0 && options.modulePath.empty()) {
      options.modulePath = arg;
    } else {
      throw std::invalid_argument("unexpected argument '" + arg + "'");
    }
  }
  if (options.modulePath.empty()) {
    throw std::invalid_argument("no module given");
  }
  if (options.inputPath.empty() == options.shape.empty()) {
    throw std::invalid_argument("give exactly one of --input and --shape");
  }
  return options;
}

std::vector<char> readFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    throw std::runtime_error("cannot open '" + path + "'");
  }
  return std::vector<char>(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

void writeFile(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream file(path, std::ios::binary);
  file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!file) {
    throw std::runtime_error("cannot write '" + path + "'");
  }
}

at::Tensor makeInput(const Options& options) {
  if (!options.shape.empty()) {
    int64_t numel = 1;
    for (int64_t dim : options.shape) {
      numel *= dim;
    }
    return torch::linspace(-1.0, 1.0, numel, torch::kFloat32).reshape(options.shape);
  }
  const c10::IValue loaded = torch::pickle_load(readFile(options.inputPath));
  if (!loaded.isTensor()) {
    throw std::runtime_error("'" + options.inputPath + "' holds a " + loaded.tagKind() +
                             ", not a tensor saved with torch.save");
  }
  return loaded.toTensor();
}

void printTensor(const std::string& label, const at::Tensor& tensor) {
  const at::Tensor flat = tensor.detach().to(torch::kFloat64).flatten();
  std::cout << label << ": shape " << tensor.sizes() << ", dtype " << tensor.dtype() << ", sum "
            << flat.sum().item<double>() << ", first values";
  for (int64_t i = 0; i < std::min<int64_t>(flat.numel(), 5); ++i) {
    std::cout << ' ' << flat[i].item<double>();
  }
  std::cout << '\n';
}

int run(const Options& options) {
  torch::jit::Module module = torch::jit::load(options.modulePath);
  module.eval();
  const at::Tensor input = makeInput(options);
  printTensor("input", input);

  c10::IValue output;
  {
    c10::InferenceMode inferenceMode;
    output = module.forward({input});
  }
  if (output.isTensor()) {
    printTensor("output", output.toTensor());
  } else if (output.isTuple()) {
    const auto& elements = output.toTupleRef().elements();
    for (size_t i = 0; i < elements.size(); ++i) {
      if (elements[i].isTensor()) {
        printTensor("output " + std::to_string(i), elements[i].toTensor());
      }
    }
  } else {
    std::cout << "output: a " << output.tagKind() << '\n';
  }
  if (!options.outputPath.empty()) {
    writeFile(options.outputPath, torch::pickle_save(output));
    std::cout << "wrote " << options.outputPath << '\n';
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  try {
    options = parseOptions(argc, argv);
  } catch (const std::invalid_argument& error) {
    std::cerr << "kiln_deploy: " << error.what() << '\n' << kUsage << '\n';
    return 2;
  }
  try {
    return run(options);
  } catch (const std::exception& error) {
    std::cerr << "kiln_deploy: " << error.what() << '\n';
    return 1;
  }
}
