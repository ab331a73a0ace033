// Every linear-layer representation a pass makes — f32 as is, bf16, f16,
// round:decimals=2, round:decimals=2,activations=true, a mixed model (round on
// conv_proj through its layers=, bf16 on the head through the bf16 pass's
// layers=), and int (quantize: 8 bits per channel with dynamic inputs; 4 bits
// with zero points per group of 16 on the patch layer and the MLPs; 8-bit
// weights with f32 inputs; 12-bit weights with 10-bit inputs, the exact path;
// 8 bits per tensor with static inputs calibrated on random images) — through
// every consumer: the forward pass and the
// straight-through backward against double references of their definitions
// (repr/linear_repr.h, repr/ste.h), a training step, save/load, clone, the
// cost counts, and the CLI (info, eval, bench, predict, compress) on saved files.
//
// The model: image 16, patch 4, dim 32, depth 2 (17 tokens), so that the
// whole file runs in a few seconds.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <numbers>
#include <ostream>

#include "test_util.h"
#include "vitkit/compress/pass.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/npy.h"
#include "vitkit/core/rng.h"
#include "vitkit/core/threads.h"
#include "vitkit/io/dataset.h"
#include "vitkit/io/model_io.h"
#include "vitkit/io/safetensors.h"
#include "vitkit/kernels/round.h"
#include "vitkit/model/cost.h"
#include "vitkit/model/forward.h"
#include "vitkit/repr/int.h"
#include "vitkit/repr/round.h"
#include "vitkit/train/evaluate.h"
#include "vitkit/train/step.h"

using namespace vitkit;

namespace {

// ---------------------------------------------------------------- variants

using kernels::ScaleGranularity;

// What one layer of a variant must be.
struct Expect {
  std::string kind = "f32";  // the representation's kind()
  int decimals = 0;          // round only
  bool inputs = false;       // round only: inputs rounded too
  // int only (repr/int.h's IntFormat): weight and input bits, scale groups, zero points, static inputs
  int bits = 0, abits = 0;
  ScaleGranularity granularity = ScaleGranularity::Channel;
  int64_t group = 0;
  bool symmetric = true, static_inputs = false;
  double sparsity = 0;  // sparse only: the share of the layer's weights pruned (L1, per layer)
  bool ste() const { return kind != "f32" && kind != "sparse"; }
};

Expect int_layer(int bits, int abits, ScaleGranularity g = ScaleGranularity::Channel, int64_t group = 0,
                 bool symmetric = true, bool static_inputs = false) {
  Expect e{"int"};
  e.bits = bits;
  e.abits = abits;
  e.granularity = g;
  e.group = group;
  e.symmetric = symmetric;
  e.static_inputs = static_inputs;
  return e;
}

// A model variant: the passes applied to the dense model, and what each layer
// becomes; calib > 0: the passes get that many random calibration images.
struct Variant {
  std::string name;
  std::vector<std::string> passes;
  Expect (*expect)(const Linear& l);
  int64_t calib = 0;
};

// For parameterized test names and messages.
void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

Expect sparse_layer(const Linear& l, double s) {
  Expect e{l.block >= 0 ? "sparse" : "f32"};
  if (l.block >= 0) e.sparsity = s;
  return e;
}

// The round pass takes every block's qkv, out_proj, fc1, fc2 (and the layers= ones).
Expect round2_blocks(const Linear& l) { return l.block >= 0 ? Expect{"round", 2, false} : Expect{}; }
Expect round2_blocks_inputs(const Linear& l) { return l.block >= 0 ? Expect{"round", 2, true} : Expect{}; }

const std::vector<Variant>& variants() {
  static const std::vector<Variant> v = {
      {"f32", {}, [](const Linear&) { return Expect{}; }},
      {"bf16", {"bf16"}, [](const Linear&) { return Expect{"bf16"}; }},
      {"f16", {"f16"}, [](const Linear&) { return Expect{"f16"}; }},
      {"round2", {"round:decimals=2"}, round2_blocks},
      {"round2_inputs", {"round:decimals=2,activations=true"}, round2_blocks_inputs},
      {"mixed",
       {"round:decimals=2,layers=conv_proj", "bf16:layers=^heads\\."},
       [](const Linear& l) { return l.kind == LayerKind::Head ? Expect{"bf16"} : Expect{"round", 2, false}; }},
      {"int8", {"quantize:bits=8"}, [](const Linear&) { return int_layer(8, 8); }},
      // Groups of 16 divide the patch layer's 16 inputs and the MLPs' 32 and 64;
      // attention and the head stay f32.
      {"int4_group",
       {"quantize:bits=4,granularity=group,group=16,sym=false,layers=conv_proj|mlp"},
       [](const Linear& l) {
         return l.kind == LayerKind::Patch || l.kind == LayerKind::Fc1 || l.kind == LayerKind::Fc2
                    ? int_layer(4, 8, ScaleGranularity::Group, 16, false)
                    : Expect{};
       }},
      {"int8_weights", {"quantize:bits=8,abits=0"}, [](const Linear&) { return int_layer(8, 0); }},
      {"int12_a10", {"quantize:bits=12,abits=10"}, [](const Linear&) { return int_layer(12, 10); }},
      {"int8_static",
       {"quantize:bits=8,granularity=tensor,sym=false,act=static,calib=percentile:99.99"},
       [](const Linear&) { return int_layer(8, 8, ScaleGranularity::Tensor, 0, false, true); },
       64},
      // The prune pass takes the encoder blocks' layers; 0.3 of them run on
      // the dense GEMM, 0.8 on the sparse kernel (kernels/sparse.h).
      {"sparse30", {"prune:sparsity=0.3"}, [](const Linear& l) { return sparse_layer(l, 0.3); }},
      {"sparse80", {"prune:sparsity=0.8"}, [](const Linear& l) { return sparse_layer(l, 0.8); }},
  };
  return v;
}

ViTConfig config() { return test::small_config(16, 4, 32, 2, 4, 64, 10); }

// The dense f32 model every variant is made from (each call builds the same one).
std::unique_ptr<ViT> dense_model() { return test::random_model(config(), 11); }

std::unique_ptr<ViT> make(const Variant& v) {
  auto m = dense_model();
  const PassContext ctx = v.calib > 0 ? test::random_calibration(m->cfg, v.calib, 12) : PassContext{};
  for (const std::string& p : v.passes) apply_pass(*m, p, ctx);
  return m;
}

// ---------------------------------------------------------------- references

constexpr double kU = 1.0 / 16777216.0;  // f32's unit roundoff, 2^-24

// R: the weight a representation multiplies, from the f32 weight W (out, in)
// (computed here from the definitions, not through the representation; int:
// repr/int.h's formula per scale group, test_util's ref_int_weight).
std::vector<float> ref_weight_values(const Expect& e, const float* W, int out, int in) {
  std::vector<float> r(size_t(in) * size_t(out));
  if (e.kind == "sparse") {  // the round(s n) smallest |w| zero (ties: the lower index first)
    std::vector<int64_t> order(r.size());
    for (size_t i = 0; i < r.size(); ++i) order[i] = int64_t(i), r[i] = W[i];
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return std::fabs(W[a]) < std::fabs(W[b]); });
    const int64_t k = std::llround(e.sparsity * double(r.size()));
    for (int64_t i = 0; i < k; ++i) r[size_t(order[size_t(i)])] = 0.f;
    return r;
  }
  if (e.kind == "int") {
    const test::RefIntWeight q = test::ref_int_weight(W, out, in, e.bits, e.granularity, e.group, e.symmetric);
    for (size_t i = 0; i < r.size(); ++i) r[i] = q.value(int64_t(i));
    return r;
  }
  for (size_t i = 0; i < r.size(); ++i) {
    const float w = W[i];
    r[i] = e.kind == "bf16"    ? bf16_to_float(float_to_bf16(w))
           : e.kind == "f16"   ? half_to_float(float_to_half(w))
           : e.kind == "round" ? kernels::round_decimal(w, e.decimals)
                               : w;
  }
  return r;
}

// T: what the product sees of the inputs X (M, in) of layer l: per element
// (bf16, rounded), per row (int: gemm.h's input quantization, test_util's
// ref_input_row; static inputs with the layer's calibrated scale and zero point
// from its metadata), or X itself.
std::vector<float> ref_inputs(const Expect& e, const Linear& l, const float* X, int64_t M) {
  std::vector<float> t(X, X + M * l.in);
  if (e.kind == "bf16")
    for (float& x : t) x = bf16_to_float(float_to_bf16(x));
  if (e.kind == "round" && e.inputs)
    for (float& x : t) x = kernels::round_decimal(x, e.decimals);
  if (e.kind == "int" && e.abits > 0) {
    const nlohmann::json meta = l.repr->meta();
    const float scale = e.static_inputs ? meta.at("in_scale").get<float>() : 0.f;
    const int32_t zero = e.static_inputs ? meta.at("in_zero").get<int32_t>() : 0;
    for (int64_t m = 0; m < M; ++m) {
      const test::RefRowQuant q = test::ref_input_row(X + m * l.in, l.in, e.abits, e.static_inputs, scale, zero);
      for (int k = 0; k < l.in; ++k) t[size_t(m * l.in + k)] = q.value(k);
    }
  }
  return t;
}

// Whether the straight-through input gradient passes input x of a layer: not
// where a static input range clipped it (code x / s + z outside 0 .. 2^abits - 1).
bool ref_input_passes(const Expect& e, const Linear& l, float x) {
  if (e.kind != "int" || e.abits == 0 || !e.static_inputs) return true;
  const nlohmann::json meta = l.repr->meta();
  const double v = double(x) / meta.at("in_scale").get<float>() + meta.at("in_zero").get<int32_t>();
  return v >= 0 && v <= double((1 << e.abits) - 1);
}

// Wr (out, in) of a layer: R applied to the dense twin's weight.
std::vector<float> ref_weight(const Linear& dense, const Expect& e) {
  std::vector<float> scratch;
  return ref_weight_values(e, dense.repr->plain_weight(scratch), dense.out, dense.in);
}

double ref_act(Activation a, double z) {
  switch (a) {
    case Activation::None: return z;
    case Activation::Relu: return z > 0 ? z : 0;
    case Activation::Gelu: return 0.5 * z * (1 + std::erf(z / std::sqrt(2.0)));
    case Activation::GeluTanh:
      return 0.5 * z * (1 + std::tanh(std::sqrt(2.0 / std::numbers::pi) * (z + 0.044715 * z * z * z)));
  }
  return NAN;
}

std::vector<float> normals(Rng& rng, int64_t n, float scale = 1.f) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = scale * rng.normal();
  return v;
}

// Compares values with their tolerances: the largest |error| and error /
// tolerance seen, the first few failures reported (where() names them), all counted.
struct ErrStats {
  double abs = 0, ratio = 0;
  int64_t bad = 0;
  template <typename Where>
  void check(double got, double want, double tol, const Where& where) {
    const double e = std::fabs(got - want);
    abs = std::max(abs, e);
    ratio = std::max(ratio, e / tol);
    if (!(e <= tol) && bad++ < 3)  // NaN fails too
      ADD_FAILURE() << where() << ": " << got << " vs " << want << " (tolerance " << tol << ")";
  }
};

// A sum of n terms computed in f32 in any order (with or without FMA) is
// within gamma_n * sum|terms| of the exact sum, gamma_n = n u / (1 - n u)
// (Higham, Accuracy and Stability, 3.1); 1.01 n u covers gamma_n here (n u < 1e-5).
double sum_bound(int64_t n, double abs_sum) { return 1.01 * double(n) * kU * abs_sum; }

// The trainable tensors of a representation, in tensors() order (the grads of backward()).
std::vector<ReprTensor> trainable(const LinearRepr& r) {
  std::vector<ReprTensor> v;
  for (ReprTensor& t : r.tensors())
    if (t.trainable) v.push_back(t);
  return v;
}

// The tensor of `role` among r's tensors(), or an undefined one.
Tensor tensor_of(const LinearRepr& r, const std::string& role) {
  for (const ReprTensor& t : r.tensors())
    if (t.role == role) return t.t;
  return Tensor();
}

// Same dtype, number of values and bytes (a file's conv_proj weight is 4-d, the representation's 2-d).
bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.numel() == b.numel() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// An int layer's codes' dtype in files (repr/int.h: 4 bits and fewer two per
// byte as U8, I8 / U8 up to 8 bits, I16 where the codes fit it, else I32) and
// its number of scales.
DType int_code_dtype(const Expect& e) {
  if (e.bits <= 4) return DType::U8;
  if (e.bits <= 8) return e.symmetric ? DType::I8 : DType::U8;
  return e.symmetric || e.bits <= 15 ? DType::I16 : DType::I32;
}
int64_t int_scales(const Expect& e, const Linear& l) {
  return e.granularity == ScaleGranularity::Tensor    ? 1
         : e.granularity == ScaleGranularity::Channel ? l.out
                                                      : int64_t(l.out) * (l.in / e.group);
}

// Bytes of an int layer's codes in a file.
int64_t int_code_bytes(const Expect& e, const Linear& l) {
  if (e.bits <= 4) return int64_t(l.out) * ((l.in + 1) / 2);
  return int64_t(dtype_size(int_code_dtype(e))) * l.in * l.out;
}

// A sparse layer's kept weights: all but round(s n).
int64_t expected_nnz(const Expect& e, const Linear& l) {
  const int64_t n = int64_t(l.in) * l.out;
  return e.kind == "sparse" ? n - std::llround(e.sparsity * double(n)) : n;
}

// Bytes of a layer's weight tensors in a file: the weight (codes) and, for
// int, its F32 scales and I32 zero points; sparse: the bitmap (a bit a weight,
// rows padded to bytes) and the kept values.
int64_t weight_file_bytes(const Expect& e, const Linear& l) {
  const int64_t n = int64_t(l.in) * l.out;
  if (e.kind == "sparse") return int64_t(l.out) * ((l.in + 7) / 8) + 4 * expected_nnz(e, l);
  if (e.kind == "int") return int_code_bytes(e, l) + 4 * int_scales(e, l) * (e.symmetric ? 1 : 2);
  return (e.kind == "bf16" || e.kind == "f16" ? 2 : e.kind == "round" ? 1 : 4) * n;
}

void expect_kind(const Linear& l, const Expect& e) {
  EXPECT_EQ(l.repr->kind(), e.kind) << l.name;
  EXPECT_EQ(l.repr->train_mode(), e.ste() ? TrainMode::Ste : TrainMode::Direct) << l.name;
  if (e.kind == "int") {
    const auto* r = dynamic_cast<const IntLinear*>(l.repr.get());
    ASSERT_NE(r, nullptr) << l.name;
    const IntFormat& f = r->format();
    EXPECT_EQ(f.bits, e.bits) << l.name;
    EXPECT_EQ(f.abits, e.abits) << l.name;
    EXPECT_EQ(f.granularity, e.granularity) << l.name;
    EXPECT_EQ(f.group, e.group) << l.name;
    EXPECT_EQ(f.symmetric, e.symmetric) << l.name;
    EXPECT_EQ(f.static_inputs, e.static_inputs) << l.name;
    // 8 bits and fewer with quantized inputs of 8 bits and fewer: the integer kernels.
    EXPECT_EQ(r->on_integer_kernels(), e.bits <= 8 && e.abits >= 2 && e.abits <= 8) << l.name;
  }
  if (e.kind != "round") return;
  const auto* r = dynamic_cast<const RoundLinear*>(l.repr.get());
  ASSERT_NE(r, nullptr) << l.name;
  EXPECT_EQ(r->decimals(), e.decimals) << l.name;
  EXPECT_EQ(r->inputs(), e.inputs) << l.name;
}

const float* weight_of(const Linear& l, std::vector<float>& scratch) { return l.repr->plain_weight(scratch); }

class ReprTest : public ::testing::TestWithParam<Variant> {};

std::string variant_name(const ::testing::TestParamInfo<Variant>& info) { return info.param.name; }

constexpr Activation kActs[] = {Activation::None, Activation::Gelu, Activation::GeluTanh, Activation::Relu};

}  // namespace

// ---------------------------------------------------------------- 1. forward

// l.repr->forward against Y = act(T(X) Wr^T + b (+ Y0)) in double, for every
// epilogue, with and without accumulation (the kernels add Y0 before the
// activation, as oneDNN's sum-then-eltwise post-ops do).
TEST_P(ReprTest, ForwardMatchesTheDefinition) {
  const Variant& v = GetParam();
  auto m = make(v);
  auto dense = dense_model();
  Rng rng(5);
  const int64_t M = 7;
  ErrStats st;
  for (size_t li = 0; li < m->linears().size(); ++li) {
    const Linear& l = *m->linears()[li];
    const Expect e = v.expect(l);
    expect_kind(l, e);
    const std::vector<float> wr = ref_weight(*dense->linears()[li], e);
    std::vector<float> scratch;
    ASSERT_EQ(std::memcmp(weight_of(l, scratch), wr.data(), sizeof(float) * wr.size()), 0)
        << l.name << ": the representation's weight is not R(w)";
    const float* b = l.repr->bias();
    const std::vector<float> X = normals(rng, M * l.in), Y0 = normals(rng, M * l.out);
    const std::vector<float> T = ref_inputs(e, l, X.data(), M);
    for (Activation act : kActs)
      for (bool acc : {false, true}) {
        std::vector<float> Y = Y0;
        l.repr->forward(X.data(), Y.data(), M, act, acc);
        for (int64_t i = 0; i < M; ++i)
          for (int j = 0; j < l.out; ++j) {
            double z = acc ? Y0[size_t(i * l.out + j)] : 0.0, s = std::fabs(z);
            if (b) z += b[j], s += std::fabs(b[j]);
            for (int k = 0; k < l.in; ++k) {
              const double t = double(T[size_t(i * l.in + k)]) * wr[size_t(j) * l.in + k];
              z += t;
              s += std::fabs(t);
            }
            // The sum's rounding (in + 2 terms: the bias and Y0), through an
            // activation whose slope is at most 1.13 (GELU; 1 for ReLU): 2x
            // covers it. The activations are f32 approximations (oneDNN's
            // eltwise: a few ulps); 2e-7 (|y| + 1) is about 3 ulps of y plus
            // 2e-7 absolute near 0.
            const double want = ref_act(act, z);
            double tol = 2 * sum_bound(l.in + 2, s);
            if (act != Activation::None) tol += 2e-7 * (std::fabs(want) + 1);
            st.check(Y[size_t(i * l.out + j)], want, tol, [&] {
              return cat(l.name, " ", to_string(act), acc ? " accumulate" : "", " Y[", i, ",", j, "]");
            });
          }
      }
  }
  EXPECT_EQ(st.bad, 0) << "values outside their tolerance";
  std::printf("%s forward: max |error| %.3g, max error/tolerance %.3f\n", v.name.c_str(), st.abs, st.ratio);
}

// ---------------------------------------------------------------- 2. backward

// After begin_training, l.repr->backward against the straight-through
// formulas of repr/ste.h in double (for dense layers: the ordinary linear
// gradient): dX = dY Wr (+ dX0), dW += dY^T T(X), db += column sums of dY;
// int layers with static inputs pass no gradient to the inputs their range clipped.
TEST_P(ReprTest, BackwardMatchesTheStraightThroughFormulas) {
  const Variant& v = GetParam();
  auto m = make(v);
  auto dense = dense_model();
  // Before begin_training a straight-through layer has no latent weight to take a gradient.
  for (const Linear* l : m->linears())
    if (v.expect(*l).ste()) {
      std::vector<float> dY(size_t(l->out)), X(size_t(l->in)), g0(size_t(l->in) * l->out), g1(size_t(l->out));
      float* grads[2] = {g0.data(), g1.data()};
      EXPECT_THROW(l->repr->backward(dY.data(), X.data(), nullptr, 1, false, grads), Error) << l->name;
      break;
    }
  begin_training(*m);
  Rng rng(6);
  const int64_t M = 6;
  ErrStats sx, sw, sb;
  for (size_t li = 0; li < m->linears().size(); ++li) {
    const Linear& l = *m->linears()[li];
    const Expect e = v.expect(l);
    const std::vector<float> wr = ref_weight(*dense->linears()[li], e);
    const std::vector<ReprTensor> tr = trainable(*l.repr);
    ASSERT_EQ(tr.size(), l.has_bias ? 2u : 1u) << l.name;
    const bool sparse = e.kind == "sparse";
    EXPECT_EQ(tr[0].role, e.ste() ? "weight_latent" : sparse ? "values" : "weight") << l.name;
    if (l.has_bias) { EXPECT_EQ(tr[1].role, "bias") << l.name; }
    // Where each weight's gradient goes: all of W, or a sparse layer's kept
    // weights (W's nonzeros) in row-major order; -1: pruned, no gradient.
    std::vector<int64_t> gidx(wr.size());
    std::vector<float> kept;
    for (size_t i = 0; i < wr.size(); ++i) {
      gidx[i] = !sparse || wr[i] != 0.f ? int64_t(kept.size()) : -1;
      if (gidx[i] >= 0) kept.push_back(wr[i]);
    }
    // The latent weight (a sparse layer's values) starts as the representation's weight.
    ASSERT_EQ(tr[0].t.numel(), int64_t(kept.size())) << l.name;
    ASSERT_EQ(std::memcmp(tr[0].t.f32(), kept.data(), sizeof(float) * kept.size()), 0) << l.name;
    const std::vector<float> X = normals(rng, M * l.in), dY = normals(rng, M * l.out), dX0 = normals(rng, M * l.in);
    const std::vector<float> gw0 = normals(rng, int64_t(kept.size())), gb0 = normals(rng, l.out);
    const std::vector<float> T = ref_inputs(e, l, X.data(), M);
    for (bool acc : {false, true}) {
      std::vector<float> dX = dX0, gw = gw0, gb = gb0;  // gradients accumulate: they start non-zero
      float* grads[2] = {gw.data(), gb.data()};
      l.repr->backward(dY.data(), X.data(), dX.data(), M, acc, grads);
      for (int64_t i = 0; i < M; ++i)
        for (int k = 0; k < l.in; ++k) {  // dX = dY Wr: sums of out terms (0 where the input was clipped)
          double want = acc ? dX0[size_t(i * l.in + k)] : 0.0, s = std::fabs(want);
          const bool passes = ref_input_passes(e, l, X[size_t(i * l.in + k)]);
          for (int j = 0; passes && j < l.out; ++j) {
            const double t = double(dY[size_t(i * l.out + j)]) * wr[size_t(j) * l.in + k];
            want += t;
            s += std::fabs(t);
          }
          sx.check(dX[size_t(i * l.in + k)], want, 2 * sum_bound(l.out + 1, s),
                   [&] { return cat(l.name, acc ? " accumulate" : "", " dX[", i, ",", k, "]"); });
        }
      for (int j = 0; j < l.out; ++j) {
        for (int k = 0; k < l.in; ++k) {  // dW += dY^T T(X): sums of M terms
          const int64_t g = gidx[size_t(j) * l.in + k];
          if (g < 0) continue;
          double want = gw0[size_t(g)], s = std::fabs(want);
          for (int64_t i = 0; i < M; ++i) {
            const double t = double(dY[size_t(i * l.out + j)]) * T[size_t(i * l.in + k)];
            want += t;
            s += std::fabs(t);
          }
          sw.check(gw[size_t(g)], want, 2 * sum_bound(M + 1, s),
                   [&] { return cat(l.name, " d", tr[0].role, "[", j, ",", k, "]"); });
        }
        if (!l.has_bias) continue;
        double want = gb0[size_t(j)], s = std::fabs(want);
        for (int64_t i = 0; i < M; ++i) want += dY[size_t(i * l.out + j)], s += std::fabs(dY[size_t(i * l.out + j)]);
        sb.check(gb[size_t(j)], want, 2 * sum_bound(M + 1, s), [&] { return cat(l.name, " dbias[", j, "]"); });
      }
    }
  }
  EXPECT_EQ(sx.bad + sw.bad + sb.bad, 0) << "gradients outside their tolerance";
  std::printf("%s backward: max |error| dX %.3g, dW %.3g, db %.3g; max error/tolerance %.3f\n", v.name.c_str(),
              sx.abs, sw.abs, sb.abs, std::max({sx.ratio, sw.ratio, sb.ratio}));
}

// Dense f32 layers: backward against central differences of
// L = sum(dY * forward(X, W, b)) in double. L is linear in each of X, W and b,
// so the difference quotient is exact but for the f32 rounding of Y, which a
// wide step (h = 0.25) divides down to ~1e-5 relative.
TEST(ReprF32, BackwardAgreesWithFiniteDifferences) {
  auto m = dense_model();
  begin_training(*m);
  Rng rng(8);
  const int64_t M = 5;
  const double h = 0.25;
  double worst = 0;
  for (Linear* lp : m->linears()) {
    Linear& l = *lp;
    std::vector<float> X = normals(rng, M * l.in);
    const std::vector<float> dY = normals(rng, M * l.out);
    std::vector<float> dX(X.size()), gw(size_t(l.in) * l.out, 0.f), gb(size_t(l.out), 0.f);
    float* grads[2] = {gw.data(), gb.data()};
    l.repr->backward(dY.data(), X.data(), dX.data(), M, false, grads);
    auto loss = [&] {
      std::vector<float> Y(size_t(M * l.out));
      l.repr->forward(X.data(), Y.data(), M, Activation::None, false);
      double s = 0;
      for (size_t i = 0; i < Y.size(); ++i) s += double(dY[i]) * Y[i];
      return s;
    };
    // d L / d v at *v by the central difference, v restored after.
    auto fd = [&](float* v) {
      const float v0 = *v;
      *v = float(v0 + h);
      const double up = loss();
      *v = float(v0 - h);
      const double down = loss();
      *v = v0;
      return (up - down) / (2 * h);
    };
    auto check = [&](const char* what, float* v, int64_t n, const float* g) {
      for (int t = 0; t < 6; ++t) {
        const int64_t i = int64_t(rng.below(uint64_t(n)));
        const double want = fd(v + i), err = std::fabs(g[i] - want) / std::max(1.0, std::fabs(want));
        worst = std::max(worst, err);
        EXPECT_LE(err, 1e-3) << l.name << " " << what << "[" << i << "]: " << g[i] << " vs " << want;
      }
    };
    check("dX", X.data(), int64_t(X.size()), dX.data());
    check("dW", m->W(l), int64_t(l.in) * l.out, gw.data());
    if (l.has_bias) check("db", m->B(l), l.out, gb.data());
  }
  std::printf("f32 backward vs finite differences: max relative error %.3g\n", worst);
}

// ---------------------------------------------------------------- 3. training

// One TrainStep on m (variant v) changes the latent weights; each layer's
// weight is then exactly R(latent); the parameter table lists the latent
// weights while training and not after; the trained model saved (to files
// PREFIX.*) and loaded runs bit-identically. `trained`: its logits on fixed images.
void train_and_check(const Variant& v, ViT& m, const std::string& prefix, Tensor& trained) {
  const ViTConfig c = m.cfg;
  const std::vector<Linear*> ls = m.linears();
  std::vector<std::vector<float>> w_before;
  std::vector<float> scratch;
  for (const Linear* l : ls) {
    const float* w = weight_of(*l, scratch);
    w_before.emplace_back(w, w + int64_t(l->in) * l->out);
  }
  TrainStep step(m, AdamWConfig{});
  // While training: the latent weight is a trainable parameter; a rounded
  // weight is listed frozen beside it; typed (bf16, f16) weights are not parameters.
  auto expect_table = [&](bool training) {
    for (const Linear* l : ls) {
      const Expect e = v.expect(*l);
      const int lat = m.params.find(l->tensor_name("weight_latent"));
      const int w = m.params.find(l->weight_name);
      if (!e.ste()) {  // the weight (a sparse layer's values) is the parameter
        EXPECT_EQ(lat, -1) << l->name;
        const int p = e.kind == "sparse" ? m.params.find(l->tensor_name("values")) : w;
        ASSERT_GE(p, 0) << l->name;
        EXPECT_TRUE(m.params.info(p).trainable) << l->name;
        continue;
      }
      if (training) {
        ASSERT_GE(lat, 0) << l->name << ": no latent weight while training";
        EXPECT_TRUE(m.params.info(lat).trainable) << l->name;
        EXPECT_EQ(m.params.info(lat).shape, (Shape{l->out, l->in})) << l->name;
      } else {
        EXPECT_EQ(lat, -1) << l->name << ": the latent weight outlived training";
      }
      if (e.kind == "round") {
        ASSERT_GE(w, 0) << l->name;
        EXPECT_FALSE(m.params.info(w).trainable) << l->name;
      } else {
        EXPECT_EQ(w, -1) << l->name << ": a typed weight is not an f32 parameter";
      }
      const int b = m.params.find(l->bias_name);
      if (l->has_bias) { EXPECT_TRUE(b >= 0 && m.params.info(b).trainable) << l->name; }
    }
  };
  expect_table(true);
  std::vector<std::vector<float>> latent_before;
  for (const Linear* l : ls) {
    const Tensor t = v.expect(*l).ste() ? tensor_of(*l->repr, "weight_latent") : Tensor();
    latent_before.push_back(t.defined() ? std::vector<float>(t.f32(), t.f32() + t.numel()) : std::vector<float>());
  }
  const Tensor images = test::random_images(c, 8, 21);
  std::vector<int> labels(8);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = int(i % size_t(c.classes));
  StepOptions o;
  o.lr = 0.01f;  // Adam's first step moves each weight by about lr: across the 0.01 grid
  const StepResult r = step.run(images.f32(), labels.data(), 8, o);
  EXPECT_TRUE(std::isfinite(r.loss));
  for (size_t li = 0; li < ls.size(); ++li) {
    const Linear& l = *ls[li];
    const Expect e = v.expect(l);
    const int64_t n = int64_t(l.in) * l.out;
    const float* w = weight_of(l, scratch);
    int64_t changed = 0;
    for (int64_t i = 0; i < n; ++i) changed += w[i] != w_before[li][size_t(i)];
    EXPECT_GT(changed, 0) << l.name << ": the step did not change the weight the layer runs";
    if (e.kind == "sparse") {  // pruned weights stay exactly zero
      int64_t revived = 0;
      for (int64_t i = 0; i < n; ++i) revived += w_before[li][size_t(i)] == 0.f && w[i] != 0.f;
      EXPECT_EQ(revived, 0) << l.name << ": pruned weights became nonzero";
    }
    if (!e.ste()) continue;
    const Tensor lat = tensor_of(*l.repr, "weight_latent");
    ASSERT_TRUE(lat.defined()) << l.name;
    int64_t lat_changed = 0, off = 0;
    const std::vector<float> r_latent = ref_weight_values(e, lat.f32(), l.out, l.in);
    for (int64_t i = 0; i < n; ++i) {
      lat_changed += lat.f32()[i] != latent_before[li][size_t(i)];
      const float want = r_latent[size_t(i)];
      // R(latent) exactly (bf16/f16: the conversion of the latent; round: on the
      // 10^-d grid; int: the latent quantized again, scales included).
      off += std::memcmp(&w[i], &want, sizeof(float)) != 0 && !(w[i] == 0.f && want == 0.f);
      if (e.kind == "round") off += kernels::round_decimal(w[i], e.decimals) != w[i];
    }
    EXPECT_GT(lat_changed, 0) << l.name << ": the latent weight did not move";
    EXPECT_EQ(off, 0) << l.name << ": " << off << " weights are not R(latent)";
  }
  const Tensor x = test::random_images(c, 3, 22);
  trained = vit_predict(m, x);
  save_model(m, prefix + ".training.safetensors");  // mid-training: the model file has no latent weights
  {
    SafetensorsReader rd(prefix + ".training.safetensors");
    for (const StTensor& t : rd.tensors()) EXPECT_EQ(t.name.find("weight_latent"), std::string::npos) << t.name;
  }
  EXPECT_TRUE(test::bit_equal(vit_predict(*load_model(prefix + ".training.safetensors"), x), trained));
  end_training(m);
  expect_table(false);
  for (const Linear* l : ls) EXPECT_FALSE(tensor_of(*l->repr, "weight_latent").defined()) << l->name;
  EXPECT_TRUE(test::bit_equal(vit_predict(m, x), trained)) << "end_training changed what the model computes";
  save_model(m, prefix + ".trained.safetensors");
  EXPECT_TRUE(test::bit_equal(vit_predict(*load_model(prefix + ".trained.safetensors"), x), trained));
}

// The model as the passes made it, and the same model loaded from its file
// (latent weights made from the loaded weights), train alike.
TEST_P(ReprTest, TrainingTrainsWhatTheModelRuns) {
  const Variant& v = GetParam();
  const std::string dir = test::temp_dir();
  Tensor made_logits, loaded_logits;
  {
    SCOPED_TRACE("made by the passes");
    auto m = make(v);
    train_and_check(v, *m, dir + "/made", made_logits);
  }
  save_model(*make(v), dir + "/file.safetensors");
  {
    SCOPED_TRACE("loaded from a file");
    auto m = load_model(dir + "/file.safetensors");
    train_and_check(v, *m, dir + "/loaded", loaded_logits);
  }
  EXPECT_TRUE(test::bit_equal(made_logits, loaded_logits)) << "a loaded model trained differently";
}

// ---------------------------------------------------------------- 4. save / load

// The file's dtype for a layer's weight, from its values (independently of the representation).
DType expected_weight_dtype(const Expect& e, const float* wr, int64_t n) {
  if (e.kind == "int") return int_code_dtype(e);
  if (e.kind == "bf16") return DType::BF16;
  if (e.kind == "f16") return DType::F16;
  if (e.kind != "round") return DType::F32;
  double big = 0;
  for (int64_t i = 0; i < n; ++i) big = std::max(big, std::fabs(std::round(double(wr[i]) * std::pow(10.0, e.decimals))));
  return big <= 127 ? DType::I8 : big <= 32767 ? DType::I16 : big <= 2147483647.0 ? DType::I32 : DType::F32;
}

uint64_t header_bytes(const std::string& path) {
  const std::vector<uint8_t> b = read_file(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | b.at(size_t(i));
  return 8 + n;
}

TEST_P(ReprTest, SaveLoadRoundTripsExactly) {
  const Variant& v = GetParam();
  auto m = make(v);
  auto dense = dense_model();
  const std::string dir = test::temp_dir(), path = dir + "/m.safetensors", dense_path = dir + "/dense.safetensors";
  save_model(*m, path);
  save_model(*dense, dense_path);
  auto loaded = load_model(path);
  const Tensor x = test::random_images(m->cfg, 4, 30);
  EXPECT_TRUE(test::bit_equal(vit_predict(*loaded, x), vit_predict(*m, x)));
  SafetensorsReader rd(path);
  int64_t weight_bytes = 0, dense_weight_bytes = 0;
  int compressed = 0;
  for (size_t li = 0; li < m->linears().size(); ++li) {
    const Linear& l = *m->linears()[li];
    const Linear& back = *loaded->linears()[li];
    const Expect e = v.expect(l);
    expect_kind(back, e);
    compressed += e.kind != "f32";
    const std::vector<ReprTensor> st = l.repr->stored(), st_back = back.repr->stored();
    ASSERT_EQ(st.size(), st_back.size()) << l.name;
    for (size_t i = 0; i < st.size(); ++i) {
      const std::string name = l.tensor_name(st[i].role);
      const StTensor* ft = rd.find(name);
      ASSERT_NE(ft, nullptr) << name;
      EXPECT_TRUE(same_bytes(rd.read(*ft), st[i].t)) << name << ": the file's tensor is not what the layer stores";
      EXPECT_TRUE(same_bytes(st_back[i].t, st[i].t)) << name << ": the loaded layer stores other bytes";
    }
    if (e.kind == "sparse") {  // a bitmap and the kept values instead of a weight
      EXPECT_EQ(rd.find(l.weight_name), nullptr) << l.name;
      const StTensor* mk = rd.find(l.tensor_name("mask"));
      const StTensor* vals = rd.find(l.tensor_name("values"));
      ASSERT_TRUE(mk && vals) << l.name;
      EXPECT_EQ(mk->dtype, DType::U8) << l.name;
      EXPECT_EQ(mk->shape, (Shape{l.out, (l.in + 7) / 8})) << l.name;
      EXPECT_EQ(vals->dtype, DType::F32) << l.name;
      EXPECT_EQ(vals->shape, (Shape{expected_nnz(e, l)})) << l.name;
      weight_bytes += int64_t(mk->end - mk->begin) + int64_t(vals->end - vals->begin);
      EXPECT_EQ(int64_t(mk->end - mk->begin) + int64_t(vals->end - vals->begin), weight_file_bytes(e, l)) << l.name;
      dense_weight_bytes += 4 * int64_t(l.in) * l.out;
      continue;
    }
    const StTensor* w = rd.find(l.weight_name);
    ASSERT_NE(w, nullptr);
    const std::vector<float> wr = ref_weight(*dense->linears()[li], e);
    EXPECT_EQ(dtype_name(w->dtype), std::string(dtype_name(expected_weight_dtype(e, wr.data(), int64_t(wr.size())))))
        << l.name;
    if (e.kind == "round") {  // these weights are N(0, 0.2): |w| < 1.27, codes in a byte
      float big = 0;
      for (float x : wr) big = std::max(big, std::fabs(x));
      EXPECT_LT(big, 1.27f);
      EXPECT_EQ(w->dtype, DType::I8) << l.name;
    }
    if (l.has_bias) { EXPECT_EQ(rd.find(l.bias_name)->dtype, DType::F32) << l.name; }
    weight_bytes += int64_t(w->end - w->begin);
    dense_weight_bytes += 4 * int64_t(l.in) * l.out;
    // bf16/f16 half the bytes of f32, round at 2 decimals a quarter, int its codes' width
    // (4 bits: two per byte).
    const int64_t per = e.kind == "bf16" || e.kind == "f16" ? 2 : e.kind == "round" ? 1 : 4;
    EXPECT_EQ(int64_t(w->end - w->begin), e.kind == "int" ? int_code_bytes(e, l) : per * l.in * l.out) << l.name;
    if (e.kind == "int") {  // the scales (F32) and zero points (I32) beside the codes
      const StTensor* sc = rd.find(l.tensor_name("weight_scale"));
      ASSERT_NE(sc, nullptr) << l.name;
      EXPECT_EQ(sc->dtype, DType::F32) << l.name;
      EXPECT_EQ(sc->shape, (Shape{int_scales(e, l)})) << l.name;
      const StTensor* zp = rd.find(l.tensor_name("weight_zero"));
      EXPECT_EQ(zp != nullptr, !e.symmetric) << l.name;
      if (zp) { EXPECT_EQ(zp->dtype, DType::I32) << l.name; }
      weight_bytes += int64_t(sc->end - sc->begin) + (zp ? int64_t(zp->end - zp->begin) : 0);
    }
  }
  // The file holds exactly what the cost model counts (plus its header), and less than the f32 file.
  EXPECT_EQ(file_size(path), header_bytes(path) + uint64_t(model_cost(*m).bytes));
  EXPECT_EQ(file_size(dense_path), header_bytes(dense_path) + uint64_t(model_cost(*dense).bytes));
  if (compressed) { EXPECT_LT(file_size(path), file_size(dense_path)); }
  std::printf("%s file: %llu bytes (f32: %llu, %.3f of it); linear weights %lld bytes (%.3f of f32)\n", v.name.c_str(),
              (unsigned long long)file_size(path), (unsigned long long)file_size(dense_path),
              double(file_size(path)) / double(file_size(dense_path)), (long long)weight_bytes,
              double(weight_bytes) / double(dense_weight_bytes));
  // vitkit.layers names each compressed layer (with its meta), and only those.
  const auto md = rd.metadata();
  if (!compressed) {
    EXPECT_EQ(md.count(kLayersKey), 0u);
    return;
  }
  ASSERT_EQ(md.count(kLayersKey), 1u);
  const nlohmann::json layers = nlohmann::json::parse(md.at(kLayersKey));
  EXPECT_EQ(int(layers.size()), compressed);
  for (const Linear* l : m->linears()) {
    const Expect e = v.expect(*l);
    if (e.kind == "f32") {
      EXPECT_FALSE(layers.contains(l->name)) << l->name;
      continue;
    }
    ASSERT_TRUE(layers.contains(l->name)) << l->name;
    EXPECT_EQ(layers[l->name]["repr"], e.kind) << l->name;
    if (e.kind == "round") {
      EXPECT_EQ(layers[l->name]["decimals"], e.decimals) << l->name;
      EXPECT_EQ(layers[l->name]["inputs"], e.inputs) << l->name;
    }
    if (e.kind == "int") {
      const nlohmann::json& j = layers[l->name];
      EXPECT_EQ(j["bits"], e.bits) << l->name;
      EXPECT_EQ(j["abits"], e.abits) << l->name;
      EXPECT_EQ(j["symmetric"], e.symmetric) << l->name;
      EXPECT_EQ(j["inputs"], e.abits == 0 ? "f32" : e.static_inputs ? "static" : "dynamic") << l->name;
    }
  }
  // Written again from the loaded model: the same file contents.
  save_model(*loaded, dir + "/again.safetensors");
  EXPECT_EQ(read_file(dir + "/again.safetensors"), read_file(path));
}

// Round's codes go to the smallest integer dtype that holds them: at 2
// decimals |w| <= 1.27 in I8, up to 327.67 in I16, then I32, and beyond int32
// (|w| > 21474836.47) the f32 grid values themselves.
TEST(ReprRound, CodesTakeTheSmallestIntegerType) {
  const std::string dir = test::temp_dir();
  const struct {
    float w;
    DType dtype;
  } cases[] = {{1.27f, DType::I8},     {-1.27f, DType::I8},     {1.28f, DType::I16},
               {327.67f, DType::I16}, {327.68f, DType::I32}, {3e7f, DType::F32}};
  for (const auto& cs : cases) {
    auto m = dense_model();
    Linear& fc1 = m->blocks[0].fc1;
    m->W(fc1)[5] = cs.w;
    apply_pass(*m, "round:decimals=2");
    const std::string path = dir + "/r.safetensors";
    save_model(*m, path);
    SafetensorsReader rd(path);
    EXPECT_EQ(dtype_name(rd.find(fc1.weight_name)->dtype), std::string(dtype_name(cs.dtype))) << cs.w;
    EXPECT_EQ(rd.find(m->blocks[0].fc2.weight_name)->dtype, DType::I8) << "the other layers keep bytes";
    auto back = load_model(path);
    std::vector<float> scratch;
    EXPECT_EQ(weight_of(back->blocks[0].fc1, scratch)[5], kernels::round_decimal(cs.w, 2)) << cs.w;
    const Tensor x = test::random_images(m->cfg, 2, 31);
    EXPECT_TRUE(test::bit_equal(vit_predict(*back, x), vit_predict(*m, x))) << cs.w;
  }
}

namespace {

// Writes m as save_model does after `edit` changed the tensors or metadata.
void write_edited(const ViT& m, const std::string& path, const std::function<void(FileContents&)>& edit) {
  FileContents fc = model_file_contents(m, false);
  edit(fc);
  std::vector<StEntry> entries;
  for (auto& [name, t] : fc.tensors) entries.push_back({name, t.dtype(), t.shape(), t.raw()});
  write_safetensors(path, entries, fc.metadata);
}

Tensor& file_tensor(FileContents& fc, const std::string& name) {
  for (auto& [n, t] : fc.tensors)
    if (n == name) return t;
  throw Error("no tensor " + name);
}

void edit_layers(FileContents& fc, const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json j = nlohmann::json::parse(fc.metadata.at(kLayersKey));
  edit(j);
  fc.metadata[kLayersKey] = j.dump();
}

// load_model(path) throws Error whose message names the file and each of parts.
void expect_load_error(const std::string& path, const std::vector<std::string>& parts, const std::string& what) {
  try {
    load_model(path);
    ADD_FAILURE() << what << ": loaded";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << what << ": " << msg;
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << what << ": " << p << " in " << msg;
  }
}

}  // namespace

TEST(ReprFiles, BadLayersAndTensorsAreErrorsNamingTheFile) {
  const std::string dir = test::temp_dir(), path = dir + "/bad.safetensors";
  auto bf16 = make(variants()[1]);
  auto f16 = make(variants()[2]);
  auto rounded = make(variants()[3]);
  const Linear& fc1 = rounded->blocks[0].fc1;  // the same names in every variant
  const std::string layer = fc1.name, weight = fc1.weight_name;

  write_edited(*bf16, path, [&](FileContents& fc) { edit_layers(fc, [&](auto& j) { j[layer]["repr"] = "int3"; }); });
  expect_load_error(path, {layer, "int3"}, "unknown representation");

  write_edited(*bf16, path, [&](FileContents& fc) {
    edit_layers(fc, [&](auto& j) { j["encoder.layers.encoder_layer_7.mlp.0"] = {{"repr", "bf16"}}; });
  });
  expect_load_error(path, {"encoder.layers.encoder_layer_7.mlp.0"}, "a layer the model does not have");

  write_edited(*rounded, path, [&](FileContents& fc) { edit_layers(fc, [&](auto& j) { j[layer]["decimals"] = 99; }); });
  expect_load_error(path, {layer, "decimals", "99"}, "decimals 99");

  write_edited(*rounded, path, [&](FileContents& fc) { edit_layers(fc, [&](auto& j) { j[layer].erase("inputs"); }); });
  expect_load_error(path, {layer, "inputs"}, "no inputs flag");

  // The unrounded weight as f32 (a dtype round accepts: its grid values beyond int32).
  auto dense = dense_model();
  write_edited(*rounded, path, [&](FileContents& fc) { file_tensor(fc, weight) = dense->blocks[0].fc1.repr->tensors()[0].t; });
  expect_load_error(path, {layer, "grid"}, "a weight off the grid");

  // Wrong dtypes: each loader names the tensor and the dtype it needs.
  write_edited(*bf16, path, [&](FileContents& fc) { file_tensor(fc, weight) = file_tensor(fc, weight).to(DType::F16); });
  expect_load_error(path, {weight, "F16", "BF16"}, "bf16 weight stored as F16");
  write_edited(*f16, path, [&](FileContents& fc) { file_tensor(fc, weight) = file_tensor(fc, weight).to(DType::BF16); });
  expect_load_error(path, {weight, "BF16", "F16"}, "f16 weight stored as BF16");
  write_edited(*rounded, path, [&](FileContents& fc) { file_tensor(fc, weight) = file_tensor(fc, weight).to(DType::F16); });
  expect_load_error(path, {weight, "F16", "I8"}, "round codes stored as F16");

  // A compressed layer's weight missing.
  write_edited(*bf16, path, [&](FileContents& fc) {
    fc.tensors.erase(std::find_if(fc.tensors.begin(), fc.tensors.end(), [&](auto& p) { return p.first == weight; }));
  });
  expect_load_error(path, {weight, "missing"}, "a missing weight");
}

// ---------------------------------------------------------------- 5. clone

TEST_P(ReprTest, CloneIsIdenticalAndIndependent) {
  const Variant& v = GetParam();
  auto m = make(v);
  const Tensor x = test::random_images(m->cfg, 3, 40);
  const Tensor logits = vit_predict(*m, x);
  auto c = m->clone();
  EXPECT_TRUE(test::bit_equal(vit_predict(*c, x), logits));
  std::vector<std::vector<Tensor>> before;  // copies of the original's tensors
  for (const Linear* l : m->linears()) {
    before.emplace_back();
    for (const ReprTensor& t : l->repr->tensors()) before.back().push_back(t.t.clone());
  }
  // Every tensor of the clone zeroed: its layers and its other parameters (a
  // sparse layer's positions excepted: zeroed they describe no matrix).
  for (Linear* l : c->linears())
    for (ReprTensor& t : l->repr->tensors())
      if (l->repr->kind() != "sparse" || t.t.dtype() != DType::I32) std::memset(t.t.raw(), 0, t.t.nbytes());
  for (int i = 0; i < c->params.size(); ++i) std::memset(c->params.ptr(i), 0, sizeof(float) * c->params.info(i).numel);
  EXPECT_FALSE(test::bit_equal(vit_predict(*c, x), logits)) << "the clone's tensors were not its own";
  EXPECT_TRUE(test::bit_equal(vit_predict(*m, x), logits)) << "changing the clone changed the original";
  for (size_t li = 0; li < m->linears().size(); ++li) {
    const std::vector<ReprTensor> now = m->linears()[li]->repr->tensors();
    ASSERT_EQ(now.size(), before[li].size());
    for (size_t i = 0; i < now.size(); ++i) EXPECT_TRUE(test::bit_equal(now[i].t, before[li][i])) << m->linears()[li]->name;
  }
  // While training the latent weights go with the copy, in their own storage.
  begin_training(*m);
  auto t = m->clone();
  for (size_t li = 0; li < m->linears().size(); ++li) {
    const Linear& l = *m->linears()[li];
    if (!v.expect(l).ste()) continue;
    Tensor a = tensor_of(*l.repr, "weight_latent"), b = tensor_of(*t->linears()[li]->repr, "weight_latent");
    ASSERT_TRUE(a.defined() && b.defined()) << l.name;
    EXPECT_TRUE(test::bit_equal(a, b)) << l.name;
    EXPECT_NE(a.raw(), b.raw()) << l.name;
    EXPECT_GE(t->params.find(l.tensor_name("weight_latent")), 0) << l.name;
  }
}

// ---------------------------------------------------------------- 6. counts

TEST_P(ReprTest, CostsCountTheRepresentation) {
  const Variant& v = GetParam();
  auto m = make(v);
  const ViTConfig c = m->cfg;
  const std::vector<LayerCost> costs = layer_costs(*m);
  std::vector<const LayerCost*> lin;  // the linear layers' rows, in forward order
  for (const LayerCost& lc : costs)
    if (!lc.repr.empty()) lin.push_back(&lc);
  ASSERT_EQ(lin.size(), m->linears().size());
  int64_t bytes = 0, params = 0;
  for (size_t li = 0; li < lin.size(); ++li) {
    const Linear& l = *m->linears()[li];
    const Expect e = v.expect(l);
    const int64_t rows = l.kind == LayerKind::Patch ? c.patches() : l.kind == LayerKind::Head ? 1 : c.tokens();
    EXPECT_EQ(lin[li]->repr, e.kind) << l.name;
    EXPECT_EQ(lin[li]->kind, to_string(l.kind)) << l.name;
    // A sparse layer counts its kept weights only, and the multiplications by them.
    EXPECT_EQ(lin[li]->params, expected_nnz(e, l) + (l.has_bias ? l.out : 0)) << l.name;
    EXPECT_EQ(lin[li]->bytes, weight_file_bytes(e, l) + (l.has_bias ? 4 * l.out : 0)) << l.name;
    EXPECT_EQ(lin[li]->bytes, l.repr->file_bytes()) << l.name;
    EXPECT_EQ(lin[li]->macs, rows * expected_nnz(e, l)) << l.name;
    bytes += lin[li]->bytes;
    params += lin[li]->params;
  }
  // Class token, position embedding, 2 norms per block and the final one (f32).
  const int64_t other = c.dim + int64_t(c.tokens()) * c.dim + 4 * c.dim * c.depth + 2 * c.dim;
  const ModelCost mc = model_cost(*m);
  EXPECT_EQ(mc.other_params, other);
  EXPECT_EQ(mc.params, params + other);
  EXPECT_EQ(mc.bytes, bytes + 4 * other);
  // vitkit info reports the same, and each layer's representation.
  const std::string path = test::temp_dir() + "/m.safetensors";
  save_model(*m, path);
  test::CliResult r = test::run_cli("info " + path + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = test::parse_json(r);
  EXPECT_EQ(j["parameters"], mc.params);
  EXPECT_EQ(j["bytes"], mc.bytes);
  EXPECT_EQ(j["file_bytes"], file_size(path));
  EXPECT_EQ(j["macs"], mc.macs);
  ASSERT_EQ(j["layers"].size(), costs.size());
  for (size_t i = 0; i < costs.size(); ++i) {
    const nlohmann::json& e = j["layers"][i];
    EXPECT_EQ(e["name"], costs[i].name);
    EXPECT_EQ(e["bytes"], costs[i].bytes) << costs[i].name;
    EXPECT_EQ(e["params"], costs[i].params) << costs[i].name;
    EXPECT_EQ(e["macs"], costs[i].macs) << costs[i].name;
    EXPECT_EQ(e.value("repr", ""), costs[i].repr) << costs[i].name;
  }
  for (const Linear* l : m->linears()) {
    const Expect e = v.expect(*l);
    ASSERT_TRUE(j["representations"].contains(l->name)) << l->name;
    EXPECT_EQ(j["representations"][l->name]["repr"], e.kind) << l->name;
    EXPECT_EQ(j["representations"][l->name]["train"], e.ste() ? "ste" : "direct") << l->name;
  }
}

// ---------------------------------------------------------------- 7. CLI

// predict equals vit_predict on the loaded file; compress refuses a second
// pass over compressed layers, naming the layer and its representation (bench:
// ReprBench below, every kind in one sweep).
TEST_P(ReprTest, CliRunsTheSavedFile) {
  const Variant& v = GetParam();
  auto m = make(v);
  const std::string dir = test::temp_dir(), path = dir + "/m.safetensors";
  save_model(*m, path);
  auto loaded = load_model(path);

  const Tensor x = test::random_images(m->cfg, 5, 50);
  write_npy(dir + "/x.npy", x);
  test::CliResult r = test::run_cli("predict " + path + " --input " + dir + "/x.npy -o " + dir + "/y.npy --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  set_num_threads(1);  // the same threads as the CLI's: the same sums
  const Tensor want = vit_predict(*loaded, x);
  set_num_threads(0);
  const Tensor got = read_npy(dir + "/y.npy");
  EXPECT_TRUE(test::bit_equal(got, want)) << "max |diff| " << test::max_abs_diff(got, want);

  const std::string out = dir + "/again.safetensors";
  r = test::run_cli("compress " + path + " --pass bf16 -o " + out + " -q");
  const Linear* first = nullptr;  // the first layer the bf16 pass cannot take
  for (const Linear* l : m->linears())
    if (!first && v.expect(*l).kind != "f32") first = l;
  if (!first) {  // a dense file converts, as the pass does in the library
    ASSERT_EQ(r.code, 0) << r.err;
    apply_pass(*m, "bf16");
    EXPECT_TRUE(test::bit_equal(vit_predict(*load_model(out), x), vit_predict(*m, x)));
    return;
  }
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find(first->name), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("'" + first->repr->kind() + "'"), std::string::npos) << r.err;
  EXPECT_FALSE(file_exists(out));
}

// eval on Fashion-MNIST reports the top-1 of evaluate_dataset on the loaded file.
TEST_P(ReprTest, CliEvalMatchesTheLibrary) {
  VITKIT_REQUIRE_FILE(test::fashion_mnist_dir());
  const Variant& v = GetParam();
  auto m = make(v);
  const std::string path = test::temp_dir() + "/m.safetensors";
  save_model(*m, path);
  const test::CliResult r = test::run_cli("eval " + path + " --data fashion-mnist --limit 200 --json -q --threads 2");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = test::parse_json(r);
  auto loaded = load_model(path);
  set_num_threads(2);
  const EvalResult want = evaluate_dataset(*loaded, *open_dataset("fashion-mnist", "test"), 200, 256, false);
  set_num_threads(0);
  EXPECT_EQ(j["images"], 200);
  EXPECT_DOUBLE_EQ(j["top1"].get<double>(), want.top1);
  EXPECT_EQ(j["layers"], model_precision(*loaded));
  std::printf("%s eval fashion-mnist --limit 200: top-1 %.3f (random weights)\n", v.name.c_str(), want.top1);
}

INSTANTIATE_TEST_SUITE_P(Repr, ReprTest, ::testing::ValuesIn(variants()), variant_name);

// ---------------------------------------------------------------- 8. bench A B ...

// The six files of the same model (f32, bf16, f16, round, ...) in one sweep
// (one run of bench's ceiling measurement for all, rather than one each):
// one row per file, each run in its own representation with its own bytes,
// timed in the same rounds (the progress says one line per round, not per model).
TEST(ReprBench, EveryFileGetsItsRowInItsRepresentation) {
  const std::string dir = test::temp_dir();
  std::vector<std::string> files;
  std::string args;
  for (const Variant& v : variants()) {
    files.push_back(dir + "/" + v.name + ".safetensors");
    save_model(*make(v), files.back());
    args += " " + files.back();
  }
  const test::CliResult r = test::run_cli("bench" + args + " --batch 2 --reps 2 --warmup 0 --threads 1 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = test::parse_json(r);
  ASSERT_EQ(j["rows"].size(), files.size());
  std::map<std::string, int64_t> bytes;
  for (size_t i = 0; i < files.size(); ++i) {
    const nlohmann::json& row = j["rows"][i];
    auto m = load_model(files[i]);
    EXPECT_EQ(row["model"], files[i]);
    EXPECT_EQ(row["repr"], model_precision(*m)) << files[i];
    EXPECT_EQ(row["model_bytes"], model_cost(*m).bytes) << files[i];
    EXPECT_EQ(row["params"], model_cost(*m).params) << files[i];
    EXPECT_EQ(row["times_ms"].size(), 2u) << files[i];
    bytes[variants()[i].name] = row["model_bytes"].get<int64_t>();
  }
  EXPECT_EQ(j["rows"][0]["repr"], "fp32");
  EXPECT_EQ(j["rows"][1]["repr"], "bf16");
  EXPECT_EQ(j["rows"][5]["repr"], "mixed");
  EXPECT_LT(bytes["bf16"], bytes["f32"]);
  EXPECT_EQ(bytes["f16"], bytes["bf16"]);
  EXPECT_LT(bytes["round2"], bytes["bf16"]);
  // Interleaved: two "rep k/2" rounds, each timing every row.
  size_t rounds = 0;
  for (size_t p = r.err.find("rep "); p != std::string::npos; p = r.err.find("rep ", p + 1)) ++rounds;
  EXPECT_EQ(rounds, 2u) << r.err;
}
