#include "vitkit/model/linear_apply.h"

#include "vitkit/core/profile.h"
#include "vitkit/repr/f32_packed.h"
#include "vitkit/repr/lowrank.h"

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

void linear_apply(const Linear& l, const float* X, float* Y, int64_t M, Activation act, bool accumulate) {
  VK_PROF(prof_name(l.kind));
  l.repr->forward(X, Y, M, act, accumulate);
}

int pack_linears_for_inference(ViT& m) {
  int n = 0;
  for (Linear* l : m.linears()) {
    if (auto* lr = dynamic_cast<LowRankLinear*>(l->repr.get())) {  // its dense factors
      if (lr->pack_for_inference() > 0) {
        m.layout();
        ++n;
      }
      continue;
    }
    const auto* plain = dynamic_cast<const F32Linear*>(l->repr.get());
    if (!plain) continue;
    auto packed = PackedF32Linear::pack(*plain);
    if (!packed) continue;
    m.set_repr(*l, std::move(packed));
    ++n;
  }
  return n;
}

}  // namespace vitkit
