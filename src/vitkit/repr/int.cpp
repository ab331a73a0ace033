#include "vitkit/repr/int.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "vitkit/core/error.h"
#include "vitkit/kernels/int_exact.h"

namespace vitkit {

using kernels::ScaleGranularity;

// ---- the format -----------------------------------------------------------------

static const char* granularity_name(ScaleGranularity g) {
  return g == ScaleGranularity::Tensor ? "tensor" : g == ScaleGranularity::Channel ? "channel" : "group";
}

void IntFormat::validate(int in) const {
  check(bits >= 2 && bits <= 16, "int: weight bits ", bits, " outside 2..16");
  check(abits == 0 || (abits >= 2 && abits <= 16), "int: input bits ", abits, " outside 2..16 (0: f32 inputs)");
  if (granularity == ScaleGranularity::Group)
    check(group > 0 && in % group == 0, "int: group ", group, " does not divide the layer's ", in, " inputs");
  if (static_inputs) {
    check(abits > 0, "int: static input quantization needs input bits (abits > 0)");
    check(in_scale > 0 && std::isfinite(in_scale), "int: static input scale ", in_scale, " must be positive");
    check(in_zero >= 0 && in_zero <= (1 << abits) - 1, "int: static input zero point ", in_zero, " outside 0..",
          (1 << abits) - 1);
  }
  if (fixed()) {
    check(frac <= 30, "int: fixed-point weight frac ", frac, " outside 0..30");
    check(granularity == ScaleGranularity::Tensor && symmetric,
          "int: a fixed-point weight has one scale (granularity tensor) and no zero point");
  }
  if (afrac >= 0) {
    check(afrac <= 30 && static_inputs, "int: fixed-point inputs (afrac ", afrac, ") need static inputs");
    check(in_scale == std::ldexp(1.f, -afrac) && in_zero == (1 << (abits - 1)), "int: fixed-point inputs <", abits,
          ", ", afrac, "> need scale 2^-", afrac, " and zero point ", 1 << (abits - 1), ", got ", in_scale, " and ",
          in_zero);
  }
  check(bias_frac >= -1 && bias_frac <= 30, "int: bias frac ", bias_frac, " outside 0..30");
}

nlohmann::json IntFormat::to_json() const {
  nlohmann::json j{{"bits", bits},
                   {"granularity", granularity_name(granularity)},
                   {"symmetric", symmetric},
                   {"abits", abits},
                   {"inputs", abits == 0 ? "f32" : static_inputs ? "static" : "dynamic"}};
  if (granularity == ScaleGranularity::Group) j["group"] = group;
  if (static_inputs) {
    j["in_scale"] = in_scale;
    j["in_zero"] = in_zero;
  }
  if (bits <= 4) j["packing"] = "int4";  // files: two codes per byte
  if (fixed()) j["frac"] = frac;
  if (afrac >= 0) j["afrac"] = afrac;
  if (bias_frac >= 0) j["bias_frac"] = bias_frac;
  return j;
}

IntFormat IntFormat::from_json(const nlohmann::json& j) {
  IntFormat f;
  try {
    f.bits = j.at("bits").get<int>();
    const std::string g = j.at("granularity").get<std::string>();
    check(g == "tensor" || g == "channel" || g == "group", "granularity '", g, "' is not tensor, channel or group");
    f.granularity = g == "tensor" ? ScaleGranularity::Tensor : g == "channel" ? ScaleGranularity::Channel
                                                                            : ScaleGranularity::Group;
    if (f.granularity == ScaleGranularity::Group) f.group = j.at("group").get<int64_t>();
    f.symmetric = j.at("symmetric").get<bool>();
    f.abits = j.at("abits").get<int>();
    const std::string in = j.at("inputs").get<std::string>();
    check(in == "f32" || in == "static" || in == "dynamic", "inputs '", in, "' is not f32, static or dynamic");
    check((in == "f32") == (f.abits == 0), "inputs '", in, "' with abits ", f.abits);
    f.static_inputs = in == "static";
    if (f.static_inputs) {
      f.in_scale = j.at("in_scale").get<float>();
      f.in_zero = j.at("in_zero").get<int32_t>();
    }
    f.frac = j.value("frac", -1);
    f.afrac = j.value("afrac", -1);
    f.bias_frac = j.value("bias_frac", -1);
    check(f.frac >= -1 && f.afrac >= -1, "frac ", f.frac, " or afrac ", f.afrac, " negative");
  } catch (const nlohmann::json::exception& e) {
    fail("int metadata: ", e.what());
  }
  return f;
}

std::string IntFormat::describe() const {
  if (fixed()) {
    std::string s = cat("fixed<", bits, ",", frac, ">");
    if (abits == 0) s += ", f32 inputs";
    else s += afrac >= 0 ? cat(", inputs fixed<", abits, ",", afrac, ">") : cat(", inputs int", abits, " static");
    return bias_frac >= 0 ? s + cat(", bias frac ", bias_frac) : s;
  }
  std::string s = cat("int", bits, symmetric ? "" : " with zero points", " per ", granularity_name(granularity),
                      granularity == ScaleGranularity::Group ? cat(" of ", group) : std::string());
  if (abits == 0) return s + ", f32 inputs";
  return s + cat(", inputs int", abits, static_inputs ? " static" : " per row");
}

// ---- the layer ------------------------------------------------------------------

int64_t IntLinear::groups() const {
  return f_.granularity == ScaleGranularity::Group ? in_ / f_.group : 1;
}

static DType code_dtype(const IntFormat& f) {
  if (f.bits <= 8) return f.symmetric ? DType::I8 : DType::U8;
  // I16 holds symmetric codes to 16 bits (|q| <= 32767) and zero-point codes to 15 (q <= 32767).
  return f.symmetric || f.bits <= 15 ? DType::I16 : DType::I32;
}

// ---- 4-bit codes in files: two per byte --------------------------------------

// Codes of 4 bits and fewer are stored two per byte along each row: element 2i
// in the low nibble, 2i + 1 in the high one (an odd row's last high nibble 0);
// signed codes as 4-bit two's complement. U8 (out, ceil(in / 2)).
static Tensor pack_nibbles(const Tensor& codes, int in, int out) {
  const int64_t w = (in + 1) / 2;
  Tensor p = Tensor::empty({out, w}, DType::U8);
  const uint8_t* c = static_cast<const uint8_t*>(codes.raw());  // I8 or U8: the low 4 bits are the nibble
  uint8_t* d = p.data<uint8_t>();
  for (int64_t r = 0; r < out; ++r)
    for (int64_t i = 0; i < w; ++i) {
      const uint8_t lo = c[r * in + 2 * i] & 0xF, hi = 2 * i + 1 < in ? c[r * in + 2 * i + 1] & 0xF : 0;
      d[r * w + i] = uint8_t(lo | (hi << 4));
    }
  return p;
}

// The codes (out, in) back: I8 (sign-extended) when symmetric, else U8.
static Tensor unpack_nibbles(const Tensor& p, int in, int out, bool symmetric) {
  const int64_t w = (in + 1) / 2;
  Tensor c = Tensor::empty({out, in}, symmetric ? DType::I8 : DType::U8);
  const uint8_t* s = p.data<uint8_t>();
  for (int64_t r = 0; r < out; ++r)
    for (int64_t k = 0; k < in; ++k) {
      const int v = (s[r * w + k / 2] >> (4 * (k % 2))) & 0xF;
      if (symmetric) c.data<int8_t>()[r * in + k] = int8_t(v >= 8 ? v - 16 : v);
      else c.data<uint8_t>()[r * in + k] = uint8_t(v);
    }
  return c;
}

static int64_t scale_count(const IntFormat& f, int in, int out) {
  return f.granularity == ScaleGranularity::Tensor ? 1
         : f.granularity == ScaleGranularity::Channel ? out
                                                      : int64_t(out) * (in / f.group);
}

IntLinear::IntLinear(const float* W, int in, int out, Tensor bias, const IntFormat& f)
    : SteRepr(in, out, std::move(bias)), f_(f) {
  f_.validate(in);
  set_weight(W);
}

IntLinear::IntLinear(int in, int out, Tensor bias, const IntFormat& f, Tensor codes, Tensor scales, Tensor zeros)
    : SteRepr(in, out, std::move(bias)), f_(f), codes_(std::move(codes)), scales_(std::move(scales)),
      zeros_(std::move(zeros)) {
  f_.validate(in);
  check(codes_.dtype() == code_dtype(f_) && codes_.numel() == int64_t(in) * out, "int: codes are ",
        dtype_name(codes_.dtype()), " x", codes_.numel(), ", expected ", dtype_name(code_dtype(f_)), " x",
        int64_t(in) * out);
  check(scales_.dtype() == DType::F32 && scales_.numel() == scale_count(f_, in, out), "int: ", scales_.numel(),
        " scales, expected ", scale_count(f_, in, out));
  check(f_.symmetric == !zeros_.defined(), "int: zero points ", zeros_.defined() ? "given" : "missing", " for a ",
        f_.symmetric ? "symmetric" : "zero-point", " weight");
  prepare();
}

// Per scale group: the scale, zero point and codes of its values (int.h's formula).
void IntLinear::set_weight(const float* W) { quantize_weight(W, lsq_ && training() ? scales_.f32() : nullptr); }

void IntLinear::quantize_weight(const float* W, const float* given) {
  const int b = f_.bits, qmax_s = (1 << (b - 1)) - 1, qmax_u = (1 << b) - 1;
  const int64_t n_scales = scale_count(f_, in_, out_), G = groups();
  const int64_t L = f_.granularity == ScaleGranularity::Tensor ? int64_t(in_) * out_ : in_ / G;
  Tensor codes = Tensor::empty({out_, in_}, code_dtype(f_)), scales = Tensor::empty({n_scales});
  Tensor zeros = f_.symmetric ? Tensor() : Tensor::empty({n_scales}, DType::I32);
  std::vector<int32_t> q(static_cast<size_t>(L));
  for (int64_t c = 0; c < n_scales; ++c) {
    const float* w = W + c * L;  // a group's values are consecutive in every granularity
    float s = 1.f;
    int32_t z = 0;
    if (f_.fixed()) {  // one scale 2^-frac, codes down to -2^(b-1)
      s = std::ldexp(1.f, -f_.frac);
      for (int64_t i = 0; i < L; ++i)
        q[size_t(i)] = int32_t(std::clamp(std::nearbyint(std::ldexp(w[i], f_.frac)), float(-qmax_s - 1), float(qmax_s)));
    } else if (f_.symmetric) {
      if (given) {
        s = given[c];
      } else {
        float amax = 0.f;
        for (int64_t i = 0; i < L; ++i) amax = std::max(amax, std::fabs(w[i]));
        if (amax > 0) s = amax / float(qmax_s);
      }
      for (int64_t i = 0; i < L; ++i)
        q[size_t(i)] = int32_t(std::clamp(std::nearbyint(w[i] / s), float(-qmax_s), float(qmax_s)));
    } else {
      float lo = 0.f, hi = 0.f;
      for (int64_t i = 0; i < L; ++i) lo = std::min(lo, w[i]), hi = std::max(hi, w[i]);
      if (hi > lo) {
        s = (hi - lo) / float(qmax_u);
        z = int32_t(std::clamp(std::nearbyint(-lo / s), 0.f, float(qmax_u)));
      }
      for (int64_t i = 0; i < L; ++i)
        q[size_t(i)] = int32_t(std::clamp(std::nearbyint(w[i] / s) + float(z), 0.f, float(qmax_u)));
      zeros.data<int32_t>()[c] = z;
    }
    check(std::isfinite(s), "int: a weight group has a non-finite value");
    scales.f32()[c] = s;
    for (int64_t i = 0; i < L; ++i) {
      const int64_t at = c * L + i;
      switch (codes.dtype()) {
        case DType::I8: codes.data<int8_t>()[at] = int8_t(q[size_t(i)]); break;
        case DType::U8: codes.data<uint8_t>()[at] = uint8_t(q[size_t(i)]); break;
        case DType::I16: codes.data<int16_t>()[at] = int16_t(q[size_t(i)]); break;
        default: codes.data<int32_t>()[at] = q[size_t(i)];
      }
    }
  }
  codes_ = codes;
  scales_ = scales;
  zeros_ = zeros;
  if (f_.bias_frac >= 0 && bias_.defined()) round_bias();
  prepare();
}

// The bias on the 2^-bias_frac grid, in place (the ParamTable's tensor).
void IntLinear::round_bias() {
  float* b = bias_.f32();
  for (int64_t i = 0; i < bias_.numel(); ++i) b[i] = std::ldexp(std::nearbyint(std::ldexp(b[i], f_.bias_frac)), -f_.bias_frac);
}

kernels::WeightOperand IntLinear::operand() const {
  kernels::WeightOperand op;
  op.type = f_.symmetric ? kernels::WeightType::S8 : kernels::WeightType::U8;
  op.N = out_;
  op.K = in_;
  op.data = codes_.defined() ? codes_.raw() : nullptr;
  op.packed = packed_.get();
  op.granularity = f_.granularity;
  op.group = f_.group;
  op.scales = scales_.f32();
  op.zeros = zeros_.defined() ? zeros_.data<int32_t>() : nullptr;
  return op;
}

kernels::InputQuant IntLinear::input_quant() const {
  kernels::InputQuant q;
  q.mode = f_.static_inputs ? kernels::InputQuant::Mode::Static : kernels::InputQuant::Mode::DynamicPerRow;
  q.bits = f_.abits;
  q.scale = f_.in_scale;
  q.zero = f_.in_zero;
  return q;
}

void IntLinear::prepare() {
  packed_.reset();
  if (f_.bits <= 8 && f_.abits >= 2 && f_.abits <= 8) {
    packed_ = kernels::pack_weight_int8(operand(), f_.abits);
    codes_ = Tensor();
  }
}

Tensor IntLinear::codes() const {
  if (codes_.defined()) return codes_;
  Tensor c = Tensor::empty({out_, in_}, code_dtype(f_));
  kernels::unpack_weight_int8(*packed_, c.raw());
  return c;
}

// The codes (out, in) as int32 (the exact path's operand).
static const int32_t* codes_i32(const Tensor& codes) {
  if (codes.dtype() == DType::I32) return codes.data<int32_t>();
  const int64_t n = codes.numel();
  thread_local std::vector<int32_t> buf;
  if (int64_t(buf.size()) < n) buf.resize(size_t(n));
  switch (codes.dtype()) {
    case DType::I8: std::copy_n(codes.data<int8_t>(), n, buf.begin()); break;
    case DType::U8: std::copy_n(codes.data<uint8_t>(), n, buf.begin()); break;
    default: std::copy_n(codes.data<int16_t>(), n, buf.begin());
  }
  return buf.data();
}

void IntLinear::forward(const float* X, float* Y, int64_t M, Activation act, bool accumulate) const {
  if (f_.abits == 0) {  // weight-only: the dequantized weight in f32, in this thread's buffer
    thread_local std::vector<float> w;
    kernels::linear(X, f32_operand(plain_weight(w), in_, out_), bias(), Y, M, act, accumulate);
    return;
  }
  if (packed_) {
    kernels::linear(X, operand(), bias(), Y, M, act, accumulate, input_quant());
    return;
  }
  kernels::IntWeights iw;
  iw.N = out_;
  iw.K = in_;
  iw.codes = codes_i32(codes_);
  iw.granularity = f_.granularity;
  iw.group = f_.group;
  iw.scales = scales_.f32();
  iw.zeros = zeros_.defined() ? zeros_.data<int32_t>() : nullptr;
  kernels::linear_int_exact(X, iw, bias(), Y, M, act, accumulate, input_quant());
}

const float* IntLinear::plain_weight(std::vector<float>& scratch) const {
  const Tensor codes = this->codes();
  const int32_t* q = codes_i32(codes);
  const int64_t n = int64_t(in_) * out_, G = groups();
  const int64_t L = f_.granularity == ScaleGranularity::Tensor ? n : in_ / G;
  scratch.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = i / L;
    const int32_t z = zeros_.defined() ? zeros_.data<int32_t>()[c] : 0;
    scratch[size_t(i)] = scales_.f32()[c] * float(q[i] - z);
  }
  return scratch.data();
}

const float* IntLinear::product_input(const float* X, int64_t M) const {
  if (f_.abits == 0) return X;
  float* x = thread_scratch_f32(M * in_, 0);
  std::vector<int32_t> q(static_cast<size_t>(in_));
  const kernels::InputQuant xq = input_quant();
  for (int64_t m = 0; m < M; ++m) {
    float s;
    int32_t z;
    kernels::quantize_input_row(X + m * in_, in_, xq, &s, &z, q.data());
    for (int64_t k = 0; k < in_; ++k) x[m * in_ + k] = s * float(q[size_t(k)] - z);
  }
  return x;
}

// The codes only when not packed (the packed copy is counted by resident_bytes).
std::vector<ReprTensor> IntLinear::own_tensors() const {
  std::vector<ReprTensor> v;
  if (codes_.defined()) v.push_back({"weight", codes_, false, false, false, true});
  v.push_back({"weight_scale", scales_, false, false, false, true});
  if (zeros_.defined()) v.push_back({"weight_zero", zeros_, false, false, false, true});
  return v;
}

std::vector<ReprTensor> IntLinear::stored() const {
  const Tensor w = f_.bits <= 4 ? pack_nibbles(codes(), in_, out_) : codes();
  std::vector<ReprTensor> v{{"weight", w, false, false, false, true},
                            {"weight_scale", scales_, false, false, false, true}};
  if (zeros_.defined()) v.push_back({"weight_zero", zeros_, false, false, false, true});
  add_bias(v);
  return v;
}

int64_t IntLinear::file_bytes() const {
  const int64_t n = int64_t(in_) * out_;
  const int64_t w = f_.bits <= 4 ? int64_t(out_) * ((in_ + 1) / 2) : n * int64_t(dtype_size(code_dtype(f_)));
  return w + int64_t(scales_.nbytes()) + (zeros_.defined() ? int64_t(zeros_.nbytes()) : 0) +
         (bias_.defined() ? int64_t(bias_.nbytes()) : 0);
}

int64_t IntLinear::resident_bytes() const {
  return LinearRepr::resident_bytes() + (packed_ ? int64_t(kernels::packed_bytes(*packed_)) : 0);
}

std::unique_ptr<LinearRepr> IntLinear::clone() const {
  auto c = std::make_unique<IntLinear>(in_, out_, bias_.defined() ? bias_.clone() : Tensor(), f_, codes().clone(),
                                       scales_.clone(), zeros_.defined() ? zeros_.clone() : Tensor());
  c->lsq_ = lsq_;
  if (wscale_latent_.defined()) c->wscale_latent_ = wscale_latent_.clone();
  if (iscale_latent_.defined()) c->iscale_latent_ = iscale_latent_.clone();
  copy_training_state(*c);
  return c;
}

// ---- quantization-aware training -------------------------------------------------

void IntLinear::set_lsq(bool on) {
  if (on) {
    check(!f_.fixed() && f_.afrac < 0, "int: learned step sizes (lsq) need scales that may change, not the fixed-point "
          "format's powers of two");
    check(f_.symmetric, "int: learned step sizes (lsq) need symmetric weights (sym=true), not zero points");
  }
  check(!training() || on == lsq_, "int: set_lsq while training");
  lsq_ = on;
}

void IntLinear::begin_training() {
  if (training()) return;
  SteRepr::begin_training();
  if (!lsq_) return;
  wscale_latent_ = scales_.clone();
  if (f_.static_inputs) {
    iscale_latent_ = Tensor::empty({1});
    iscale_latent_.f32()[0] = f_.in_scale;
  }
}

void IntLinear::end_training() {
  SteRepr::end_training();
  wscale_latent_ = Tensor();
  iscale_latent_ = Tensor();
}

// Scales below this are raised to it after a step (a step size must stay positive).
static constexpr float kMinScale = 1e-8f;

void IntLinear::apply_learned_scales() {
  float* ws = wscale_latent_.f32();
  for (int64_t c = 0; c < wscale_latent_.numel(); ++c) {
    check(std::isfinite(ws[c]), "int: a learned weight scale became ", ws[c]);
    ws[c] = std::max(ws[c], kMinScale);
    scales_.f32()[c] = ws[c];
  }
  if (iscale_latent_.defined()) {
    float& s = iscale_latent_.f32()[0];
    check(std::isfinite(s), "int: the learned input scale became ", s);
    s = std::max(s, kMinScale);
    f_.in_scale = s;
  }
}

void IntLinear::after_step() {
  if (!training()) return;
  if (lsq_) apply_learned_scales();
  set_weight(latent_.f32());
}

std::vector<ReprTensor> IntLinear::training_tensors() const {
  std::vector<ReprTensor> v;
  if (wscale_latent_.defined()) v.push_back({"weight_scale_latent", wscale_latent_, true, true, false, false});
  if (iscale_latent_.defined()) v.push_back({"input_scale_latent", iscale_latent_, true, true, false, false});
  return v;
}

// Straight-through gradients with clipping, and LSQ's scale gradients (int.h).
void IntLinear::backward(const float* dY, const float* X, float* dX, int64_t M, bool accumulate,
                         float* const* grads) const {
  check(training(), "an 'int' layer's backward needs begin_training() first");
  std::vector<float> wbuf;
  const float* W = plain_weight(wbuf);  // w^ (out, in)
  float* g_latent = grads[0];
  float* g_wscale = wscale_latent_.defined() ? grads[1] : nullptr;
  float* g_iscale = iscale_latent_.defined() ? grads[2] : nullptr;
  float* g_bias = bias_.defined() ? grads[1 + training_tensors().size()] : nullptr;
  const int64_t in = in_, out = out_;
  // ---- the input: dX (M, in) = dY W^, zero where a static input was clipped
  const bool clip_inputs = f_.abits > 0 && f_.static_inputs;
  if (dX && !clip_inputs) {
    kernels::gemm(false, false, M, in, out, 1.f, dY, out, W, in, accumulate ? 1.f : 0.f, dX, in);
  } else if (dX || g_iscale) {
    float* G = thread_scratch_f32(M * in, 1);  // d loss / d x^
    kernels::gemm(false, false, M, in, out, 1.f, dY, out, W, in, 0.f, G, in);
    const float s = f_.in_scale;
    const double z = f_.in_zero, hi = double((1 << f_.abits) - 1);
    double gs = 0;
    for (int64_t i = 0; i < M * in; ++i) {
      const double v = double(X[i]) / s + z;  // the code before rounding and clipping
      const bool inside = v >= 0 && v <= hi;
      if (dX) dX[i] = (accumulate ? dX[i] : 0.f) + (inside ? G[i] : 0.f);
      if (g_iscale) {
        const double q = std::clamp(std::nearbyint(double(X[i]) / s) + z, 0.0, hi);
        gs += double(G[i]) * ((q - z) - (inside ? double(X[i]) / s : 0.0));
      }
    }
    if (g_iscale) g_iscale[0] += float(gs / std::sqrt(double(in) * hi));
  }
  // ---- the weight: d latent (out, in) = dY^T x^, zero where a weight was clipped
  const bool clip_weights = lsq_ || f_.fixed();
  if (g_latent && !clip_weights) {
    kernels::gemm(true, false, out, in, M, 1.f, dY, out, product_input(X, M), in, 1.f, g_latent, in);
  } else if (g_latent || g_wscale) {
    std::vector<float> G(size_t(out * in));
    kernels::gemm(true, false, out, in, M, 1.f, dY, out, product_input(X, M), in, 0.f, G.data(), in);
    const int qmax = (1 << (f_.bits - 1)) - 1;
    const double lo = f_.fixed() ? -qmax - 1 : -qmax, hi = qmax;
    const int64_t L = f_.granularity == ScaleGranularity::Tensor ? in * out : in / groups();
    const float* w = latent_.f32();
    for (int64_t c = 0; c < scales_.numel(); ++c) {
      const double s = scales_.f32()[c];
      double gs = 0;
      for (int64_t i = c * L; i < (c + 1) * L; ++i) {
        const double v = double(w[i]) / s;
        const bool inside = v >= lo && v <= hi;
        if (g_latent && inside) g_latent[i] += G[size_t(i)];
        if (g_wscale) gs += double(G[size_t(i)]) * (std::clamp(std::nearbyint(v), lo, hi) - (inside ? v : 0.0));
      }
      if (g_wscale) g_wscale[c] += float(gs / std::sqrt(double(L) * hi));
    }
  }
  if (g_bias) bias_backward(dY, M, g_bias);
}

std::unique_ptr<LinearRepr> load_int_linear(const ReprFile& f) {
  IntFormat fmt;
  try {
    fmt = IntFormat::from_json(f.meta);
    fmt.validate(f.in);
  } catch (const Error& e) {
    fail(f.where, ": ", e.what());
  }
  const std::string packing = f.meta.value("packing", "");
  check(packing.empty() || (packing == "int4" && fmt.bits <= 4), f.where, ": packing '", packing,
        "' is not int4 for codes of 4 bits and fewer");
  Tensor codes = packing == "int4"
                     ? unpack_nibbles(read_checked(f, "weight", {DType::U8}, {Shape{f.out, (f.in + 1) / 2}}), f.in,
                                      f.out, fmt.symmetric)
                     : read_checked(f, "weight", {code_dtype(fmt)}, weight_shapes(f)).reshape({f.out, f.in});
  const int64_t ns = scale_count(fmt, f.in, f.out);
  Tensor scales = read_checked(f, "weight_scale", {DType::F32}, {Shape{ns}});
  for (int64_t i = 0; i < ns; ++i)
    check(scales.f32()[i] > 0 && std::isfinite(scales.f32()[i]), f.path, ": tensor '", f.name("weight_scale"),
          "' has a scale ", scales.f32()[i], " that is not positive and finite");
  Tensor zeros;
  const int lo = fmt.fixed() ? -(1 << (fmt.bits - 1)) : fmt.symmetric ? -((1 << (fmt.bits - 1)) - 1) : 0;
  if (fmt.fixed())
    check(scales.f32()[0] == std::ldexp(1.f, -fmt.frac), f.path, ": tensor '", f.name("weight_scale"), "' is ",
          scales.f32()[0], ", not 2^-", fmt.frac, " as the fixed-point format <", fmt.bits, ",", fmt.frac, "> says");
  const int hi = fmt.symmetric ? (1 << (fmt.bits - 1)) - 1 : (1 << fmt.bits) - 1;
  if (!fmt.symmetric) {
    zeros = read_checked(f, "weight_zero", {DType::I32}, {Shape{ns}});
    for (int64_t i = 0; i < ns; ++i)
      check(zeros.data<int32_t>()[i] >= lo && zeros.data<int32_t>()[i] <= hi, f.path, ": tensor '",
            f.name("weight_zero"), "' has a zero point outside ", lo, "..", hi);
  }
  const int32_t* q = codes_i32(codes);
  for (int64_t i = 0; i < codes.numel(); ++i)
    check(q[i] >= lo && q[i] <= hi, f.path, ": tensor '", f.name("weight"), "' has code ", q[i], " outside ", lo,
          "..", hi, " for ", fmt.bits, " bits");
  Tensor bias = read_bias(f);
  if (fmt.bias_frac >= 0 && bias.defined())
    for (int64_t i = 0; i < bias.numel(); ++i) {
      const float b = bias.f32()[i];
      check(std::ldexp(std::nearbyint(std::ldexp(b, fmt.bias_frac)), -fmt.bias_frac) == b, f.path, ": bias ", b,
            " of ", f.where, " is not on the 2^-", fmt.bias_frac, " grid its metadata says");
    }
  return std::make_unique<IntLinear>(f.in, f.out, bias, fmt, codes, scales, zeros);
}

}  // namespace vitkit
