// The representations a model file can hold, by name (the `repr` of each
// layer in a file's vitkit.layers metadata; a layer without one is "f32"),
// and how each is read back from a file's typed tensors.
#pragma once
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vitkit/repr/linear_repr.h"

namespace vitkit {

// What a loader is given for one layer.
struct ReprFile {
  std::string where;   // "FILE: layer NAME", for messages
  std::string path;    // the file
  // A role's full tensor name in the file ("weight" -> "conv_proj.weight").
  std::function<std::string(const std::string& role)> name;
  int in = 0, out = 0;
  Shape weight_shape;  // the weight's shape in files: (out, in), or conv_proj's (D, C, p, p)
  bool bias = false;   // the layer has a bias
  nlohmann::json meta = nlohmann::json::object();  // the layer's vitkit.layers entry
  // The stored tensor of a role ("weight", "bias", ...) in the file's dtype;
  // throws Error naming the file and tensor when it is absent.
  std::function<Tensor(const std::string& role)> read;
};

// role's tensor, checked: one of `dtypes`, and one of `shapes`.
Tensor read_checked(const ReprFile& f, const std::string& role, const std::vector<DType>& dtypes,
                    const std::vector<Shape>& shapes);
// The weight's shapes a loader accepts: the layer's file shape and (out, in).
std::vector<Shape> weight_shapes(const ReprFile& f);
// Any float dtype (converted on reading).
const std::vector<DType>& float_dtypes();
// The bias as f32 (a file may store any float type), or undefined without one.
Tensor read_bias(const ReprFile& f);
// meta[key] as an integer in [lo, hi] or a bool; Error naming the layer otherwise.
int meta_int(const ReprFile& f, const std::string& key, int lo, int hi);
bool meta_bool(const ReprFile& f, const std::string& key);

using ReprLoader = std::unique_ptr<LinearRepr> (*)(const ReprFile&);
struct ReprKind {
  const char* name;
  ReprLoader load;
  const char* summary;  // one line for --help and docs
};
// Every representation, in one table (registry.cpp).
const std::vector<ReprKind>& repr_kinds();
// The loader of `kind`; Error naming the known kinds when there is none.
std::unique_ptr<LinearRepr> load_repr(const std::string& kind, const ReprFile& f);

}  // namespace vitkit
