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
//   group NAME LO HI                  (a ranged artifact: a dimension that takes any size in LO..HI)
//   axis input|output NAME AXIS GROUP (an axis of a tensor that follows the group)
//   build LIB GROUP=SIZE... weights IDX...  (a ranged artifact's builds: library, sizes, weight tensors)
//
// A ranged artifact's run reads each group's size off the input files' byte counts (an input with
// more than one ranged axis, batch and length, also needs IN_DIR/NAME.shape: its dimensions), loads
// the smallest build that holds them, zero-pads the inputs to its sizes and writes the outputs cut
// back to the real sizes.
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

// A ranged artifact (io.txt "group", "axis" and "build" lines): the builds, each a library taking the
// inputs at its group sizes and its own weight tensors (indices into the "weight" lines).
struct Build {
  std::string library;
  std::vector<std::pair<std::string, int64_t>> sizes;  // group -> size
  std::vector<size_t> weights;
};

struct Ranged {
  std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> groups;  // name -> (lo, hi)
  struct Axis { bool input; std::string tensor; size_t axis; std::string group; };
  std::vector<Axis> axes;
  std::vector<Build> builds;
  bool present() const { return !builds.empty(); }
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

// A "group NAME LO HI", "axis input|output TENSOR AXIS GROUP" or "build LIB GROUP=SIZE... weights IDX..."
// line into *r.
static std::string ParseRangedLine(const std::vector<std::string>& tok, Ranged* r) {
  int64_t a, b;
  if (tok[0] == "group") {
    if (tok.size() != 4 || !PlainFileName(tok[1]) || !ParseInt(tok[2], &a) || !ParseInt(tok[3], &b) || a < 1 || a > b) {
      return "expected 'group NAME LO HI' (1 <= LO <= HI)";
    }
    r->groups.push_back({tok[1], {a, b}});
    return "";
  }
  if (tok[0] == "axis") {
    if (tok.size() != 5 || (tok[1] != "input" && tok[1] != "output") || !ParseInt(tok[3], &a) || a < 0) {
      return "expected 'axis input|output TENSOR AXIS GROUP'";
    }
    r->axes.push_back({tok[1] == "input", tok[2], static_cast<size_t>(a), tok[4]});
    return "";
  }
  Build build;  // "build"
  if (tok.size() < 3 || !PlainFileName(tok[1])) return "expected 'build LIB GROUP=SIZE... weights IDX...'";
  build.library = tok[1];
  size_t i = 2;
  for (; i < tok.size() && tok[i] != "weights"; ++i) {
    size_t eq = tok[i].find('=');
    if (eq == std::string::npos || !ParseInt(tok[i].substr(eq + 1), &a) || a < 1) {
      return "bad build size '" + tok[i] + "'";
    }
    build.sizes.push_back({tok[i].substr(0, eq), a});
  }
  for (++i; i < tok.size(); ++i) {
    if (!ParseInt(tok[i], &a) || a < 0) return "bad weight index '" + tok[i] + "'";
    build.weights.push_back(static_cast<size_t>(a));
  }
  r->builds.push_back(build);
  return "";
}

// One line of io.txt; "" when it is well formed, else what is wrong with it.
static std::string ParseLine(const std::string& line, std::string* kind, Spec* spec, Weights* w, Ranged* r) {
  std::istringstream ss(line);
  std::vector<std::string> tok;
  for (std::string t; ss >> t;) tok.push_back(t);
  if (tok.size() < 3) return "expected 'input|output NAME DTYPE DIM...'";
  *kind = tok[0];
  if (*kind == "weights" || *kind == "weight") return ParseWeightsLine(tok, w);
  if (*kind == "group" || *kind == "axis" || *kind == "build") return ParseRangedLine(tok, r);
  if (*kind != "input" && *kind != "output") {
    return "unknown kind '" + *kind + "' (input, output, weights, weight, group, axis, build)";
  }
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

static void ReadIoTxt(const std::string& path, std::vector<Spec>* inputs, std::vector<Spec>* outputs, Weights* w,
                      Ranged* r) {
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
    std::string err = ParseLine(line, &kind, &spec, w, r);
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

// io.txt's ranged lines refer to its groups, tensors and weights, one ranged axis per input.
static void CheckRanged(const Ranged& r, const std::vector<Spec>& inputs, const std::vector<Spec>& outputs,
                        const Weights& w) {
  auto group = [&](const std::string& g) {
    for (size_t i = 0; i < r.groups.size(); ++i) if (r.groups[i].first == g) return static_cast<int>(i);
    return -1;
  };
  for (const auto& a : r.axes) {
    const std::vector<Spec>& list = a.input ? inputs : outputs;
    auto it = std::find_if(list.begin(), list.end(), [&](const Spec& s) { return s.name == a.tensor; });
    if (it == list.end() || a.axis >= it->shape.size() || group(a.group) < 0) {
      Fail("malformed io.txt: axis line for '" + a.tensor + "' names no such tensor, axis or group");
    }
  }
  for (const Build& b : r.builds) {
    if (b.sizes.size() != r.groups.size()) Fail("malformed io.txt: build " + b.library + " does not size every group");
    for (const auto& [g, n] : b.sizes) {
      int k = group(g);
      if (k < 0 || n < r.groups[k].second.first || n > r.groups[k].second.second) {
        Fail("malformed io.txt: build " + b.library + " has size " + g + "=" + std::to_string(n) +
             " outside its group");
      }
    }
    for (size_t i : b.weights) {
      if (i >= w.tensors.size()) Fail("malformed io.txt: build " + b.library + " names weight " + std::to_string(i));
    }
  }
}

// The size of each group (in Ranged::groups order), read off the input files' byte counts.
// IN_DIR/NAME.shape: the input's dimensions, whitespace-separated (needed where an input has more
// than one ranged dimension, so its byte count alone cannot say which is which).
static std::vector<int64_t> ReadShapeFile(const Spec& s, const std::string& in_dir) {
  std::string path = in_dir + "/" + s.name + ".shape";
  std::ifstream f(path);
  if (!f) {
    Fail("input '" + s.name + "' has more than one ranged dimension: give its dimensions in " + path +
         " (e.g. '2 17')");
  }
  std::vector<int64_t> dims;
  for (std::string t; f >> t;) {
    int64_t d;
    if (!ParseInt(t, &d) || d < 0) Fail(path + ": '" + t + "' is not a non-negative integer");
    dims.push_back(d);
  }
  if (dims.size() != s.shape.size()) {
    Fail(path + " gives " + std::to_string(dims.size()) + " dimensions, input '" + s.name + "' has " +
         std::to_string(s.shape.size()));
  }
  return dims;
}

static std::vector<int64_t> GroupSizes(const Ranged& r, const std::vector<Spec>& inputs, const std::string& in_dir) {
  std::vector<int64_t> sizes(r.groups.size(), -1);
  std::vector<std::string> from(r.groups.size());
  std::vector<std::pair<std::string, std::vector<int64_t>>> shape_files;  // each .shape file read once
  for (const auto& a : r.axes) {
    if (!a.input) continue;
    const Spec& s = *std::find_if(inputs.begin(), inputs.end(), [&](const Spec& x) { return x.name == a.tensor; });
    size_t k = 0;
    while (r.groups[k].first != a.group) ++k;
    const auto [lo, hi] = r.groups[k].second;
    std::string path = in_dir + "/" + s.name + ".bin";
    struct stat st;
    if (stat(path.c_str(), &st) != 0) Fail("input '" + s.name + "': cannot read " + path + ": " + std::strerror(errno));
    size_t ranged_axes = std::count_if(r.axes.begin(), r.axes.end(), [&](const auto& x) {
      return x.input && x.tensor == s.name;
    });
    uint64_t n, unit = s.shape[a.axis] ? s.bytes / s.shape[a.axis] : 0;
    if (ranged_axes > 1) {  // the byte count says only the product: the .shape file says which is which
      auto seen = std::find_if(shape_files.begin(), shape_files.end(),
                               [&](const auto& f) { return f.first == s.name; });
      if (seen == shape_files.end()) seen = shape_files.insert(shape_files.end(), {s.name, ReadShapeFile(s, in_dir)});
      n = static_cast<uint64_t>(seen->second[a.axis]);
      if (static_cast<int64_t>(n) < lo || static_cast<int64_t>(n) > hi) {
        Fail("input '" + s.name + "' has size " + std::to_string(n) + " in dimension " + std::to_string(a.axis) +
             " ('" + a.group + "'), outside " + std::to_string(lo) + ".." + std::to_string(hi));
      }
    } else {
      n = unit ? static_cast<uint64_t>(st.st_size) / unit : 0;
    }
    if (ranged_axes == 1 && (!unit || n * unit != static_cast<uint64_t>(st.st_size) || static_cast<int64_t>(n) < lo ||
                             static_cast<int64_t>(n) > hi)) {
      Fail("input '" + s.name + "': " + path + " holds " + std::to_string(st.st_size) + " bytes, not " +
           std::to_string(unit) + " per step of dimension " + std::to_string(a.axis) + " ('" + a.group +
           "') for a size in " + std::to_string(lo) + ".." + std::to_string(hi));
    }
    if (sizes[k] >= 0 && sizes[k] != static_cast<int64_t>(n)) {
      Fail("inputs '" + from[k] + "' and '" + s.name + "' disagree on '" + a.group + "': " + std::to_string(sizes[k]) +
           " vs " + std::to_string(n));
    }
    sizes[k] = static_cast<int64_t>(n), from[k] = s.name;
  }
  for (size_t k = 0; k < sizes.size(); ++k) {
    if (sizes[k] < 0) Fail("malformed io.txt: no input has the ranged dimension '" + r.groups[k].first + "'");
  }
  return sizes;
}

// The smallest build (by the product of its sizes) whose every group size holds ``sizes``.
static const Build& PickBuild(const Ranged& r, const std::vector<int64_t>& sizes) {
  const Build* best = nullptr;
  double best_cost = 0;
  for (const Build& b : r.builds) {
    bool holds = true;
    double cost = 1;
    for (size_t k = 0; k < r.groups.size(); ++k) {
      for (const auto& [g, n] : b.sizes) {
        if (g == r.groups[k].first) holds = holds && n >= sizes[k], cost *= static_cast<double>(n);
      }
    }
    if (holds && (!best || cost < best_cost)) best = &b, best_cost = cost;
  }
  if (!best) Fail("malformed io.txt: no build holds the inputs");
  return *best;
}

// The shape of ``s`` with its ranged axes at ``sizes`` (Ranged::groups order) or at the build's sizes.
static std::vector<int64_t> ShapeAt(const Ranged& r, const Spec& s, bool input, const std::vector<int64_t>& sizes) {
  std::vector<int64_t> shape = s.shape;
  for (const auto& a : r.axes) {
    if (a.input != input || a.tensor != s.name) continue;
    for (size_t k = 0; k < r.groups.size(); ++k) if (r.groups[k].first == a.group) shape[a.axis] = sizes[k];
  }
  return shape;
}

static std::vector<int64_t> BuildSizes(const Ranged& r, const Build& b) {
  std::vector<int64_t> out(r.groups.size());
  for (size_t k = 0; k < r.groups.size(); ++k) {
    for (const auto& [g, n] : b.sizes) if (g == r.groups[k].first) out[k] = n;
  }
  return out;
}

// Copy the box [0, box) of ``src`` (shape ``ss``) into ``dst`` (shape ``ds``), C order, ``item`` bytes each.
static void CopyBox(const char* src, const std::vector<int64_t>& ss, char* dst, const std::vector<int64_t>& ds,
                    const std::vector<int64_t>& box, size_t item, size_t dim = 0) {
  if (box.empty()) return (void)std::memcpy(dst, src, item);
  size_t s_stride = item, d_stride = item;
  for (size_t k = dim + 1; k < box.size(); ++k) s_stride *= ss[k], d_stride *= ds[k];
  if (dim + 1 == box.size()) return (void)std::memcpy(dst, src, box[dim] * item);
  for (int64_t i = 0; i < box[dim]; ++i) CopyBox(src + i * s_stride, ss, dst + i * d_stride, ds, box, item, dim + 1);
}

static ffi::Tensor Zeros(const std::vector<int64_t>& shape, DLDataType dtype) {
  ffi::Tensor t = ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::ShapeView(shape.data(), shape.size()), dtype,
                                           DLDevice{kDLCPU, 0});
  std::memset(t.data_ptr(), 0, ffi::GetDataSize(*t.GetDLTensorPtr()));
  return t;
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
  Ranged ranged;
  ReadIoTxt(model_dir + "/io.txt", &inputs, &outputs, &weights, &ranged);
  std::vector<int64_t> sizes;  // a ranged artifact: each group's size in these inputs
  const Build* build = nullptr;
  if (ranged.present()) {
    CheckRanged(ranged, inputs, outputs, weights);
    sizes = GroupSizes(ranged, inputs, in_dir);
    build = &PickBuild(ranged, sizes);
  }
  std::string so = model_dir + "/" + (build ? build->library : std::string("model.so"));
  struct stat st;
  if (lstat(so.c_str(), &st) != 0) Fail("cannot read " + so + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) Fail(so + " is not a regular file inside " + model_dir + " (a symlink?): refused");
  if (stat(out_dir.c_str(), &st) != 0) Fail("output directory " + out_dir + " does not exist");
  if (!S_ISDIR(st.st_mode)) Fail("output directory " + out_dir + " is not a directory");
  if (access(out_dir.c_str(), W_OK) != 0) Fail("output directory " + out_dir + " is not writable");
  try {
    std::vector<ffi::Any> args;
    for (const Spec& s : inputs) {
      if (!build) {
        args.push_back(ReadInput(s, in_dir));
        continue;
      }
      Spec actual = s;  // the shape the file holds, zero-padded into the build's shape
      actual.shape = ShapeAt(ranged, s, true, sizes);
      actual.bytes = s.dtype.bits / 8;
      for (int64_t d : actual.shape) actual.bytes *= d;
      ffi::Tensor read = ReadInput(actual, in_dir);
      std::vector<int64_t> into = ShapeAt(ranged, s, true, BuildSizes(ranged, *build));
      ffi::Tensor padded = Zeros(into, s.dtype);
      CopyBox(static_cast<const char*>(read.data_ptr()), actual.shape, static_cast<char*>(padded.data_ptr()), into,
              actual.shape, s.dtype.bits / 8);
      args.push_back(padded);
    }
    auto t_load = std::chrono::steady_clock::now();
    std::vector<ffi::Tensor> mapped = MapWeights(weights, model_dir);
    if (build) {
      for (size_t i : build->weights) args.push_back(mapped[i]);
    } else {
      for (ffi::Tensor& t : mapped) args.push_back(t);
    }
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
      const DLTensor* t = results[i].GetDLTensorPtr();
      if (build) {  // cut the ranged axes back to the inputs' sizes
        std::vector<int64_t> got(t->shape, t->shape + t->ndim), want = ShapeAt(ranged, outputs[i], false, sizes);
        for (size_t d = 0; d < want.size() && d < got.size(); ++d) want[d] = std::min(want[d], got[d]);
        size_t item = (t->dtype.bits * t->dtype.lanes + 7) / 8, n = item;
        for (int64_t d : want) n *= d;
        std::vector<char> cut(n);
        CopyBox(static_cast<const char*>(results[i].data_ptr()), got, cut.data(), want, want, item);
        f.write(cut.data(), static_cast<std::streamsize>(n));
      } else {
        f.write(static_cast<const char*>(results[i].data_ptr()), ffi::GetDataSize(*t));
      }
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
