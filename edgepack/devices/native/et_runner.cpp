// ExecuTorch runner for aarch64: the native counterpart of runner_script.py.
//
// ExecuTorch's aarch64 wheel ships the runtime libraries and headers but no runner
// binary, and its Python runtime needs a full aarch64 torch. This program links the
// wheel's libexecutorch*.so directly and speaks runner_script.py's protocol, so the
// caller cannot tell the two apart:
//
//   et_runner --artifact m.pte --format executorch --inputs x.npy --outputs y.npy
//             --result r.json --warmup 10 --iterations 50 --threads 1
//
// Every row of x.npy (float32, C order) runs as one batch-1 sample; the outputs are
// stacked into y.npy. The JSON result has the same keys as runner_script.py's. With
// EDGEPACK_MARKERS=1 the timed loop is bracketed by the same marker syscalls (see
// runner_script.py), so an instruction-counting emulator can measure exactly that window.

#include <executorch/extension/module/module.h>
#include <executorch/runtime/core/error.h>
#include <executorch/runtime/core/portable_type/tensor_impl.h>
#include <executorch/runtime/platform/runtime.h>

#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef EDGEPACK_ET_VERSION
#define EDGEPACK_ET_VERSION "unknown"
#endif

// The wheel ships libexecutorch_threadpool.so but not its header; these two
// declarations match extension/threadpool/threadpool.h of the same release. Without them
// XNNPACK sizes its pool to every core and `--threads` would be a lie.
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace {

using executorch::aten::ScalarType;
using executorch::extension::Module;
using executorch::runtime::EValue;
using executorch::runtime::etensor::TensorImpl;

// Must equal runner_script.py's MARKER_* values.
constexpr long kMarkerSyscall = 0xED9E;
constexpr long kMarkerMagic = 0x65646765;
constexpr long kMarkerStart = 1;
constexpr long kMarkerStop = 2;

bool g_markers = false;

void marker(long phase) {
  // An unused syscall number: the kernel (and qemu) return ENOSYS at once; an
  // instruction-counting plugin sees the number and opens or closes its window.
  if (g_markers) syscall(kMarkerSyscall, kMarkerMagic, phase, 0, 0, 0, 0);
}

struct Npy {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

Npy read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  char magic[6];
  f.read(magic, 6);
  if (!f || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error(path + " is not a .npy file");
  unsigned char version[2];
  f.read(reinterpret_cast<char*>(version), 2);
  uint32_t header_len = 0;
  if (version[0] == 1) {
    unsigned char b[2];
    f.read(reinterpret_cast<char*>(b), 2);
    header_len = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    f.read(reinterpret_cast<char*>(b), 4);
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (uint32_t(b[3]) << 24);
  }
  std::string header(header_len, '\0');
  f.read(&header[0], header_len);
  if (header.find("'descr': '<f4'") == std::string::npos)
    throw std::runtime_error(path + ": only little-endian float32 inputs are supported, header " + header);
  if (header.find("'fortran_order': False") == std::string::npos)
    throw std::runtime_error(path + ": Fortran-ordered arrays are not supported");
  auto open = header.find("'shape': (");
  auto close = header.find(')', open);
  if (open == std::string::npos || close == std::string::npos) throw std::runtime_error(path + ": no shape in header");
  std::string dims = header.substr(open + 10, close - open - 10);
  Npy npy;
  std::stringstream ss(dims);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.find_first_not_of(" ") == std::string::npos) continue;
    npy.shape.push_back(std::stoll(item));
  }
  int64_t count = 1;
  for (auto d : npy.shape) count *= d;
  npy.data.resize(count);
  f.read(reinterpret_cast<char*>(npy.data.data()), count * sizeof(float));
  if (!f) throw std::runtime_error(path + ": truncated data");
  return npy;
}

void write_npy(const std::string& path, const std::vector<int64_t>& shape, const std::vector<float>& data) {
  std::string dims;
  for (auto d : shape) dims += std::to_string(d) + ", ";
  if (shape.size() > 1) dims.resize(dims.size() - 1);
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  // numpy aligns the data to 64 bytes: magic(6) + version(2) + length(2) + header + '\n'.
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream f(path, std::ios::binary);
  f.write("\x93NUMPY\x01\x00", 8);
  uint16_t len = static_cast<uint16_t>(header.size());
  char b[2] = {char(len & 0xff), char(len >> 8)};
  f.write(b, 2);
  f.write(header.data(), header.size());
  f.write(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(float));
  if (!f) throw std::runtime_error("cannot write " + path);
}

double peak_rss_mb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return 0.0;
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

double percentile(std::vector<double> values, double q) {
  std::sort(values.begin(), values.end());
  double k = (values.size() - 1) * q / 100.0;
  size_t lo = static_cast<size_t>(k), hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (values[hi] - values[lo]) * (k - lo);
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

struct Args {
  std::string artifact, format, inputs, outputs, result;
  int warmup = 10, iterations = 50, threads = 1;
};

Args parse(int argc, char** argv) {
  Args a;
  std::map<std::string, std::string> kv;
  for (int i = 1; i + 1 < argc; i += 2) kv[argv[i]] = argv[i + 1];
  auto need = [&](const char* k) {
    auto it = kv.find(k);
    if (it == kv.end()) throw std::invalid_argument(std::string("missing ") + k);
    return it->second;
  };
  a.artifact = need("--artifact");
  a.format = need("--format");
  a.inputs = need("--inputs");
  a.outputs = need("--outputs");
  a.result = need("--result");
  if (kv.count("--warmup")) a.warmup = std::stoi(kv["--warmup"]);
  if (kv.count("--iterations")) a.iterations = std::stoi(kv["--iterations"]);
  if (kv.count("--threads")) a.threads = std::stoi(kv["--threads"]);
  if (a.format != "executorch") throw std::invalid_argument("this runner only runs executorch artifacts, got " + a.format);
  if (a.iterations < 1) throw std::invalid_argument("--iterations must be at least 1");
  return a;
}

std::string error_name(executorch::runtime::Error e) {
  return std::string(executorch::runtime::to_string(e)) + ", executorch error " + std::to_string(static_cast<int>(e));
}

// Runs the artifact and returns the JSON fields after the common header.
std::string execute(const Args& args) {
  Npy inputs = read_npy(args.inputs);
  if (inputs.shape.empty() || inputs.shape[0] < 1) throw std::runtime_error("inputs must have at least one row");
  double baseline_mb = peak_rss_mb();

  auto t0 = std::chrono::steady_clock::now();
  executorch::runtime::runtime_init();
  executorch::extension::threadpool::get_threadpool()->_unsafe_reset_threadpool(args.threads);
  Module module(args.artifact, Module::LoadMode::File);
  auto err = module.load_forward();
  if (err != executorch::runtime::Error::Ok)
    throw std::runtime_error("could not load method 'forward' from " + args.artifact + " (" + error_name(err) + ")");
  double load_ms = ms_since(t0);

  // One sample: the input row with a leading batch dimension of 1.
  std::vector<int32_t> sizes(inputs.shape.begin(), inputs.shape.end());
  sizes[0] = 1;
  std::vector<uint8_t> dim_order(sizes.size());
  std::iota(dim_order.begin(), dim_order.end(), 0);
  std::vector<int32_t> strides(sizes.size());
  int64_t row = 1;
  for (int i = static_cast<int>(sizes.size()) - 1; i >= 0; --i) {
    strides[i] = static_cast<int32_t>(row);
    row *= sizes[i];
  }
  std::vector<float> sample(row);

  std::vector<int64_t> out_row_shape;
  auto run = [&](int64_t index, std::vector<float>* out) {
    std::copy(inputs.data.begin() + index * row, inputs.data.begin() + (index + 1) * row, sample.begin());
    TensorImpl impl(ScalarType::Float, static_cast<ssize_t>(sizes.size()), sizes.data(), sample.data(), dim_order.data(), strides.data());
    executorch::aten::Tensor tensor(&impl);
    auto result = module.forward(std::vector<EValue>{EValue(tensor)});
    if (!result.ok()) throw std::runtime_error("forward failed (" + error_name(result.error()) + ")");
    if (out == nullptr) return;
    const auto& value = result.get().at(0);
    if (!value.isTensor()) throw std::runtime_error("the first output is not a tensor");
    const auto& y = value.toTensor();
    if (y.scalar_type() != ScalarType::Float) throw std::runtime_error("the first output is not float32");
    out_row_shape.assign(y.sizes().begin(), y.sizes().end());
    out->insert(out->end(), y.const_data_ptr<float>(), y.const_data_ptr<float>() + y.numel());
  };

  t0 = std::chrono::steady_clock::now();
  run(0, nullptr);
  double first_ms = ms_since(t0);

  for (int i = 0; i < args.warmup; ++i) run(0, nullptr);
  std::vector<double> latencies;
  latencies.reserve(args.iterations);
  marker(kMarkerStart);
  for (int i = 0; i < args.iterations; ++i) {
    t0 = std::chrono::steady_clock::now();
    run(0, nullptr);
    latencies.push_back(ms_since(t0));
  }
  marker(kMarkerStop);

  // After the timed loop, as in runner_script.py: the counted window's history does not
  // depend on the number of inputs.
  std::vector<float> outputs;
  for (int64_t i = 0; i < inputs.shape[0]; ++i) run(i, &outputs);
  std::vector<int64_t> out_shape = out_row_shape;
  if (out_shape.empty()) out_shape.push_back(1);
  out_shape[0] = inputs.shape[0] * (out_row_shape.empty() ? 1 : out_row_shape[0]);
  write_npy(args.outputs, out_shape, outputs);

  double mean = std::accumulate(latencies.begin(), latencies.end(), 0.0) / latencies.size();
  double var = 0;
  for (double v : latencies) var += (v - mean) * (v - mean);
  std::string lat = "[";
  for (size_t i = 0; i < latencies.size(); ++i) lat += (i ? ", " : "") + num(latencies[i]);
  lat += "]";
  std::ostringstream j;
  j << "\"runtime\": \"executorch\", \"runtime_version\": \"" << EDGEPACK_ET_VERSION << "\""
    << ", \"import_ms\": 0.0"  // nothing is imported: the libraries load before main
    << ", \"load_ms\": " << num(load_ms) << ", \"first_inference_ms\": " << num(first_ms)
    << ", \"latencies_ms\": " << lat << ", \"p50_ms\": " << num(percentile(latencies, 50))
    << ", \"p90_ms\": " << num(percentile(latencies, 90)) << ", \"p99_ms\": " << num(percentile(latencies, 99))
    << ", \"mean_ms\": " << num(mean) << ", \"std_ms\": " << num(std::sqrt(var / latencies.size()))
    << ", \"baseline_rss_mb\": " << num(baseline_mb) << ", \"peak_rss_mb\": " << num(peak_rss_mb())
    << ", \"samples\": " << inputs.shape[0];
  return j.str();
}

}  // namespace

int main(int argc, char** argv) {
  const char* env = std::getenv("EDGEPACK_MARKERS");
  g_markers = env != nullptr && std::string(env) == "1";
  Args args;
  try {
    args = parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "et_runner: %s\n", e.what());
    return 2;
  }
  struct utsname uts {};
  uname(&uts);
  const char* base = std::strrchr(args.artifact.c_str(), '/');
  std::ostringstream doc;
  doc << "{\"schema\": \"edgepack.run/1\", \"format\": \"executorch\", \"artifact\": \""
      << json_escape(base ? base + 1 : args.artifact) << "\", \"threads\": " << args.threads
      << ", \"warmup\": " << args.warmup << ", \"iterations\": " << args.iterations << ", \"machine\": \""
      << json_escape(uts.machine) << "\", \"python\": null, ";
  int status = 0;
  try {
    doc << execute(args) << ", \"ok\": true}";
  } catch (const std::exception& e) {
    doc << "\"ok\": false, \"error\": \"RuntimeError: " << json_escape(e.what()) << "\"}";
    status = 1;
  }
  std::string tmp = args.result + ".tmp";
  {
    std::ofstream f(tmp);
    f << doc.str() << "\n";
    if (!f) return 3;
  }
  if (std::rename(tmp.c_str(), args.result.c_str()) != 0) return 3;
  return status;
}
