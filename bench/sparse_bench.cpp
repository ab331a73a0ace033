// Dense f32 (kernels::linear, oneDNN) against the unstructured-sparse kernel
// (kernels::sparse_linear) for pruned ViT weights: Y (M, out) = X (M, in) W^T + b,
// W with a random fraction `density` of its elements nonzero (the rest exactly 0).
// Interleaved rounds (dense, sparse, dense, sparse, ...), the median (or min)
// ms per call of each, speedup = dense time / sparse time (> 1: sparse wins).
//   shapes: the default model vit-tiny-fmnist (dim 128, MLP 256, 50 tokens:
//   qkv 128 -> 384, proj 128 -> 128, fc1 128 -> 256, fc2 256 -> 128) and
//   vit_b_16 (dim 768, MLP 3072, 197 tokens: qkv 768 -> 2304, proj 768 -> 768,
//   fc1 768 -> 3072, fc2 3072 -> 768), M = tokens * batch.
// Calls are made outside any parallel region: both kernels use all --threads.
// The last column says what sparse_is_faster predicts (Y: sparse).
//
//   build/bench/vitkit_sparse_bench [--threads 1,2] [--batches 1,64] [--densities 0.5,0.4,0.3,0.2,0.1,0.05]
//       [--models tiny,b16] [--tokens N] [--rounds R] [--stat median|min] [--csv FILE] [--svg FILE]
//   --tokens: rows per image instead of the model's (e.g. --tokens 1 --batches 1,4,16: small M).
//   --svg: speedup against density, one panel per thread count and batch, a line per shape.
//   build/bench/vitkit_sparse_bench --replot FILE [--csv FILE] [--svg FILE]: no measurement;
//   the table, CSV and plot again from a CSV this program wrote (the predicted
//   column from the current sparse_is_faster).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "vitkit/core/threads.h"
#include "vitkit/kernels/gemm.h"
#include "vitkit/kernels/sparse.h"
#include "vitkit/report/svg_plot.h"

namespace {

using namespace vitkit;

struct Layer {
  const char* model;
  const char* name;
  int in, out, tokens;
};

const Layer kLayers[] = {
    {"tiny", "qkv", 128, 384, 50},   {"tiny", "proj", 128, 128, 50},   {"tiny", "fc1", 128, 256, 50},
    {"tiny", "fc2", 256, 128, 50},   {"b16", "qkv", 768, 2304, 197},   {"b16", "proj", 768, 768, 197},
    {"b16", "fc1", 768, 3072, 197},  {"b16", "fc2", 3072, 768, 197},
};

struct Row {
  int threads, batch;
  const Layer* layer;
  int64_t M, nnz;
  double density, dense_ms, sparse_ms;
  double speedup() const { return dense_ms / sparse_ms; }
};

template <typename T>
std::vector<T> parse_list(const std::string& s) {
  std::vector<T> v;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t end = s.find(',', pos);
    if (end == std::string::npos) end = s.size();
    const std::string item = s.substr(pos, end - pos);
    if constexpr (std::is_same_v<T, std::string>)
      v.push_back(item);
    else
      v.push_back(T(std::atof(item.c_str())));
    pos = end + 1;
  }
  return v;
}

// Median (or min) ms per call of dense and sparse, interleaved rounds.
std::pair<double, double> time_pair(const std::function<void()>& dense, const std::function<void()>& sparse,
                                    int reps, int rounds, bool use_min) {
  auto burst = [&](const std::function<void()>& f) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) f();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
  };
  burst(dense);  // warm-up: primitives, scratch
  burst(sparse);
  std::vector<double> td, ts;
  for (int r = 0; r < rounds; ++r) {
    td.push_back(burst(dense));
    ts.push_back(burst(sparse));
  }
  std::sort(td.begin(), td.end());
  std::sort(ts.begin(), ts.end());
  return use_min ? std::pair{td.front(), ts.front()} : std::pair{td[td.size() / 2], ts[ts.size() / 2]};
}

// One measurement: W (out, in) with the density's fraction nonzero, timed both ways.
Row measure(const Layer& L, int tokens, int threads, int batch, double density, int rounds, bool use_min,
            double& max_diff, double& max_abs) {
  const int64_t M = int64_t(tokens > 0 ? tokens : L.tokens) * batch;
  std::mt19937 rng(uint32_t(L.in * 31 + L.out * 7 + int(density * 1000)));
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<double> ud(0, 1);
  std::vector<float> x(size_t(M) * L.in), w(size_t(L.out) * L.in), bias(L.out), yd(size_t(M) * L.out),
      ys(size_t(M) * L.out);
  for (auto& v : x) v = nd(rng);
  for (auto& v : w) v = ud(rng) < density ? 0.05f * nd(rng) : 0.f;
  for (auto& v : bias) v = 0.01f * nd(rng);
  const kernels::Csr csr = kernels::csr_from_dense(w.data(), L.out, L.in);
  auto dense = [&] { kernels::linear(x.data(), w.data(), bias.data(), yd.data(), M, L.in, L.out); };
  auto sparse = [&] { kernels::sparse_linear(x.data(), csr, bias.data(), ys.data(), M, Activation::None, false); };
  const double fma = double(M) * L.in * L.out;
  const int reps = std::max(1, int(1.5e8 / fma));  // about 0.3 GFLOP of dense work per burst
  const auto [td, ts] = time_pair(dense, sparse, reps, rounds, use_min);
  for (size_t i = 0; i < yd.size(); ++i) {  // the two must agree (to f32 rounding)
    max_diff = std::max(max_diff, double(std::fabs(yd[i] - ys[i])));
    max_abs = std::max(max_abs, double(std::fabs(yd[i])));
  }
  return {threads, batch, &L, M, csr.nnz(), density, td, ts};
}

// The rows of a CSV written by write_csv (the layers must be ones of kLayers).
std::vector<Row> read_csv(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::string line;
  std::getline(f, line);  // header
  std::vector<Row> rows;
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    char model[16] = {}, layer[16] = {};
    int threads = 0, in = 0, out = 0, batch = 0, predicted = 0;
    long long M = 0, nnz = 0;
    double density = 0, dense_ms = 0, sparse_ms = 0, speedup = 0;
    if (std::sscanf(line.c_str(), "%d,%15[^,],%15[^,],%d,%d,%d,%lld,%lf,%lld,%lf,%lf,%lf,%d", &threads, model, layer,
                    &in, &out, &batch, &M, &density, &nnz, &dense_ms, &sparse_ms, &speedup, &predicted) < 12)
      throw std::runtime_error(path + ": not a row: " + line);
    const Layer* L = nullptr;
    for (const Layer& k : kLayers)
      if (!std::strcmp(k.model, model) && !std::strcmp(k.name, layer) && k.in == in && k.out == out) L = &k;
    if (!L) throw std::runtime_error(path + ": unknown layer in " + line);
    rows.push_back({threads, batch, L, M, nnz, density, dense_ms, sparse_ms});
  }
  return rows;
}

void print_header(int threads, const std::string& what) {
  std::printf("\nthreads %d, %s, speedup = dense / sparse\n\n", threads, what.c_str());
  std::printf("| shape | M | density | dense ms | sparse ms | speedup | predicted |\n"
              "|---|---:|---:|---:|---:|---:|:---:|\n");
}

void print_row(const Row& r) {
  const Layer& L = *r.layer;
  std::printf("| %s %s %d->%d | %lld | %.2f | %.3f | %.3f | %.2f | %s |\n", L.model, L.name, L.in, L.out,
              (long long)r.M, r.density, r.dense_ms, r.sparse_ms, r.speedup(),
              kernels::sparse_is_faster(r.density, r.M, L.in, L.out) ? "sparse" : "dense");
  std::fflush(stdout);
}

void write_csv(const std::string& path, const std::vector<Row>& rows) {
  std::ofstream f(path);
  f << "threads,model,layer,in,out,batch,M,density,nnz,dense_ms,sparse_ms,speedup,predicted_sparse\n";
  for (const Row& r : rows) {
    char line[256];
    std::snprintf(line, sizeof line, "%d,%s,%s,%d,%d,%d,%lld,%.2f,%lld,%.4f,%.4f,%.3f,%d\n", r.threads, r.layer->model,
                  r.layer->name, r.layer->in, r.layer->out, r.batch, (long long)r.M, r.density, (long long)r.nnz,
                  r.dense_ms, r.sparse_ms, r.speedup(),
                  int(kernels::sparse_is_faster(r.density, r.M, r.layer->in, r.layer->out)));
    f << line;
  }
}

// Speedup against density: one panel per (threads, batch), one series per layer shape.
void write_svg(const std::string& path, const std::vector<Row>& rows, const std::vector<int>& threads,
               const std::vector<int>& batches) {
  std::vector<Plot> panels;
  for (int t : threads)
    for (int b : batches) {
      Plot p;
      p.title = std::to_string(t) + (t == 1 ? " thread" : " threads") + ", batch " + std::to_string(b);
      p.x.label = "density (nonzero fraction of W)";
      p.y.label = "speedup over dense f32 (oneDNN)";
      p.y.log = true;
      p.y.min = 0.3;
      p.y.max = 10;
      p.xticks = {0, 0.1, 0.2, 0.3, 0.4, 0.5};
      p.lines.push_back({1.0, "dense", false});
      for (const Layer& L : kLayers) {
        PlotSeries s;
        s.name = std::string(L.model) + " " + L.name + " " + std::to_string(L.in) + "->" + std::to_string(L.out);
        s.dashed = std::strcmp(L.model, "tiny") == 0;
        for (const Row& r : rows)
          if (r.threads == t && r.batch == b && r.layer == &L) {
            s.x.push_back(r.density);
            s.y.push_back(r.speedup());
          }
        if (!s.x.empty()) p.series.push_back(s);
      }
      if (!p.series.empty()) panels.push_back(p);
    }
  std::ofstream(path) << render_svg_grid(panels, int(std::min<size_t>(batches.size(), 2)), 520, 400);
}

}  // namespace

int main(int argc, char** argv) {
  std::string threads_arg = "1,2", batches_arg = "1,64", densities_arg = "0.5,0.4,0.3,0.2,0.1,0.05",
              models_arg = "tiny,b16", stat = "median", csv, svg, replot;
  int rounds = 7, tokens = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--threads")
      threads_arg = argv[i + 1];
    else if (a == "--batches")
      batches_arg = argv[i + 1];
    else if (a == "--densities")
      densities_arg = argv[i + 1];
    else if (a == "--models")
      models_arg = argv[i + 1];
    else if (a == "--rounds")
      rounds = std::atoi(argv[i + 1]);
    else if (a == "--tokens")
      tokens = std::atoi(argv[i + 1]);
    else if (a == "--stat")
      stat = argv[i + 1];
    else if (a == "--csv")
      csv = argv[i + 1];
    else if (a == "--svg")
      svg = argv[i + 1];
    else if (a == "--replot")
      replot = argv[i + 1];
    else {
      std::fprintf(stderr,
                   "usage: %s [--threads 1,2] [--batches 1,64] [--densities 0.5,0.3,...] [--models tiny,b16] "
                   "[--tokens N] [--rounds R] [--stat median|min] [--csv FILE] [--svg FILE] | --replot FILE\n",
                   argv[0]);
      return 2;
    }
  }
  if (argc % 2 == 0) {
    std::fprintf(stderr, "%s: a flag without its value\n", argv[0]);
    return 2;
  }
  const auto threads = parse_list<int>(threads_arg), batches = parse_list<int>(batches_arg);
  const auto densities = parse_list<double>(densities_arg);
  const auto models = parse_list<std::string>(models_arg);
  if (rounds < 1 || (stat != "median" && stat != "min") || threads.empty() || batches.empty() ||
      std::any_of(threads.begin(), threads.end(), [](int t) { return t < 1; }) ||
      std::any_of(batches.begin(), batches.end(), [](int b) { return b < 1; }) || tokens < 0 ||
      std::any_of(densities.begin(), densities.end(), [](double d) { return !(d >= 0 && d <= 1); })) {
    std::fprintf(stderr, "--threads, --batches, --rounds >= 1, densities in [0, 1], --stat median or min\n");
    return 2;
  }

  if (!replot.empty()) {
    std::vector<Row> rows;
    try {
      rows = read_csv(replot);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "--replot: %s\n", e.what());
      return 1;
    }
    std::vector<int> ts, bs;  // in the file's order
    for (const Row& r : rows) {
      if (std::find(ts.begin(), ts.end(), r.threads) == ts.end()) ts.push_back(r.threads);
      if (std::find(bs.begin(), bs.end(), r.batch) == bs.end()) bs.push_back(r.batch);
    }
    for (int t : ts) {
      print_header(t, "from " + replot);
      for (const Row& r : rows)
        if (r.threads == t) print_row(r);
    }
    if (!csv.empty()) write_csv(csv, rows);
    if (!svg.empty()) write_svg(svg, rows, ts, bs);
    return 0;
  }

  std::vector<Row> rows;
  double max_diff = 0, max_abs = 0;
  for (int t : threads) {
    set_num_threads(t);
    print_header(t, std::to_string(rounds) + " rounds, " + stat + " ms per call");
    for (int b : batches)
      for (const Layer& L : kLayers) {
        if (std::find(models.begin(), models.end(), L.model) == models.end()) continue;
        for (double d : densities) {
          rows.push_back(measure(L, tokens, t, b, d, rounds, stat == "min", max_diff, max_abs));
          print_row(rows.back());
        }
      }
  }
  std::printf("\nlargest |dense - sparse|: %.2g (largest |dense|: %.2g)\n", max_diff, max_abs);
  if (!csv.empty()) write_csv(csv, rows);
  if (!svg.empty()) write_svg(svg, rows, threads, batches);
  return 0;
}
