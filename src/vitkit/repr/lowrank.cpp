#include "vitkit/repr/lowrank.h"

#include <algorithm>
#include <cstring>

#include "vitkit/core/error.h"
#include "vitkit/kernels/linear.h"
#include "vitkit/report/table.h"
#include "vitkit/repr/f32.h"
#include "vitkit/repr/f32_packed.h"

namespace vitkit {

int lowrank_break_even(int in, int out) {
  // The largest r with r (in + out) < in out.
  const int64_t prod = int64_t(in) * out, sum = int64_t(in) + out;
  return int((prod - 1) / sum);
}

// Per-thread scratch of this file's own (the factors use thread_scratch_f32's slots).
static float* own_scratch(int64_t n, int slot) {
  thread_local std::vector<float> bufs[2];
  std::vector<float>& b = bufs[slot];
  if (int64_t(b.size()) < n) b.resize(size_t(n));
  return b.data();
}

LowRankLinear::LowRankLinear(std::unique_ptr<LinearRepr> down, std::unique_ptr<LinearRepr> up)
    : LinearRepr(down ? down->in() : 0, up ? up->out() : 0, up ? up->bias_tensor() : Tensor()),
      down_(std::move(down)), up_(std::move(up)) {
  check_factors();
}

void LowRankLinear::check_factors() const {
  check(down_ && up_, "LowRankLinear: a factor is missing");
  check(down_->in() == in_ && up_->out() == out_ && up_->in() == down_->out(), "LowRankLinear: factors of ",
        down_->out(), "x", down_->in(), " and ", up_->out(), "x", up_->in(), " do not chain");
  check(!down_->bias(), "LowRankLinear: the down factor has a bias");
  check(down_->kind() != "lowrank" && up_->kind() != "lowrank", "LowRankLinear: a factor is itself low-rank");
}

std::unique_ptr<LowRankLinear> LowRankLinear::from_factors(Tensor U, Tensor V, Tensor bias) {
  check(U.ndim() == 2 && V.ndim() == 2 && U.dim(1) == V.dim(0), "LowRankLinear: factors ", shape_str(U.shape()), " and ",
        shape_str(V.shape()), " do not chain");
  return std::make_unique<LowRankLinear>(std::make_unique<F32Linear>(std::move(V), Tensor()),
                                         std::make_unique<F32Linear>(std::move(U), std::move(bias)));
}

std::string LowRankLinear::describe() const {
  const int64_t dense = int64_t(in_) * out_;
  std::string s = cat("lowrank: rank ", rank(), " of ", std::min(in_, out_), ", ", weight_params(), " of ", dense,
                      " weights (", fmt_fixed(100.0 * double(weight_params()) / double(dense), 1), "%)");
  const std::string dk = stored_kind(*down_), uk = stored_kind(*up_);
  if (dk != "f32" || uk != "f32") s += cat("; factors ", down_->describe(), " | ", up_->describe());
  return s;
}

void LowRankLinear::set_down(std::unique_ptr<LinearRepr> r) {
  check(r && r->in() == in_ && r->out() == rank() && !r->bias(), "LowRankLinear::set_down: the factor does not fit");
  down_ = std::move(r);
  check_factors();
}

void LowRankLinear::set_up(std::unique_ptr<LinearRepr> r) {
  check(r && r->in() == rank() && r->out() == out_, "LowRankLinear::set_up: the factor does not fit");
  up_ = std::move(r);
  bias_ = up_->bias_tensor();
  check_factors();
}

int LowRankLinear::pack_for_inference() {
  int n = 0;
  for (std::unique_ptr<LinearRepr>* f : {&down_, &up_}) {
    const auto* plain = dynamic_cast<const F32Linear*>(f->get());
    if (!plain) continue;
    if (auto packed = PackedF32Linear::pack(*plain)) {
      *f = std::move(packed);
      ++n;
    }
  }
  bias_ = up_->bias_tensor();
  return n;
}

// Z (M, r) = X V^T;  Y (M, out) = act(Z U^T + b (+ Y))
void LowRankLinear::forward(const float* X, float* Y, int64_t M, Activation act, bool accumulate) const {
  float* Z = own_scratch(M * rank(), 0);
  down_->forward(X, Z, M, Activation::None, false);
  up_->forward(Z, Y, M, act, accumulate);
}

TrainMode LowRankLinear::train_mode() const {
  const TrainMode d = down_->train_mode(), u = up_->train_mode();
  if (d == TrainMode::None || u == TrainMode::None) return TrainMode::None;
  if (d == TrainMode::Ste || u == TrainMode::Ste) return TrainMode::Ste;
  return TrainMode::Direct;
}

std::string LowRankLinear::why_not_trainable() const {
  if (down_->train_mode() == TrainMode::None) return cat("its down factor (", down_->kind(), "): ", down_->why_not_trainable());
  if (up_->train_mode() == TrainMode::None) return cat("its up factor (", up_->kind(), "): ", up_->why_not_trainable());
  return "";
}

int LowRankLinear::trainable_count(const LinearRepr& r) const {
  int n = 0;
  for (const ReprTensor& t : r.tensors()) n += t.trainable;
  return n;
}

// Z = X V^T (again);  dZ = dY U, dU += dY^T Z, db += sums of dY;  dX = dZ V, dV += dZ^T X
void LowRankLinear::backward(const float* dY, const float* X, float* dX, int64_t M, bool accumulate,
                             float* const* grads) const {
  if (train_mode() == TrainMode::None) fail_not_trainable();
  const int64_t r = rank();
  float* Z = own_scratch(M * r, 0);
  float* dZ = own_scratch(M * r, 1);
  down_->forward(X, Z, M, Activation::None, false);
  up_->backward(dY, Z, dZ, M, false, grads + trainable_count(*down_));
  down_->backward(dZ, X, dX, M, accumulate, grads);
}

void LowRankLinear::begin_training() {
  down_->begin_training();
  up_->begin_training();
}
void LowRankLinear::after_step() {
  down_->after_step();
  up_->after_step();
}
void LowRankLinear::end_training() {
  down_->end_training();
  up_->end_training();
}

std::vector<ReprTensor> LowRankLinear::merged(const std::vector<ReprTensor>& d, const std::vector<ReprTensor>& u) const {
  std::vector<ReprTensor> v;
  for (ReprTensor t : d) {
    t.role = "down." + t.role;
    v.push_back(std::move(t));
  }
  std::vector<ReprTensor> bias;
  for (ReprTensor t : u) {
    if (t.role == "bias") {
      bias.push_back(std::move(t));
      continue;
    }
    t.role = "up." + t.role;
    v.push_back(std::move(t));
  }
  for (ReprTensor& t : bias) v.push_back(std::move(t));
  return v;
}

std::vector<ReprTensor> LowRankLinear::tensors() const { return merged(down_->tensors(), up_->tensors()); }
std::vector<ReprTensor> LowRankLinear::stored() const { return merged(down_->stored(), up_->stored()); }

nlohmann::json LowRankLinear::meta() const {
  nlohmann::json d = down_->meta(), u = up_->meta();
  d["repr"] = stored_kind(*down_);
  u["repr"] = stored_kind(*up_);
  return {{"rank", rank()}, {"down", d}, {"up", u}};
}

std::unique_ptr<LinearRepr> LowRankLinear::clone() const {
  return std::make_unique<LowRankLinear>(down_->clone(), up_->clone());
}

// W (out, in) = U (out, r) V (r, in), as the rows of U times V: linear_forward(U, V^T).
const float* LowRankLinear::plain_weight(std::vector<float>& scratch) const {
  std::vector<float> su, sv;
  const float* U = up_->plain_weight(su);
  const float* V = down_->plain_weight(sv);
  const int r = rank();
  std::vector<float> Vt(size_t(r) * size_t(in_));
  for (int k = 0; k < r; ++k)
    for (int j = 0; j < in_; ++j) Vt[size_t(j) * r + k] = V[size_t(k) * in_ + j];
  scratch.resize(size_t(in_) * size_t(out_));
  linear_forward(U, Vt.data(), nullptr, scratch.data(), out_, r, in_);
  return scratch.data();
}

// A factor's file view: its roles under PREFIX. (the up factor's bias is the layer's).
static ReprFile factor_file(const ReprFile& f, const std::string& which, int in, int out, bool bias) {
  check(f.meta.contains(which) && f.meta[which].is_object() && f.meta[which].contains("repr") &&
            f.meta[which]["repr"].is_string(),
        f.where, ": the lowrank layer's metadata has no '", which, "' object with a 'repr'");
  ReprFile g;
  g.where = cat(f.where, " (", which, " factor)");
  g.path = f.path;
  const auto role_of = [which](const std::string& role) { return role == "bias" ? role : which + "." + role; };
  g.name = [name = f.name, role_of](const std::string& role) { return name(role_of(role)); };
  g.read = [read = f.read, role_of](const std::string& role) { return read(role_of(role)); };
  g.in = in;
  g.out = out;
  g.weight_shape = {out, in};
  g.bias = bias;
  g.meta = f.meta[which];
  return g;
}

std::unique_ptr<LinearRepr> load_lowrank_linear(const ReprFile& f) {
  const int r = meta_int(f, "rank", 1, std::min(f.in, f.out));
  ReprFile d = factor_file(f, "down", f.in, r, false), u = factor_file(f, "up", r, f.out, f.bias);
  for (const ReprFile* g : {&d, &u})
    check(g->meta["repr"] != "lowrank", g->where, ": a factor cannot itself be low-rank");
  std::unique_ptr<LinearRepr> down = load_repr(d.meta["repr"].get<std::string>(), d);
  std::unique_ptr<LinearRepr> up = load_repr(u.meta["repr"].get<std::string>(), u);
  check(down->in() == f.in && down->out() == r && up->in() == r && up->out() == f.out, f.where,
        ": the factors' sizes do not match rank ", r);
  return std::make_unique<LowRankLinear>(std::move(down), std::move(up));
}

}  // namespace vitkit
