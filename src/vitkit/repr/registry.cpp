#include "vitkit/repr/registry.h"

#include <algorithm>

#include "vitkit/core/error.h"
#include "vitkit/repr/bf16.h"
#include "vitkit/repr/f16.h"
#include "vitkit/repr/f32.h"
#include "vitkit/repr/int.h"
#include "vitkit/repr/lowrank.h"
#include "vitkit/repr/round.h"
#include "vitkit/repr/sparse.h"

namespace vitkit {

const std::vector<ReprKind>& repr_kinds() {
  static const std::vector<ReprKind> kinds = {
      {"f32", load_f32_linear, "dense f32 weight (the default)"},
      {"bf16", load_bf16_linear, "bf16 weight and bf16 inputs, f32 accumulation"},
      {"f16", load_f16_linear, "IEEE half weight (half the bytes), f32 products"},
      {"int", load_int_linear, "b-bit integer weights with f32 scales, b-bit or f32 inputs"},
      {"round", load_round_linear, "weight rounded to d decimals (stored as integer codes), optionally the inputs too"},
      {"sparse", load_sparse_linear, "unstructured-pruned weight: the nonzeros only (a bitmap and the values in files)"},
      {"lowrank", load_lowrank_linear, "factored through rank r: two layers (down r x in, up out x r), each its own representation"},
  };
  return kinds;
}

std::unique_ptr<LinearRepr> load_repr(const std::string& kind, const ReprFile& f) {
  std::string names;
  for (const ReprKind& k : repr_kinds()) {
    if (kind == k.name) return k.load(f);
    names += (names.empty() ? "" : ", ") + std::string(k.name);
  }
  fail(f.where, ": representation '", kind, "' is not known to this vitkit (", names, ")");
}

const std::vector<DType>& float_dtypes() {
  static const std::vector<DType> v{DType::F32, DType::F16, DType::BF16, DType::F64};
  return v;
}

std::vector<Shape> weight_shapes(const ReprFile& f) {
  if (f.weight_shape == Shape{f.out, f.in}) return {f.weight_shape};
  return {f.weight_shape, Shape{f.out, f.in}};
}

Tensor read_checked(const ReprFile& f, const std::string& role, const std::vector<DType>& dtypes,
                    const std::vector<Shape>& shapes) {
  Tensor t = f.read(role);
  const std::string name = f.name(role);
  if (std::find(dtypes.begin(), dtypes.end(), t.dtype()) == dtypes.end()) {
    std::string want;
    for (DType d : dtypes) want += (want.empty() ? "" : ", ") + std::string(dtype_name(d));
    fail(f.path, ": tensor '", name, "' has dtype ", dtype_name(t.dtype()), ", expected ",
         dtypes == float_dtypes() ? "a float type (" + want + ")" : want);
  }
  if (std::find(shapes.begin(), shapes.end(), t.shape()) == shapes.end())
    fail(f.path, ": tensor '", name, "' has shape ", shape_str(t.shape()), " but the model config needs ",
         shape_str(shapes.front()));
  return t;
}

Tensor read_bias(const ReprFile& f) {
  if (!f.bias) return Tensor();
  Tensor t = read_checked(f, "bias", float_dtypes(), {Shape{f.out}});
  return t.dtype() == DType::F32 ? t.reshape({f.out}) : t.to(DType::F32).reshape({f.out});
}

int meta_int(const ReprFile& f, const std::string& key, int lo, int hi) {
  auto it = f.meta.find(key);
  check(it != f.meta.end() && it->is_number_integer(), f.where, ": the layer's metadata has no integer '", key, "'");
  const int64_t v = it->get<int64_t>();
  check(v >= lo && v <= hi, f.where, ": metadata ", key, " = ", v, " is outside ", lo, "..", hi);
  return int(v);
}

bool meta_bool(const ReprFile& f, const std::string& key) {
  auto it = f.meta.find(key);
  check(it != f.meta.end() && it->is_boolean(), f.where, ": the layer's metadata has no boolean '", key, "'");
  return it->get<bool>();
}

}  // namespace vitkit
