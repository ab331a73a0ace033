// LinearRepr: one linear layer Y = act(X W^T + b) in one representation —
// how its weight is stored and multiplied (dense f32, packed for oneDNN, bf16,
// f16, rounded, and later int8 / fixed point, low-rank factors, masked sparse).
//
// A representation owns its tensors: there is no dense f32 copy beside a
// compressed one, so a layer's memory and file size are its representation's.
// Every consumer goes through this interface: the forward pass, training (its
// backward, or a clear refusal), saving and loading its typed tensors
// (repr/registry.h), the plain weight for analysis, and its own parameter,
// byte and MAC counts. Adding a representation is one file plus its line in
// repr/registry.cpp (llama.cpp's type_traits and torchao's tensor subclasses
// are the models).
//
// Shapes: X (M, in) row-major, Y (M, out), W (out, in) as a PyTorch Linear's weight.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vitkit/core/tensor.h"
#include "vitkit/kernels/activations.h"
#include "vitkit/kernels/gemm.h"

namespace vitkit {

// How a representation is trained.
enum class TrainMode {
  Direct,  // its f32 tensors are the parameters: backward gives their gradients
  Ste,     // through an f32 latent weight: the forward and the input gradient use the
           // representation's own weight, the weight gradient goes straight through to
           // the latent one, and after each optimizer step the weight is derived anew
           // from it (begin_training / after_step / end_training)
  None,    // cannot be trained (why_not_trainable() says why)
};
const char* to_string(TrainMode m);  // "direct", "ste", "none"

// One tensor a representation holds.
struct ReprTensor {
  // "weight" and "bias" (the layer's torchvision names), or a suffix of the
  // layer's module path ("weight_latent", later "weight_scale", "u", "v", ...).
  std::string role;
  Tensor t;                 // shares the representation's storage: writes go to it
  bool param = false;       // an f32 parameter of the model (listed in its ParamTable)
  bool trainable = false;   // updated by the optimizer (params only)
  bool decay = false;       // AdamW's weight decay applies to it
  bool in_model_file = true;  // false: training checkpoints only (a latent weight)
};

class LinearRepr {
 public:
  // bias: (out) f32, or undefined for a layer without one.
  LinearRepr(int in, int out, Tensor bias);
  virtual ~LinearRepr() = default;
  LinearRepr(const LinearRepr&) = delete;
  LinearRepr& operator=(const LinearRepr&) = delete;

  // The registry's name ("f32", "f32_packed", "bf16", "f16", "round").
  virtual std::string kind() const = 0;
  // One line for `info` ("round: 2 decimals, inputs rounded too").
  virtual std::string describe() const { return kind(); }
  int in() const { return in_; }
  int out() const { return out_; }

  // Y (M, out) = act(X (M, in) W^T + b (+ Y's previous content when
  // accumulate)): the previous content is added before the activation, as the
  // GEMM's sum-then-eltwise epilogue does (kernels/gemm.h). Called by several
  // threads at once (per-image inference): no shared scratch.
  virtual void forward(const float* X, float* Y, int64_t M, Activation act, bool accumulate) const = 0;

  // ---- training
  virtual TrainMode train_mode() const = 0;
  virtual std::string why_not_trainable() const { return ""; }
  // dY (M, out) and X (M, in), the forward pass's input:
  //   dX (M, in) = dY W (overwritten, or added to when accumulate; skipped when null)
  //   grads[i] += d loss / d (the i-th trainable tensor of tensors()); null: skip it
  // Throws for TrainMode::None.
  virtual void backward(const float* dY, const float* X, float* dX, int64_t M, bool accumulate,
                        float* const* grads) const;
  // Ste only (others do nothing): make the latent weight from the current one,
  // derive the weight from the latent one after an optimizer step, drop it.
  virtual void begin_training() {}
  virtual void after_step() {}
  virtual void end_training() {}

  // ---- tensors
  // Every tensor held, the bias last.
  virtual std::vector<ReprTensor> tensors() const = 0;
  // What a model file stores (default: the tensors with in_model_file).
  virtual std::vector<ReprTensor> stored() const;
  // The file's per-layer metadata besides {"repr": kind()} (vitkit.layers).
  virtual nlohmann::json meta() const { return nlohmann::json::object(); }
  // A deep copy.
  virtual std::unique_ptr<LinearRepr> clone() const = 0;
  // The dense f32 weight (out, in) when that is what it stores, else null.
  virtual float* dense_weight() { return nullptr; }

  // ---- analysis
  // The plain weight (out, in) in f32, dequantized: a pointer to the
  // representation's own f32 weight when it has one, else filled into scratch.
  virtual const float* plain_weight(std::vector<float>& scratch) const = 0;
  // Weight parameters (the bias not included) and multiply-accumulates for M rows.
  virtual int64_t weight_params() const { return int64_t(in_) * out_; }
  virtual int64_t macs(int64_t M) const { return M * in_ * out_; }
  // Bytes in a model file (stored()) and in memory (tensors() and any own layout).
  virtual int64_t file_bytes() const;
  virtual int64_t resident_bytes() const;

  const float* bias() const { return bias_.defined() ? bias_.f32() : nullptr; }
  float* bias() { return bias_.defined() ? bias_.f32() : nullptr; }
  const Tensor& bias_tensor() const { return bias_; }

 protected:
  // {"bias", ...} when there is one: appended by every tensors().
  void add_bias(std::vector<ReprTensor>& v) const;
  // The bias's gradient: db (out) += column sums of dY (M, out).
  void bias_backward(const float* dY, int64_t M, float* db) const;
  [[noreturn]] void fail_not_trainable() const;

  int in_, out_;
  Tensor bias_;
};

// The plain f32 weight W (out, in) as the GEMM's operand (kernels/gemm.h).
kernels::WeightOperand f32_operand(const float* W, int in, int out);

// Thread-local scratch of at least n floats, for forward passes that transform
// their input or weight (one per calling thread; grows, never shrinks).
float* thread_scratch_f32(int64_t n, int slot = 0);

}  // namespace vitkit
