// run_model: run an edgecompile artifact on a CPU device with TVM's runtime libraries alone.
//
//   run_model MODEL_DIR IN_DIR OUT_DIR [RUNS]
//
// MODEL_DIR holds model.so and io.txt, written by `edgecompile package`: one line per tensor,
//
//   input NAME DTYPE DIM... [range LO HI]
//   output NAME DTYPE DIM...
//   weights FILE BYTES                (artifacts with a weights file: at most one such line)
//   weight DTYPE OFFSET DIM...        (one per weight tensor, in the order the model takes them)
//
// (DIMs are non-negative integers, none for a scalar; "range LO HI", for integer inputs that index
// a table such as token ids into a vocabulary, gives the inclusive bounds the model accepts; blank
// lines are skipped). NAME must be a plain file name: no '/', not "." or "..", printable ASCII.
// Each input is read from IN_DIR/NAME.bin (raw little-endian, C order); each output is written to
// OUT_DIR/NAME.bin. The weights file (a plain file name in MODEL_DIR, exactly BYTES long) is mapped
// read-only and each weight tensor handed to the model as a view of the mapping at OFFSET (a multiple
// of 64, the tensor inside the file): no copy, and the pages are the page cache's, resident once.
// With RUNS > 0 the model is also timed and the load time, peak resident set (VmHWM) and median
// latency printed. Threads:
// TVM_NUM_THREADS. The artifact's checksums are verified by `edgecompile package` when the bundle
// is made; this program trusts the bundle it ships in, but not io.txt's names nor its inputs.
//
// Before the model runs, every input is checked: the file holds exactly the tensor's bytes, integer
// values lie within the input's range, and float values are finite (NaN and +-Inf are refused: the
// int8 recipes would map them to finite garbage silently). model.so must be a regular file in
// MODEL_DIR, not a symlink.
//
// Exit status: 0 success; 2 a usage error, a malformed io.txt, a bad input or directory (the message
// names the input, value and position); 3 an error inside TVM's runtime (its message is printed).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <new>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace ffi = tvm::ffi;

static const char* kUsage = "usage: run_model MODEL_DIR IN_DIR OUT_DIR [RUNS] (RUNS: a non-negative integer)";

struct Spec {
  std::string name, dtype_name;
  DLDataType dtype;
  std::vector<int64_t> shape;
  size_t bytes = 0;
  bool has_range = false;
  int64_t lo = 0, hi = 0;
};

struct Weights {
  std::string file;
  uint64_t bytes = 0;
  std::vector<Spec> tensors;  // name unused; offset in lo
  bool present = false;
};

struct CPUAlloc {
  void AllocData(DLTensor* t) {
    t->data = std::aligned_alloc(64, std::max<size_t>(64, (ffi::GetDataSize(*t) + 63) / 64 * 64));
    if (!t->data) throw std::bad_alloc();
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

// A tensor whose data lives in memory the caller owns (the weights mapping): nothing to allocate or free.
struct MappedAlloc {
  void* data;
  void AllocData(DLTensor* t) { t->data = data; }
  void FreeData(DLTensor*) {}
};

[[noreturn]] static void Fail(const std::string& msg, int code = 2) {
  std::cerr << "run_model: " << msg << std::endl;
  std::exit(code);
}

static bool ParseInt(const std::string& s, int64_t* v) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
  return !s.empty() && ec == std::errc() && end == s.data() + s.size();
}

static bool ParseDtype(const std::string& s, DLDataType* t) {
  static const struct { const char* name; DLDataType type; } kTypes[] = {
      {"float64", {kDLFloat, 64, 1}}, {"float32", {kDLFloat, 32, 1}}, {"float16", {kDLFloat, 16, 1}},
      {"int64", {kDLInt, 64, 1}},     {"int32", {kDLInt, 32, 1}},     {"int16", {kDLInt, 16, 1}},
      {"int8", {kDLInt, 8, 1}},       {"uint64", {kDLUInt, 64, 1}},   {"uint32", {kDLUInt, 32, 1}},
      {"uint16", {kDLUInt, 16, 1}},   {"uint8", {kDLUInt, 8, 1}},     {"bool", {kDLBool, 8, 1}},
      {"bfloat16", {kDLBfloat, 16, 1}},
  };
  for (const auto& k : kTypes) {
    if (s == k.name) return *t = k.type, true;
  }
  return false;
}

static bool PlainFileName(const std::string& s) {
  if (s.empty() || s == "." || s == "..") return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return c > ' ' && c < 127 && c != '/'; });
}

// The dimensions tok[i...] (up to "range" or the end) into spec->shape and spec->bytes.
static std::string ParseDims(const std::vector<std::string>& tok, size_t* i, Spec* spec) {
  int64_t count = 1;
  for (int64_t d; *i < tok.size() && tok[*i] != "range"; ++*i) {
    if (!ParseInt(tok[*i], &d) || d < 0) return "dimension '" + tok[*i] + "' is not a non-negative integer";
    if (__builtin_mul_overflow(count, d, &count) || count > (INT64_MAX >> 4)) return "shape too large";
    spec->shape.push_back(d);
  }
  spec->bytes = static_cast<size_t>(count) * (spec->dtype.bits / 8);
  return "";
}

// A "weights FILE BYTES" or "weight DTYPE OFFSET DIM..." line into *w.
static std::string ParseWeightsLine(const std::vector<std::string>& tok, Weights* w) {
  int64_t v;
  if (tok[0] == "weights") {
    if (w->present) return "a second 'weights' line";
    if (tok.size() != 3 || !PlainFileName(tok[1]) || !ParseInt(tok[2], &v) || v < 0) {
      return "expected 'weights FILE BYTES' (a plain file name, a non-negative integer)";
    }
    w->file = tok[1], w->bytes = static_cast<uint64_t>(v), w->present = true;
    return "";
  }
  if (!w->present) return "a 'weight' line before the 'weights' line";
  Spec spec;
  spec.dtype_name = tok[1];
  if (!ParseDtype(tok[1], &spec.dtype)) return "unknown dtype '" + tok[1] + "'";
  if (!ParseInt(tok[2], &spec.lo) || spec.lo < 0 || spec.lo % 64 != 0) {
    return "offset '" + tok[2] + "' is not a non-negative multiple of 64";
  }
  size_t i = 3;
  std::string err = ParseDims(tok, &i, &spec);
  if (!err.empty()) return err;
  if (i != tok.size()) return "unexpected '" + tok[i] + "'";
  if (static_cast<uint64_t>(spec.lo) > w->bytes || spec.bytes > w->bytes - static_cast<uint64_t>(spec.lo)) {
    return "the tensor lies outside the weights file (" + std::to_string(w->bytes) + " bytes)";
  }
  w->tensors.push_back(spec);
  return "";
}

// One line of io.txt; "" when it is well formed, else what is wrong with it.
static std::string ParseLine(const std::string& line, std::string* kind, Spec* spec, Weights* w) {
  std::istringstream ss(line);
  std::vector<std::string> tok;
  for (std::string t; ss >> t;) tok.push_back(t);
  if (tok.size() < 3) return "expected 'input|output NAME DTYPE DIM...'";
  *kind = tok[0];
  if (*kind == "weights" || *kind == "weight") return ParseWeightsLine(tok, w);
  if (*kind != "input" && *kind != "output") return "unknown kind '" + *kind + "' (input, output, weights, weight)";
  spec->name = tok[1];
  if (!PlainFileName(spec->name)) return "name '" + spec->name + "' is not a plain file name";
  spec->dtype_name = tok[2];
  if (!ParseDtype(tok[2], &spec->dtype)) return "unknown dtype '" + tok[2] + "'";
  size_t i = 3;
  std::string err = ParseDims(tok, &i, spec);
  if (!err.empty()) return err;
  if (i == tok.size()) return "";
  bool integer = spec->dtype.code == kDLInt || spec->dtype.code == kDLUInt;
  if (*kind != "input" || !integer) return "'range' is for integer inputs only";
  if (tok.size() != i + 3 || !ParseInt(tok[i + 1], &spec->lo) || !ParseInt(tok[i + 2], &spec->hi) ||
      spec->lo > spec->hi) {
    return "expected 'range LO HI' (integers, LO <= HI) at the end of the line";
  }
  spec->has_range = true;
  return "";
}

static void ReadIoTxt(const std::string& path, std::vector<Spec>* inputs, std::vector<Spec>* outputs, Weights* w) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) Fail("cannot read " + path + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) Fail(path + " is not a regular file");
  std::ifstream io(path);
  if (!io) Fail("cannot read " + path + ": " + std::strerror(errno));
  int number = 0;
  for (std::string line; std::getline(io, line);) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::string kind;
    Spec spec;
    std::string err = ParseLine(line, &kind, &spec, w);
    if (!err.empty()) Fail("malformed io.txt line " + std::to_string(number) + ": " + err);
    if (kind == "input" || kind == "output") (kind == "input" ? inputs : outputs)->push_back(spec);
  }
  if (io.bad()) Fail("cannot read " + path);
}

static std::string Position(size_t flat, const std::vector<int64_t>& shape) {
  std::vector<int64_t> idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = static_cast<int64_t>(flat % shape[d]);
    flat /= shape[d];
  }
  std::string s = "[";
  for (size_t d = 0; d < idx.size(); ++d) s += (d ? ", " : "") + std::to_string(idx[d]);
  return s + "]";
}

template <typename T>
static void CheckRange(const Spec& s, const void* data, size_t n) {
  const T* v = static_cast<const T*>(data);
  for (size_t i = 0; i < n; ++i) {
    bool ok;
    if constexpr (std::is_signed_v<T>) {
      ok = s.lo <= v[i] && v[i] <= s.hi;
    } else {
      ok = (s.lo <= 0 || v[i] >= static_cast<uint64_t>(s.lo)) && s.hi >= 0 && v[i] <= static_cast<uint64_t>(s.hi);
    }
    if (!ok) {
      Fail("input '" + s.name + "' holds " + std::to_string(+v[i]) + " at " + Position(i, s.shape) +
           ", outside its valid range " + std::to_string(s.lo) + ".." + std::to_string(s.hi) +
           " (it indexes a table, e.g. token ids into a vocabulary)");
    }
  }
}

// "" when finite, else "nan", "inf" or "-inf".
template <typename T>
static std::string NonFinite(T x) {
  if constexpr (std::is_same_v<T, uint16_t>) {  // float16 bits: exponent all ones
    if ((x & 0x7C00) != 0x7C00) return "";
    return (x & 0x3FF) ? "nan" : (x & 0x8000) ? "-inf" : "inf";
  } else {
    if (std::isfinite(x)) return "";
    return std::isnan(x) ? "nan" : x < 0 ? "-inf" : "inf";
  }
}

template <typename T>
static void CheckFinite(const Spec& s, const void* data, size_t n) {
  const T* v = static_cast<const T*>(data);
  for (size_t i = 0; i < n; ++i) {
    std::string bad = NonFinite(v[i]);
    if (!bad.empty()) {
      Fail("input '" + s.name + "' holds " + bad + " at " + Position(i, s.shape) + " (flat index " +
           std::to_string(i) + "): float inputs must be finite, NaN and Inf are refused");
    }
  }
}

static void CheckValues(const Spec& s, const ffi::Tensor& t) {
  size_t n = s.bytes / (s.dtype.bits / 8);
  const void* p = t.data_ptr();
  if (s.dtype.code == kDLFloat) {
    if (s.dtype.bits == 64) CheckFinite<double>(s, p, n);
    if (s.dtype.bits == 32) CheckFinite<float>(s, p, n);
    if (s.dtype.bits == 16) CheckFinite<uint16_t>(s, p, n);
  } else if (s.has_range) {
    bool sign = s.dtype.code == kDLInt;
    switch (s.dtype.bits) {
      case 8: return sign ? CheckRange<int8_t>(s, p, n) : CheckRange<uint8_t>(s, p, n);
      case 16: return sign ? CheckRange<int16_t>(s, p, n) : CheckRange<uint16_t>(s, p, n);
      case 32: return sign ? CheckRange<int32_t>(s, p, n) : CheckRange<uint32_t>(s, p, n);
      case 64: return sign ? CheckRange<int64_t>(s, p, n) : CheckRange<uint64_t>(s, p, n);
    }
  }
}

static ffi::Tensor ReadInput(const Spec& s, const std::string& in_dir) {
  std::string path = in_dir + "/" + s.name + ".bin";
  size_t size = s.bytes;
  std::string shape;
  for (int64_t d : s.shape) shape += (shape.empty() ? "" : "x") + std::to_string(d);
  struct stat st;
  if (stat(path.c_str(), &st) != 0) Fail("input '" + s.name + "': cannot read " + path + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) Fail("input '" + s.name + "': " + path + " is not a regular file");
  if (static_cast<uint64_t>(st.st_size) != size) {
    Fail("input '" + s.name + "': " + path + " holds " + std::to_string(st.st_size) + " bytes, the model expects " +
         std::to_string(size) + " (shape " + (shape.empty() ? "scalar" : shape) + " " + s.dtype_name + ")");
  }
  ffi::Tensor t = ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::ShapeView(s.shape.data(), s.shape.size()), s.dtype,
                                           DLDevice{kDLCPU, 0});
  std::ifstream f(path, std::ios::binary);
  if (!f.read(static_cast<char*>(t.data_ptr()), size) || f.peek() != EOF) {
    Fail("input '" + s.name + "': " + path + " must hold exactly " + std::to_string(size) + " bytes");
  }
  CheckValues(s, t);
  return t;
}

// The weights file mapped read-only (kept for the life of the process), one tensor view per weight.
static std::vector<ffi::Tensor> MapWeights(const Weights& w, const std::string& model_dir) {
  std::vector<ffi::Tensor> out;
  if (!w.present) return out;
  std::string path = model_dir + "/" + w.file;
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) Fail("cannot read " + path + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) Fail(path + " is not a regular file inside " + model_dir + " (a symlink?): refused");
  if (static_cast<uint64_t>(st.st_size) != w.bytes) {
    Fail(path + " holds " + std::to_string(st.st_size) + " bytes, io.txt says " + std::to_string(w.bytes));
  }
  if (w.bytes == 0) Fail(path + " is empty");
  int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW);
  if (fd < 0) Fail("cannot open " + path + ": " + std::strerror(errno));
  void* base = mmap(nullptr, w.bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (base == MAP_FAILED) Fail("cannot map " + path + ": " + std::strerror(errno));
  for (const Spec& s : w.tensors) {
    void* data = static_cast<char*>(base) + s.lo;
    out.push_back(ffi::Tensor::FromNDAlloc(MappedAlloc{data}, ffi::ShapeView(s.shape.data(), s.shape.size()),
                                           s.dtype, DLDevice{kDLCPU, 0}));
  }
  return out;
}

// This process's peak resident set in KiB (VmHWM: Linux and Android), or -1 where /proc is not there.
// Not getrusage's ru_maxrss: that counts the parent's pages from before exec.
static long PeakRssKiB() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

static void Flatten(const ffi::Any& value, std::vector<ffi::Tensor>* out) {
  if (auto t = value.as<ffi::Tensor>()) {
    out->push_back(*t);
  } else if (auto arr = value.as<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& v : *arr) Flatten(v, out);
  } else {
    Fail("the model returned something that is neither a tensor nor a tuple of tensors", 3);
  }
}

int main(int argc, char** argv) {
  if (argc < 4 || argc > 5) Fail(kUsage);
  std::string model_dir = argv[1], in_dir = argv[2], out_dir = argv[3];
  int64_t runs = 0;
  if (argc > 4 && (!ParseInt(argv[4], &runs) || runs < 0 || runs > INT_MAX)) {
    Fail(std::string("RUNS '") + argv[4] + "' is not a non-negative integer; " + kUsage);
  }
  std::vector<Spec> inputs, outputs;
  Weights weights;
  ReadIoTxt(model_dir + "/io.txt", &inputs, &outputs, &weights);
  std::string so = model_dir + "/model.so";
  struct stat st;
  if (lstat(so.c_str(), &st) != 0) Fail("cannot read " + so + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) Fail(so + " is not a regular file inside " + model_dir + " (a symlink?): refused");
  if (stat(out_dir.c_str(), &st) != 0) Fail("output directory " + out_dir + " does not exist");
  if (!S_ISDIR(st.st_mode)) Fail("output directory " + out_dir + " is not a directory");
  if (access(out_dir.c_str(), W_OK) != 0) Fail("output directory " + out_dir + " is not writable");
  try {
    std::vector<ffi::Any> args;
    for (const Spec& s : inputs) args.push_back(ReadInput(s, in_dir));
    auto t_load = std::chrono::steady_clock::now();
    for (ffi::Tensor& t : MapWeights(weights, model_dir)) args.push_back(t);
    ffi::Module lib = ffi::Module::LoadFromFile(so);
    ffi::Module vm = lib->GetFunction("vm_load_executable").value()().cast<ffi::Module>();
    // device type, id, allocator (2: pooled) for the model's device, then for the host
    vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, 2, static_cast<int>(kDLCPU), 0, 2);
    ffi::Function main_fn = vm->GetFunction("main").value();
    double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_load).count();
    std::vector<ffi::AnyView> views(args.begin(), args.end());
    ffi::Any result;
    main_fn.CallPacked(views.data(), static_cast<int32_t>(views.size()), &result);
    std::vector<ffi::Tensor> results;
    Flatten(result, &results);
    if (results.size() != outputs.size()) {
      Fail("the model returned " + std::to_string(results.size()) + " outputs, io.txt lists " +
           std::to_string(outputs.size()));
    }
    for (size_t i = 0; i < results.size(); ++i) {
      std::string path = out_dir + "/" + outputs[i].name + ".bin";
      std::ofstream f(path, std::ios::binary);
      f.write(static_cast<const char*>(results[i].data_ptr()), ffi::GetDataSize(*results[i].GetDLTensorPtr()));
      f.close();
      if (!f) Fail("cannot write " + path + ": " + std::strerror(errno));
    }
    if (runs > 0) {
      std::vector<double> ms;
      for (int64_t r = 0; r < runs + 3; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        main_fn.CallPacked(views.data(), static_cast<int32_t>(views.size()), &result);
        auto t1 = std::chrono::steady_clock::now();
        if (r >= 3) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      }
      std::sort(ms.begin(), ms.end());
      std::printf("load %.3f ms\n", load_ms);
      std::printf("peak rss %ld KiB\n", PeakRssKiB());
      std::printf("median %.3f ms over %lld runs\n", ms[ms.size() / 2], static_cast<long long>(runs));
    }
  } catch (const std::bad_alloc&) {
    Fail("out of memory", 3);
  } catch (const std::exception& e) {
    Fail(std::string("error in TVM's runtime: ") + e.what(), 3);
  }
  return 0;
}
