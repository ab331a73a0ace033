// A restricted unpickler for the data.pkl of a torch.save checkpoint. It reads
// the opcodes pickle protocols 0-5 use for plain data (numbers, strings, bytes,
// tuples, lists, dicts, sets, the memo) and knows a short allow-list of globals:
// collections.OrderedDict, torch._utils._rebuild_tensor_v2, _rebuild_parameter,
// _rebuild_parameter_with_state, torch.Size and the storage classes of the
// supported dtypes. It never imports or calls anything: an allowed "call"
// (REDUCE, NEWOBJ) builds a plain value here, and any other global is refused at
// the opcode that names it, with an error naming module and name.
//
// Objects live in an arena owned by the result (ids, not pointers), so cyclic or
// deeply nested pickles cannot leak memory or overflow the stack.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "vitkit/core/tensor.h"

namespace vitkit {

enum class PyKind : uint8_t { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Set, Global, Storage, Tensor };
const char* to_string(PyKind k);  // "None", "int", "str", "tuple", ...

// The allowed globals.
enum class PyGlobal : uint8_t {
  OrderedDict,                // collections.OrderedDict
  RebuildTensorV2,            // torch._utils._rebuild_tensor_v2
  RebuildParameter,           // torch._utils._rebuild_parameter
  RebuildParameterWithState,  // torch._utils._rebuild_parameter_with_state
  Size,                       // torch.Size
  StorageType,                // torch.FloatStorage, torch.HalfStorage, ...
};

// A storage named by a persistent id ('storage', StorageType, key, location, numel).
struct PyStorage {
  DType dtype = DType::F32;
  std::string key;       // the zip entry <archive>/data/<key>
  std::string location;  // "cpu", "cuda:0", ...
  int64_t numel = 0;     // elements of dtype
};

// A tensor: a strided view into a storage (_rebuild_tensor_v2's arguments).
struct PyTensor {
  int storage = -1;  // index into Pickle::storages
  int64_t offset = 0;  // in elements
  Shape size;
  std::vector<int64_t> stride;  // in elements, one per dimension
};

struct PyObject {
  PyKind kind = PyKind::None;
  int64_t i = 0;     // Bool, Int; Global: its PyGlobal; Storage, Tensor: index into their table
  double f = 0;      // Float
  DType dtype = DType::F32;  // Global StorageType: the storage's dtype
  std::string s;     // Str, Bytes; Global: "module.name"
  std::vector<int> items;  // Tuple, List, Set: elements; Dict: key, value, key, value, ...
};

struct Pickle {
  std::vector<PyObject> objects;  // the arena; ids index it
  std::vector<PyStorage> storages;
  std::vector<PyTensor> tensors;
  int root = -1;
  const PyObject& at(int id) const { return objects.at(static_cast<size_t>(id)); }
};

// Parses a pickle. where names it in errors ("model.pth: archive/data.pkl").
// Throws Error for a refused global (naming it), an unsupported opcode, a
// malformed or truncated stream, or a pickle larger than the caps on objects.
Pickle unpickle(const uint8_t* data, size_t size, const std::string& where);

// s with control and non-ASCII bytes escaped and cut to max characters (for
// quoting names taken from untrusted files in messages).
std::string printable(const std::string& s, size_t max = 200);

}  // namespace vitkit
