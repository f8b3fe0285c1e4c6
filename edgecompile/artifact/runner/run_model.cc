// run_model: run an edgecompile artifact on a CPU device with TVM's runtime libraries alone.
//
//   run_model MODEL_DIR IN_DIR OUT_DIR [RUNS]
//
// MODEL_DIR holds model.so and io.txt (one line per tensor: "input|output NAME DTYPE DIM..."),
// written by `edgecompile package`. Each input is read from IN_DIR/NAME.bin (raw little-endian,
// C order); each output is written to OUT_DIR/NAME.bin. With RUNS > 0 the model is also timed and
// the median latency printed. Threads: TVM_NUM_THREADS. The artifact's checksums are verified by
// `edgecompile package` when the bundle is made; this program trusts the bundle it ships in.
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

struct Spec {
  std::string name;
  DLDataType dtype;
  std::vector<int64_t> shape;
};

struct CPUAlloc {
  void AllocData(DLTensor* t) { t->data = std::aligned_alloc(64, (ffi::GetDataSize(*t) + 63) / 64 * 64); }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

static DLDataType ParseDtype(const std::string& s) {
  if (s == "float32") return {kDLFloat, 32, 1};
  if (s == "float16") return {kDLFloat, 16, 1};
  if (s == "int64") return {kDLInt, 64, 1};
  if (s == "int32") return {kDLInt, 32, 1};
  if (s == "int8") return {kDLInt, 8, 1};
  if (s == "uint8") return {kDLUInt, 8, 1};
  if (s == "bool") return {kDLBool, 8, 1};
  throw std::runtime_error("unsupported dtype in io.txt: " + s);
}

static void Fail(const std::string& msg) {
  std::cerr << "run_model: " << msg << std::endl;
  std::exit(2);
}

static void Flatten(const ffi::Any& value, std::vector<ffi::Tensor>* out) {
  if (auto t = value.as<ffi::Tensor>()) {
    out->push_back(*t);
  } else if (auto arr = value.as<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& v : *arr) Flatten(v, out);
  } else {
    Fail("the model returned something that is neither a tensor nor a tuple of tensors");
  }
}

int main(int argc, char** argv) {
  if (argc < 4) Fail("usage: run_model MODEL_DIR IN_DIR OUT_DIR [RUNS]");
  std::string model_dir = argv[1], in_dir = argv[2], out_dir = argv[3];
  int runs = argc > 4 ? std::atoi(argv[4]) : 0;
  std::vector<Spec> inputs, outputs;
  std::ifstream io(model_dir + "/io.txt");
  if (!io) Fail("cannot read " + model_dir + "/io.txt");
  for (std::string line; std::getline(io, line);) {
    std::istringstream ss(line);
    std::string kind, dtype;
    Spec spec;
    ss >> kind >> spec.name >> dtype;
    spec.dtype = ParseDtype(dtype);
    for (int64_t d; ss >> d;) spec.shape.push_back(d);
    (kind == "input" ? inputs : outputs).push_back(spec);
  }
  try {
    ffi::Module lib = ffi::Module::LoadFromFile(model_dir + "/model.so");
    ffi::Module vm = lib->GetFunction("vm_load_executable").value()().cast<ffi::Module>();
    // device type, id, allocator (2: pooled) for the model's device, then for the host
    vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, 2, static_cast<int>(kDLCPU), 0, 2);
    ffi::Function main_fn = vm->GetFunction("main").value();
    std::vector<ffi::Any> args;
    for (const Spec& s : inputs) {
      ffi::Tensor t = ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::ShapeView(s.shape.data(), s.shape.size()), s.dtype,
                                               DLDevice{kDLCPU, 0});
      std::ifstream f(in_dir + "/" + s.name + ".bin", std::ios::binary);
      size_t size = ffi::GetDataSize(*t.GetDLTensorPtr());
      if (!f.read(static_cast<char*>(t.data_ptr()), size) || f.peek() != EOF) {
        Fail("input " + s.name + ": " + in_dir + "/" + s.name + ".bin must hold exactly " + std::to_string(size) +
             " bytes");
      }
      args.push_back(t);
    }
    std::vector<ffi::AnyView> views(args.begin(), args.end());
    ffi::Any result;
    main_fn.CallPacked(views.data(), static_cast<int32_t>(views.size()), &result);
    std::vector<ffi::Tensor> results;
    Flatten(result, &results);
    if (results.size() != outputs.size()) Fail("the model returned a different number of outputs than io.txt lists");
    for (size_t i = 0; i < results.size(); ++i) {
      std::ofstream f(out_dir + "/" + outputs[i].name + ".bin", std::ios::binary);
      f.write(static_cast<const char*>(results[i].data_ptr()), ffi::GetDataSize(*results[i].GetDLTensorPtr()));
    }
    if (runs > 0) {
      std::vector<double> ms;
      for (int r = 0; r < runs + 3; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        main_fn.CallPacked(views.data(), static_cast<int32_t>(views.size()), &result);
        auto t1 = std::chrono::steady_clock::now();
        if (r >= 3) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      }
      std::sort(ms.begin(), ms.end());
      std::printf("median %.3f ms over %d runs\n", ms[ms.size() / 2], runs);
    }
  } catch (const std::exception& e) {
    Fail(e.what());
  }
  return 0;
}
