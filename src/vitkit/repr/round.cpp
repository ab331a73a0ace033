#include "vitkit/repr/round.h"

#include <cmath>
#include <cstring>
#include <type_traits>

#include "vitkit/core/error.h"
#include "vitkit/kernels/gemm.h"
#include "vitkit/kernels/round.h"

namespace vitkit {

RoundLinear::RoundLinear(const float* W, int in, int out, Tensor bias, int decimals, bool inputs)
    : SteRepr(in, out, std::move(bias)), w_(Tensor::empty({out, in})), decimals_(decimals), inputs_(inputs) {
  kernels::pow10_exact(decimals);  // validates
  set_weight(W);
}

std::string RoundLinear::describe() const {
  return cat("rounded to ", decimals_, " decimals", inputs_ ? ", inputs too" : "");
}

void RoundLinear::set_weight(const float* W) {
  kernels::round_decimal(W, w_.f32(), w_.numel(), decimals_);
}

const float* RoundLinear::product_input(const float* X, int64_t M) const {
  if (!inputs_) return X;
  float* x = thread_scratch_f32(M * in_, 0);  // (M, in)
  kernels::round_decimal(X, x, M * in_, decimals_);
  return x;
}

void RoundLinear::forward(const float* X, float* Y, int64_t M, Activation act, bool accumulate) const {
  kernels::linear(product_input(X, M), f32_operand(w_.f32(), in_, out_), bias(), Y, M, act, accumulate);
}

std::unique_ptr<LinearRepr> RoundLinear::clone() const {
  // Rounding grid values again changes nothing: the copy's weight is w_.
  auto c = std::make_unique<RoundLinear>(w_.f32(), in_, out_, bias_.defined() ? bias_.clone() : Tensor(), decimals_,
                                         inputs_);
  copy_training_state(*c);
  return c;
}

// The integer codes k of the weights (w = k / 10^d exactly as round_decimal
// computes it), in the smallest integer dtype that holds them.
std::vector<ReprTensor> RoundLinear::stored() const {
  const double p = kernels::pow10_exact(decimals_);
  const int64_t n = w_.numel();
  const float* w = w_.f32();
  double big = 0;
  for (int64_t i = 0; i < n; ++i) big = std::max(big, std::fabs(kernels::decimal_units_at(w[i], p)));
  Tensor t;
  if (!(big <= 2147483647.0)) {
    t = w_;  // codes beyond int32 (|w| > 214 at 7 decimals): the grid values themselves
  } else {
    const DType dt = big <= 127 ? DType::I8 : big <= 32767 ? DType::I16 : DType::I32;
    t = Tensor::empty({out_, in_}, dt);
    auto put = [&](auto* dst) {
      for (int64_t i = 0; i < n; ++i)
        dst[i] = static_cast<std::remove_pointer_t<decltype(dst)>>(kernels::decimal_units_at(w[i], p));
    };
    if (dt == DType::I8) put(t.data<int8_t>());
    else if (dt == DType::I16) put(t.data<int16_t>());
    else put(t.data<int32_t>());
  }
  std::vector<ReprTensor> v{{"weight", t, false, false, false, true}};
  add_bias(v);
  return v;
}

std::unique_ptr<LinearRepr> load_round_linear(const ReprFile& f) {
  const int d = meta_int(f, "decimals", 0, kernels::kMaxDecimals);
  const bool inputs = meta_bool(f, "inputs");
  const int64_t n = int64_t(f.in) * f.out;
  Tensor t = read_checked(f, "weight", {DType::I8, DType::I16, DType::I32, DType::F32}, weight_shapes(f));
  std::vector<float> w(static_cast<size_t>(n));
  // k / 10^d rounded once to float: the value round_decimal gives.
  const double p = kernels::pow10_exact(d);
  auto decode = [&](const auto* k) {
    for (int64_t i = 0; i < n; ++i) w[size_t(i)] = float(double(k[i]) / p);
  };
  switch (t.dtype()) {
    case DType::I8: decode(t.data<int8_t>()); break;
    case DType::I16: decode(t.data<int16_t>()); break;
    case DType::I32: decode(t.data<int32_t>()); break;
    default: std::memcpy(w.data(), t.f32(), sizeof(float) * size_t(n));  // F32: the grid values
  }
  for (int64_t i = 0; i < n; ++i)
    check(std::isfinite(w[size_t(i)]), f.where, ": tensor 'weight' has a non-finite value");
  auto r = std::make_unique<RoundLinear>(w.data(), f.in, f.out, read_bias(f), d, inputs);
  // A weight off the grid was not written by the round pass (or was changed since).
  for (int64_t i = 0; i < n; ++i)
    check(r->weight()[i] == w[size_t(i)] || (r->weight()[i] == 0.f && w[size_t(i)] == 0.f), f.where,
          ": weight ", i, " (", w[size_t(i)], ") is not on the ", d, "-decimal grid its metadata claims");
  return r;
}

}  // namespace vitkit
