#include "vitkit/model/linear_apply.h"

#include "vitkit/core/profile.h"

namespace vitkit {

static const char* prof_name(LayerKind k) {
  switch (k) {
    case LayerKind::Patch: return "fwd.linear.patch";
    case LayerKind::Qkv: return "fwd.linear.qkv";
    case LayerKind::Proj: return "fwd.linear.out_proj";
    case LayerKind::Fc1: return "fwd.linear.fc1";
    case LayerKind::Fc2: return "fwd.linear.fc2";
    case LayerKind::Head: return "fwd.linear.head";
  }
  return "fwd.linear";
}

int pack_linears_for_inference(ViT& m) {
  int n = 0;
  for (Linear* l : m.linears()) {
    if (l->repr || l->packed) continue;
    l->packed = kernels::pack_weight(m.params.ptr(l->w), l->out, l->in, true);
    if (!l->packed) continue;
    l->packed_in_place = kernels::packed_in_place(*l->packed);
    ++n;
  }
  return n;
}

const float* plain_weight(const ViT& m, const Linear& l, std::vector<float>& buf) {
  if (!l.packed_in_place) return m.W(l);
  buf.resize(size_t(l.out) * size_t(l.in));
  kernels::unpack_weight(*l.packed, m.params.ptr(l.w), buf.data());
  return buf.data();
}

void linear_apply(const ViT& m, const Linear& l, const float* X, float* Y, int64_t M, Activation act,
                  bool accumulate) {
  VK_PROF(prof_name(l.kind));
  if (l.repr) {
    l.repr->forward(X, Y, M, m.B(l), act, accumulate);
    return;
  }
  if (l.packed) {  // the packed bytes are in the ParamTable (in place) or in the PackedWeight
    kernels::linear_packed(X, *l.packed, m.params.ptr(l.w), m.B(l), Y, M, act, accumulate);
    return;
  }
  kernels::gemm(false, true, M, l.out, l.in, 1.f, X, l.in, m.W(l), l.in, accumulate ? 1.f : 0.f, Y, l.out, m.B(l),
                act);
}

}  // namespace vitkit
