#include "vitkit/repr/linear_repr.h"

#include <omp.h>

#include "vitkit/core/error.h"
#include "vitkit/core/threads.h"
#include "vitkit/kernels/linear.h"

namespace vitkit {

const char* to_string(TrainMode m) {
  switch (m) {
    case TrainMode::Direct: return "direct";
    case TrainMode::Ste: return "ste";
    case TrainMode::None: return "none";
  }
  return "?";
}

LinearRepr::LinearRepr(int in, int out, Tensor bias) : in_(in), out_(out), bias_(std::move(bias)) {
  check(in > 0 && out > 0, "linear layer of ", out, "x", in, ": sizes must be positive");
  if (bias_.defined())
    check(bias_.dtype() == DType::F32 && bias_.numel() == out, "linear layer of ", out, "x", in, ": bias has ",
          bias_.numel(), " values, expected ", out);
}

void LinearRepr::backward(const float*, const float*, float*, int64_t, bool, float* const*) const {
  fail_not_trainable();
}

void LinearRepr::fail_not_trainable() const {
  fail("a '", kind(), "' layer cannot be trained", why_not_trainable().empty() ? "" : ": ", why_not_trainable());
}

std::vector<ReprTensor> LinearRepr::stored() const {
  std::vector<ReprTensor> v;
  for (ReprTensor& t : tensors())
    if (t.in_model_file) v.push_back(std::move(t));
  return v;
}

int64_t LinearRepr::file_bytes() const {
  int64_t n = 0;
  for (const ReprTensor& t : stored()) n += int64_t(t.t.nbytes());
  return n;
}

int64_t LinearRepr::resident_bytes() const {
  int64_t n = 0;
  for (const ReprTensor& t : tensors()) n += int64_t(t.t.nbytes());
  return n;
}

void LinearRepr::add_bias(std::vector<ReprTensor>& v) const {
  if (bias_.defined()) v.push_back({"bias", bias_, true, true, false, true});
}

void LinearRepr::bias_backward(const float* dY, int64_t M, float* db) const {
  if (db && bias_.defined()) colsum_accumulate(dY, db, M, out_);
}

kernels::WeightOperand f32_operand(const float* W, int in, int out) {
  kernels::WeightOperand op;
  op.type = kernels::WeightType::F32;
  op.N = out;
  op.K = in;
  op.data = W;
  return op;
}

float* thread_scratch_f32(int64_t n, int slot) {
  thread_local std::vector<float> bufs[4];
  check(slot >= 0 && slot < 4, "thread_scratch_f32: slot ", slot, " out of range");
  std::vector<float>& b = bufs[slot];
  if (int64_t(b.size()) < n) b.resize(size_t(n));
  return b.data();
}

}  // namespace vitkit
