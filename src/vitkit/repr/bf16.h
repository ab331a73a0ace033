// bf16: the weight stored as bfloat16 and each input converted to bfloat16
// before the product (f32 accumulation and output), through oneDNN's bf16
// matmul where the CPU has one (AVX512_BF16, AMX); elsewhere the bf16 values
// are widened to f32 exactly (bf16's numerics without its speed). The weight
// is kept in oneDNN's packed bf16 layout where that exists (native bf16:
// 0.94-0.96x the time of the plain bf16 matrix). Trains as mixed precision
// does: an f32 master (latent) weight, bf16 products.
#pragma once
#include <memory>

#include "vitkit/kernels/gemm.h"
#include "vitkit/repr/registry.h"
#include "vitkit/repr/ste.h"

namespace vitkit {

class Bf16Linear : public SteRepr {
 public:
  // W (out, in) f32, converted (round to nearest even); bias shared.
  Bf16Linear(const float* W, int in, int out, Tensor bias);
  // W: BF16 (out, in) as stored in a file.
  Bf16Linear(Tensor W, Tensor bias);
  std::string kind() const override { return "bf16"; }
  std::string describe() const override { return "bf16 weight and inputs, f32 accumulation"; }
  void forward(const float* X, float* Y, int64_t M, Activation act, bool accumulate) const override;
  void end_training() override;
  std::unique_ptr<LinearRepr> clone() const override;
  const float* plain_weight(std::vector<float>& scratch) const override;
  std::vector<ReprTensor> stored() const override;
  int64_t resident_bytes() const override;

 protected:
  std::vector<ReprTensor> own_tensors() const override;
  void set_weight(const float* W) override;
  // bf16(X) widened back to f32 (what the product multiplies).
  const float* product_input(const float* X, int64_t M) const override;

 private:
  void pack();
  Tensor w_;  // BF16 (out, in); undefined while packed_ holds the weight
  std::shared_ptr<const kernels::PackedWeight> packed_;
};

std::unique_ptr<LinearRepr> load_bf16_linear(const ReprFile& f);

}  // namespace vitkit
