// int: the weight quantized to b-bit integers (b = 2..16) with f32 scales per
// tensor, per output channel or per group of G consecutive inputs, symmetric
// (codes in [-(2^(b-1) - 1), 2^(b-1) - 1]) or with zero points (codes in
// [0, 2^b - 1]); the inputs quantized too (abits = 2..16 unsigned codes with a
// zero point, dynamic per row or static from calibration), or kept in f32
// (abits = 0: weight-only quantization).
//
// Weights, per scale group of values w:
//   symmetric:  s = max|w| / (2^(b-1) - 1)                   q = clamp(round(w / s), -qmax, qmax)
//   zero point: lo = min(0, min w), hi = max(0, max w)
//               s = (hi - lo) / (2^b - 1), z = clamp(round(-lo / s), 0, 2^b - 1)
//                                                            q = clamp(round(w / s) + z, 0, 2^b - 1)
//   (s = 1, z = 0 for an all-zero group; round: to nearest, ties to even), w ~ s (q - z).
// Products: b <= 8 and abits 2..8 run on the exact integer kernels
// (kernels::linear, S8/U8 weights packed once); other widths through
// kernels::linear_int_exact, the same formula evaluated exactly (bit-identical
// to the kernels at 8 bits); abits = 0 multiplies the dequantized weight in f32.
// Files: "weight" holds the codes (I8 or U8 up to 8 bits, I16 or I32 above;
// 4 bits and fewer two per byte, U8 (out, ceil(in / 2)), metadata packing "int4"),
// NAME.weight_scale the scales (F32), NAME.weight_zero the zero points (I32);
// the widths, granularity and static input scale are the layer's metadata.
// Trains through an f32 latent weight (quantization-aware training): the
// weight and its scales are derived again from it after every step.
// Gradients go straight through the rounding and are zero where a value was
// clipped (a weight outside its scale's range, an input outside the static
// input range). With learned step sizes (set_lsq, LSQ: Esser et al. 2020) the
// weight scales and the static input scale are parameters of the run too:
//   v = w / s, q = clamp(round(v), -Qn, Qp), w^ = s q   (inputs: s (q - z))
//   d w^/d w = 1 inside [-Qn, Qp], else 0
//   d w^/d s = q - v inside, q (= -Qn or Qp) outside,   scaled by 1 / sqrt(N Qp)
// (N: the values sharing the scale; an input scale's N is the layer's inputs).
#pragma once
#include <memory>
#include <string>

#include "vitkit/kernels/gemm.h"
#include "vitkit/repr/registry.h"
#include "vitkit/repr/ste.h"

namespace vitkit {

struct IntFormat {
  int bits = 8;  // weight bits, 2..16
  kernels::ScaleGranularity granularity = kernels::ScaleGranularity::Channel;
  int64_t group = 0;  // Group: inputs per scale
  bool symmetric = true;
  int abits = 8;               // input bits, 2..16; 0: inputs stay f32
  bool static_inputs = false;  // the input scale and zero point below, not per row
  float in_scale = 0.f;
  int32_t in_zero = 0;
  // Fixed point <bits, frac> (MASE's integer format): frac >= 0 gives the
  // weight one scale 2^-frac (granularity tensor, symmetric), codes
  // clamp(round(w 2^frac), -2^(bits-1), 2^(bits-1) - 1) (the most negative code
  // included); -1: scales from the weights' range. afrac >= 0 records that the
  // static inputs are fixed point <abits, afrac> (scale 2^-afrac, zero point
  // 2^(abits-1): the signed codes offset to unsigned ones). bias_frac >= 0
  // keeps the bias on the 2^-bias_frac grid (rounded whenever the weight is set).
  int frac = -1, afrac = -1, bias_frac = -1;
  bool fixed() const { return frac >= 0; }
  // Checks the fields for a layer of `in` inputs; Error naming the field.
  void validate(int in) const;
  nlohmann::json to_json() const;
  static IntFormat from_json(const nlohmann::json& j);  // Error naming the key
  std::string describe() const;                        // "int8 per channel, inputs int8 per row"
};

class IntLinear : public SteRepr {
 public:
  // W (out, in) f32, quantized here; bias shared.
  IntLinear(const float* W, int in, int out, Tensor bias, const IntFormat& f);
  // As stored: codes (out, in), scales, zero points (undefined when symmetric).
  IntLinear(int in, int out, Tensor bias, const IntFormat& f, Tensor codes, Tensor scales, Tensor zeros);
  std::string kind() const override { return "int"; }
  std::string describe() const override { return f_.describe(); }
  void forward(const float* X, float* Y, int64_t M, Activation act, bool accumulate) const override;
  std::unique_ptr<LinearRepr> clone() const override;
  const float* plain_weight(std::vector<float>& scratch) const override;
  nlohmann::json meta() const override { return f_.to_json(); }
  int64_t resident_bytes() const override;
  std::vector<ReprTensor> stored() const override;
  int64_t file_bytes() const override;  // stored()'s bytes, without packing them
  const IntFormat& format() const { return f_; }
  // The codes (out, in): I8 / U8 (bits <= 8), I16 or I32 (unpacked from the kernels' layout when packed).
  Tensor codes() const;
  const Tensor& scales() const { return scales_; }
  // Whether forward runs on the integer kernels (else the exact simulation or f32).
  bool on_integer_kernels() const { return packed_ != nullptr; }

  // ---- quantization-aware training
  // Learned step sizes from the next begin_training(): the weight scales (and
  // the static input scale) start from the current ones and are trained.
  // Error for formats whose scales are fixed (fixed point, zero-point weights).
  void set_lsq(bool on);
  bool lsq() const { return lsq_; }
  void begin_training() override;
  void after_step() override;
  void end_training() override;
  // grads: {d latent (out, in), [d weight scales, [d input scale]] (with LSQ), d bias}.
  void backward(const float* dY, const float* X, float* dX, int64_t M, bool accumulate,
                float* const* grads) const override;

 protected:
  std::vector<ReprTensor> own_tensors() const override;
  std::vector<ReprTensor> training_tensors() const override;
  void set_weight(const float* W) override;
  // The inputs as the product sees them: s (q - z), or X (abits 0).
  const float* product_input(const float* X, int64_t M) const override;

 private:
  int64_t groups() const;  // scale groups per output row
  kernels::WeightOperand operand() const;
  kernels::InputQuant input_quant() const;
  // Packs the codes for the integer kernels where they apply; the packed copy
  // replaces the plain codes (memory holds one copy of the weight).
  void prepare();
  void round_bias();
  // Codes from W (out, in) with the given scales (n_scales, symmetric formats),
  // or with scales from each group's range (null).
  void quantize_weight(const float* W, const float* scales);
  // The learned scales made positive and applied (LSQ, after a step).
  void apply_learned_scales();
  IntFormat f_;
  bool lsq_ = false;
  Tensor wscale_latent_;  // F32 (n_scales): learned weight scales (LSQ, training only)
  Tensor iscale_latent_;  // F32 (1): learned static input scale (LSQ with static inputs)
  Tensor codes_;   // I8 / U8 (bits <= 8), I16 or I32 (out, in); undefined while packed_ holds them
  Tensor scales_;  // F32
  Tensor zeros_;   // I32, or undefined (symmetric)
  std::shared_ptr<const kernels::PackedWeight> packed_;
};

std::unique_ptr<LinearRepr> load_int_linear(const ReprFile& f);

}  // namespace vitkit
