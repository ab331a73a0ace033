#include "vitkit/io/unpickler.h"

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <unordered_map>

#include "vitkit/core/error.h"

namespace vitkit {

const char* to_string(PyKind k) {
  switch (k) {
    case PyKind::None: return "None";
    case PyKind::Bool: return "bool";
    case PyKind::Int: return "int";
    case PyKind::Float: return "float";
    case PyKind::Str: return "str";
    case PyKind::Bytes: return "bytes";
    case PyKind::Tuple: return "tuple";
    case PyKind::List: return "list";
    case PyKind::Dict: return "dict";
    case PyKind::Set: return "set";
    case PyKind::Global: return "global";
    case PyKind::Storage: return "storage";
    case PyKind::Tensor: return "tensor";
  }
  return "?";
}

std::string printable(const std::string& s, size_t max) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (out.size() >= max) {
      out += "...";
      break;
    }
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

namespace {

constexpr size_t kMaxObjects = 8u << 20;  // ~8M objects: far above any state dict
constexpr int kMaxDims = 64;              // as PyTorch
constexpr int64_t kMaxDim = int64_t(1) << 48;

struct Allowed {
  const char* module;
  const char* name;
  PyGlobal global;
  DType dtype;
};

// The allow-list. Everything else is refused.
constexpr Allowed kAllowed[] = {
    {"collections", "OrderedDict", PyGlobal::OrderedDict, DType::F32},
    {"torch._utils", "_rebuild_tensor_v2", PyGlobal::RebuildTensorV2, DType::F32},
    {"torch._utils", "_rebuild_parameter", PyGlobal::RebuildParameter, DType::F32},
    {"torch._utils", "_rebuild_parameter_with_state", PyGlobal::RebuildParameterWithState, DType::F32},
    {"torch", "Size", PyGlobal::Size, DType::F32},
    {"torch", "FloatStorage", PyGlobal::StorageType, DType::F32},
    {"torch", "DoubleStorage", PyGlobal::StorageType, DType::F64},
    {"torch", "HalfStorage", PyGlobal::StorageType, DType::F16},
    {"torch", "BFloat16Storage", PyGlobal::StorageType, DType::BF16},
    {"torch", "CharStorage", PyGlobal::StorageType, DType::I8},
    {"torch", "ByteStorage", PyGlobal::StorageType, DType::U8},
    {"torch", "ShortStorage", PyGlobal::StorageType, DType::I16},
    {"torch", "IntStorage", PyGlobal::StorageType, DType::I32},
    {"torch", "LongStorage", PyGlobal::StorageType, DType::I64},
    {"torch", "BoolStorage", PyGlobal::StorageType, DType::BOOL},
};

// The refusal for a global outside the allow-list: names it and, where the name
// looks like a class of a model library, says how to save a state dict instead.
[[noreturn]] void refuse_global(const std::string& where, size_t pos, const std::string& module,
                                const std::string& name) {
  const std::string full = printable(module + "." + name);
  const std::string head = cat(where, ": byte ", pos, ": refusing to load: the pickle references ", full);
  if (module == "torch" && name.size() > 7 && name.compare(name.size() - 7, 7, "Storage") == 0)
    fail(head, ", a storage type vitkit does not support (float, double, half, bfloat16, int8, uint8, int16, "
               "int32, int64 and bool are)");
  static const char* model_libs[] = {"torch.nn", "torchvision", "timm", "transformers", "__main__"};
  bool model_class = false;
  for (const char* lib : model_libs)
    if (module.rfind(lib, 0) == 0) model_class = !name.empty() && name[0] >= 'A' && name[0] <= 'Z';
  if (model_class)
    fail(head, ": the file holds a pickled model object, not a state dict. Save the weights instead: "
               "torch.save(model.state_dict(), PATH). Nothing in the file was executed.");
  fail(head, "; a checkpoint may only contain tensors, numbers, strings and containers of them "
             "(nothing in the file was executed)");
}

PyObject mk(PyKind k, int64_t i = 0) {
  PyObject o;
  o.kind = k;
  o.i = i;
  return o;
}

class Unpickler {
 public:
  Unpickler(const uint8_t* data, size_t size, const std::string& where) : p_(data), n_(size), where_(where) {
    add(mk(PyKind::None));
    add(mk(PyKind::Bool, 1));
    add(mk(PyKind::Bool, 0));
  }

  Pickle run() {
    for (;;) {
      op_ = pos_;
      const uint8_t op = u8();
      if (op == '.') {  // STOP
        out_.root = pop();
        return std::move(out_);
      }
      step(op);
    }
  }

 private:
  const uint8_t* p_;
  size_t n_, pos_ = 0, op_ = 0;
  const std::string& where_;
  Pickle out_;
  std::vector<int> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, int> memo_;
  static constexpr int kNone = 0, kTrue = 1, kFalse = 2;

  template <typename... Args>
  [[noreturn]] void bad(const Args&... args) const {
    fail(where_, ": byte ", op_, ": ", args...);
  }

  // --- reading the stream ---
  void need(size_t k) const {
    if (k > n_ - pos_) bad("truncated pickle: needs ", k, " more bytes, ", n_ - pos_, " left");
  }
  uint8_t u8() {
    need(1);
    return p_[pos_++];
  }
  uint64_t uint_le(int bytes) {
    need(static_cast<size_t>(bytes));
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p_[pos_ + i];
    pos_ += static_cast<size_t>(bytes);
    return v;
  }
  std::string bytes(uint64_t len) {
    if (len > n_ - pos_) bad("truncated pickle: a string of ", len, " bytes, ", n_ - pos_, " left");
    std::string s(reinterpret_cast<const char*>(p_ + pos_), static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return s;
  }
  // A text line (protocol 0 arguments), without its '\n'.
  std::string line() {
    const void* nl = std::memchr(p_ + pos_, '\n', n_ - pos_);
    if (!nl) bad("truncated pickle: unterminated text argument");
    size_t len = static_cast<size_t>(static_cast<const uint8_t*>(nl) - (p_ + pos_));
    std::string s(reinterpret_cast<const char*>(p_ + pos_), len);
    pos_ += len + 1;
    return s;
  }

  // STRING's argument: a Python repr, quoted with ' or ", with backslash escapes.
  std::string quoted(const std::string& s) {
    if (s.size() < 2 || (s[0] != '\'' && s[0] != '"') || s.back() != s[0]) bad("STRING argument is not quoted");
    std::string out;
    for (size_t i = 1; i + 1 < s.size(); ++i) {
      char c = s[i];
      if (c != '\\' || i + 2 >= s.size()) {
        out += c;
        continue;
      }
      char e = s[++i];
      static const std::string simple = "\\'\"abfnrtv", value = "\\'\"\a\b\f\n\r\t\v";
      if (size_t k = simple.find(e); k != std::string::npos) {
        out += value[k];
      } else if (e == 'x' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
                 std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
        out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
        i += 2;
      } else {
        out += '\\';
        out += e;
      }
    }
    return out;
  }
  // UNICODE's argument: raw-unicode-escape (\uXXXX, \UXXXXXXXX), as UTF-8.
  std::string raw_unicode(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
      const size_t n = i + 1 < s.size() ? (s[i + 1] == 'u' ? 4 : s[i + 1] == 'U' ? 8 : 0) : 0;
      bool hex = s[i] == '\\' && n && i + 1 + n < s.size();
      for (size_t k = 0; hex && k < n; ++k) hex = std::isxdigit(static_cast<unsigned char>(s[i + 2 + k]));
      if (!hex) {
        out += s[i];
        continue;
      }
      uint32_t cp = static_cast<uint32_t>(std::stoul(s.substr(i + 2, n), nullptr, 16));
      i += 1 + n;
      if (cp > 0x10ffff) bad("UNICODE escape beyond U+10FFFF");
      if (cp < 0x80) {
        out += static_cast<char>(cp);
      } else if (cp < 0x800) {
        out += static_cast<char>(0xc0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3f));
      } else if (cp < 0x10000) {
        out += static_cast<char>(0xe0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
      } else {
        out += static_cast<char>(0xf0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
      }
    }
    return out;
  }

  // --- objects and the stack ---
  int add(PyObject o) {
    if (out_.objects.size() >= kMaxObjects) bad("pickle has more than ", kMaxObjects, " objects");
    out_.objects.push_back(std::move(o));
    return static_cast<int>(out_.objects.size() - 1);
  }
  PyObject& obj(int id) { return out_.objects[static_cast<size_t>(id)]; }
  void push(int id) { stack_.push_back(id); }
  int pop() {
    if (stack_.size() <= (marks_.empty() ? 0 : marks_.back())) bad("stack underflow");
    int id = stack_.back();
    stack_.pop_back();
    return id;
  }
  int& top() {
    if (stack_.size() <= (marks_.empty() ? 0 : marks_.back())) bad("stack underflow");
    return stack_.back();
  }
  // Pops everything above the last MARK (and the mark).
  std::vector<int> pop_mark() {
    if (marks_.empty()) bad("no MARK on the stack");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<int> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  int make_int(int64_t v) { return add(mk(PyKind::Int, v)); }
  int make_str(PyKind k, std::string s) {
    PyObject o = mk(k);
    o.s = std::move(s);
    return add(std::move(o));
  }
  int make_seq(PyKind k, std::vector<int> items) {
    PyObject o = mk(k);
    o.items = std::move(items);
    return add(std::move(o));
  }
  void memo_put(uint64_t idx) { memo_[idx] = top(); }
  void memo_get(uint64_t idx) {
    auto it = memo_.find(idx);
    if (it == memo_.end()) bad("memo entry ", idx, " is not defined");
    push(it->second);
  }

  // --- numbers ---
  // LONG1/LONG4: little-endian two's complement of n bytes, as int64.
  int64_t long_bytes(uint64_t n) {
    if (n > n_ - pos_) bad("truncated pickle: an integer of ", n, " bytes");
    const uint8_t* b = p_ + pos_;
    pos_ += static_cast<size_t>(n);
    if (n == 0) return 0;
    const bool neg = b[n - 1] & 0x80;
    for (uint64_t i = 8; i < n; ++i)
      if (b[i] != (neg ? 0xff : 0x00)) bad("integer of ", n, " bytes does not fit in 64 bits");
    if (n > 8 && ((b[7] & 0x80) != 0) != neg) bad("integer of ", n, " bytes does not fit in 64 bits");
    uint64_t v = neg ? ~uint64_t(0) : 0;
    for (uint64_t i = std::min<uint64_t>(n, 8); i-- > 0;) v = (v << 8) | b[i];
    int64_t r;
    std::memcpy(&r, &v, 8);
    return r;
  }
  int64_t text_int(std::string s) {
    if (!s.empty() && s.back() == 'L') s.pop_back();
    if (s.empty()) bad("empty integer");
    errno = 0;
    char* end = nullptr;
    long long v = std::strtoll(s.c_str(), &end, 10);
    if (errno || *end) bad("bad integer '", printable(s), "'");
    return v;
  }

  // --- globals ---
  int global(const std::string& module, const std::string& name) {
    for (const Allowed& a : kAllowed)
      if (module == a.module && name == a.name) {
        PyObject o = mk(PyKind::Global, static_cast<int64_t>(a.global));
        o.dtype = a.dtype;
        o.s = module + "." + name;
        return add(std::move(o));
      }
    refuse_global(where_, op_, module, name);
  }
  PyGlobal global_of(int id, const char* opcode) {
    const PyObject& g = obj(id);
    if (g.kind != PyKind::Global) bad(opcode, " on a ", to_string(g.kind), ", not a callable");
    return static_cast<PyGlobal>(g.i);
  }

  const PyObject& arg(const std::vector<int>& a, size_t i, PyKind k, const char* fn, const char* what) {
    const PyObject& o = obj(a[i]);
    if (o.kind != k) bad(fn, ": ", what, " is a ", to_string(o.kind), ", expected ", to_string(k));
    return o;
  }
  // A tuple of non-negative ints (a size or a stride).
  std::vector<int64_t> int_tuple(int id, const char* what) {
    const PyObject& t = obj(id);
    if (t.kind != PyKind::Tuple) bad("_rebuild_tensor_v2: ", what, " is a ", to_string(t.kind), ", expected a tuple");
    if (t.items.size() > static_cast<size_t>(kMaxDims)) bad("_rebuild_tensor_v2: ", t.items.size(), " dimensions");
    std::vector<int64_t> v;
    for (int e : t.items) {
      const PyObject& x = obj(e);
      if (x.kind != PyKind::Int || x.i < 0 || x.i > kMaxDim)
        bad("_rebuild_tensor_v2: ", what, " has an element that is not an int in 0..2^48");
      v.push_back(x.i);
    }
    return v;
  }

  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
  int rebuild_tensor(const std::vector<int>& a) {
    const char* fn = "_rebuild_tensor_v2";
    if (a.size() != 6 && a.size() != 7) bad(fn, ": expected 6 or 7 arguments, got ", a.size());
    const PyObject& st = arg(a, 0, PyKind::Storage, fn, "the storage");
    const PyObject& off = arg(a, 1, PyKind::Int, fn, "the storage offset");
    if (off.i < 0 || off.i > kMaxDim) bad(fn, ": storage offset ", off.i, " out of range");
    PyTensor t;
    t.storage = static_cast<int>(st.i);
    t.offset = off.i;
    t.size = int_tuple(a[2], "size");
    t.stride = int_tuple(a[3], "stride");
    if (t.size.size() != t.stride.size())
      bad(fn, ": size has ", t.size.size(), " dimensions but stride has ", t.stride.size());
    out_.tensors.push_back(std::move(t));
    return add(mk(PyKind::Tensor, static_cast<int64_t>(out_.tensors.size() - 1)));
  }

  // An allowed call: builds its value (nothing is executed).
  int call(PyGlobal g, const std::vector<int>& a, const char* opcode) {
    switch (g) {
      case PyGlobal::OrderedDict: {
        if (a.empty()) return make_seq(PyKind::Dict, {});
        bad("OrderedDict called with arguments");
      }
      case PyGlobal::Size: {
        if (a.empty()) return make_seq(PyKind::Tuple, {});
        const PyObject& t = obj(a[0]);
        if (a.size() != 1 || (t.kind != PyKind::Tuple && t.kind != PyKind::List))
          bad("torch.Size expects one tuple argument");
        return make_seq(PyKind::Tuple, t.items);
      }
      case PyGlobal::RebuildTensorV2:
        return rebuild_tensor(a);
      case PyGlobal::RebuildParameter:
      case PyGlobal::RebuildParameterWithState: {
        const size_t n = g == PyGlobal::RebuildParameter ? 3 : 4;
        if (a.size() != n) bad("_rebuild_parameter: expected ", n, " arguments, got ", a.size());
        arg(a, 0, PyKind::Tensor, "_rebuild_parameter", "the data");
        return a[0];
      }
      case PyGlobal::StorageType:
        bad(opcode, ": a storage type is only allowed in a persistent id");
    }
    bad("unknown global");
  }

  // BINPERSID: ('storage', StorageType, key, location, numel) -> a storage.
  int persistent_load(int pid) {
    const PyObject& t = obj(pid);
    if (t.kind != PyKind::Tuple || t.items.size() != 5)
      bad("persistent id is not a ('storage', type, key, location, numel) tuple");
    const PyObject& tag = obj(t.items[0]);
    const PyObject& type = obj(t.items[1]);
    const PyObject& key = obj(t.items[2]);
    const PyObject& loc = obj(t.items[3]);
    const PyObject& numel = obj(t.items[4]);
    if (tag.kind != PyKind::Str || tag.s != "storage") bad("persistent id is not tagged 'storage'");
    if (type.kind != PyKind::Global || static_cast<PyGlobal>(type.i) != PyGlobal::StorageType)
      bad("persistent id: the storage type is not a torch.*Storage class");
    if (key.kind != PyKind::Str) bad("persistent id: the storage key is not a string");
    if (loc.kind != PyKind::Str) bad("persistent id: the location is not a string");
    if (numel.kind != PyKind::Int || numel.i < 0 || numel.i > kMaxDim)
      bad("persistent id: the storage size is not an int in 0..2^48");
    out_.storages.push_back({type.dtype, key.s, loc.s, numel.i});
    return add(mk(PyKind::Storage, static_cast<int64_t>(out_.storages.size() - 1)));
  }

  void append(int list, const std::vector<int>& items, PyKind want, const char* opcode) {
    PyObject& l = obj(list);
    if (l.kind != want) bad(opcode, " on a ", to_string(l.kind));
    l.items.insert(l.items.end(), items.begin(), items.end());
  }
  void set_items(int dict, const std::vector<int>& kv) {
    if (kv.size() % 2) bad("SETITEMS with an odd number of items");
    append(dict, kv, PyKind::Dict, "SETITEM");
  }

  void step(uint8_t op);
};

void Unpickler::step(uint8_t op) {
  switch (op) {
    case 0x80: {  // PROTO
      uint8_t v = u8();
      if (v > 5) bad("pickle protocol ", int(v), " is newer than 5");
      return;
    }
    case 0x95: {  // FRAME: an 8-byte length; the frame's opcodes follow inline
      uint64_t len = uint_le(8);
      if (len > n_ - pos_) bad("truncated pickle: frame of ", len, " bytes");
      return;
    }
    case '(': marks_.push_back(stack_.size()); return;  // MARK
    case '0': pop(); return;                              // POP
    case '1': pop_mark(); return;                         // POP_MARK
    case '2': push(top()); return;                        // DUP
    case 'N': push(kNone); return;
    case 0x88: push(kTrue); return;   // NEWTRUE
    case 0x89: push(kFalse); return;  // NEWFALSE
    case 'J': {                       // BININT: int32
      uint32_t u = static_cast<uint32_t>(uint_le(4));
      int32_t v;
      std::memcpy(&v, &u, 4);
      push(make_int(v));
      return;
    }
    case 'K': push(make_int(static_cast<int64_t>(uint_le(1)))); return;  // BININT1
    case 'M': push(make_int(static_cast<int64_t>(uint_le(2)))); return;  // BININT2
    case 0x8a: push(make_int(long_bytes(uint_le(1)))); return;           // LONG1
    case 0x8b: push(make_int(long_bytes(uint_le(4)))); return;           // LONG4
    case 'I': {                                                          // INT (text)
      std::string s = line();
      if (s == "00") push(kFalse);
      else if (s == "01") push(kTrue);
      else push(make_int(text_int(s)));
      return;
    }
    case 'L': push(make_int(text_int(line()))); return;  // LONG (text)
    case 'G': {                                          // BINFLOAT: big-endian double
      need(8);
      uint64_t u = 0;
      for (int i = 0; i < 8; ++i) u = (u << 8) | p_[pos_ + i];
      pos_ += 8;
      PyObject o = mk(PyKind::Float);
      std::memcpy(&o.f, &u, 8);
      push(add(std::move(o)));
      return;
    }
    case 'F': {  // FLOAT (text)
      std::string s = line();
      char* end = nullptr;
      PyObject o = mk(PyKind::Float);
      o.f = std::strtod(s.c_str(), &end);
      if (s.empty() || *end) bad("bad float '", printable(s), "'");
      push(add(std::move(o)));
      return;
    }
    case 0x8c: push(make_str(PyKind::Str, bytes(uint_le(1)))); return;    // SHORT_BINUNICODE
    case 'X': push(make_str(PyKind::Str, bytes(uint_le(4)))); return;     // BINUNICODE
    case 0x8d: push(make_str(PyKind::Str, bytes(uint_le(8)))); return;    // BINUNICODE8
    case 'U': push(make_str(PyKind::Str, bytes(uint_le(1)))); return;     // SHORT_BINSTRING
    case 'T': {                                                           // BINSTRING: int32 length
      uint32_t len = static_cast<uint32_t>(uint_le(4));
      if (len & 0x80000000u) bad("BINSTRING with a negative length");
      push(make_str(PyKind::Str, bytes(len)));
      return;
    }
    case 'S': push(make_str(PyKind::Str, quoted(line()))); return;        // STRING (text)
    case 'V': push(make_str(PyKind::Str, raw_unicode(line()))); return;   // UNICODE (text)
    case 'C': push(make_str(PyKind::Bytes, bytes(uint_le(1)))); return;   // SHORT_BINBYTES
    case 'B': push(make_str(PyKind::Bytes, bytes(uint_le(4)))); return;   // BINBYTES
    case 0x8e: push(make_str(PyKind::Bytes, bytes(uint_le(8)))); return;  // BINBYTES8
    case 0x96: push(make_str(PyKind::Bytes, bytes(uint_le(8)))); return;  // BYTEARRAY8
    case ')': push(make_seq(PyKind::Tuple, {})); return;                  // EMPTY_TUPLE
    case 't': push(make_seq(PyKind::Tuple, pop_mark())); return;          // TUPLE
    case 0x85:
    case 0x86:
    case 0x87: {  // TUPLE1..3
      std::vector<int> items(static_cast<size_t>(op - 0x84));
      for (size_t i = items.size(); i-- > 0;) items[i] = pop();
      push(make_seq(PyKind::Tuple, std::move(items)));
      return;
    }
    case ']': push(make_seq(PyKind::List, {})); return;  // EMPTY_LIST
    case 'l': push(make_seq(PyKind::List, pop_mark())); return;  // LIST
    case 'a': {                                          // APPEND
      int v = pop();
      append(top(), {v}, PyKind::List, "APPEND");
      return;
    }
    case 'e': {  // APPENDS
      std::vector<int> items = pop_mark();
      append(top(), items, PyKind::List, "APPENDS");
      return;
    }
    case '}': push(make_seq(PyKind::Dict, {})); return;  // EMPTY_DICT
    case 'd': {                                          // DICT
      std::vector<int> kv = pop_mark();
      if (kv.size() % 2) bad("DICT with an odd number of items");
      push(make_seq(PyKind::Dict, std::move(kv)));
      return;
    }
    case 's': {  // SETITEM
      int v = pop(), k = pop();
      set_items(top(), {k, v});
      return;
    }
    case 'u': {  // SETITEMS
      std::vector<int> kv = pop_mark();
      set_items(top(), kv);
      return;
    }
    case 0x8f: push(make_seq(PyKind::Set, {})); return;  // EMPTY_SET
    case 0x90: {                                         // ADDITEMS
      std::vector<int> items = pop_mark();
      append(top(), items, PyKind::Set, "ADDITEMS");
      return;
    }
    case 0x91: push(make_seq(PyKind::Set, pop_mark())); return;  // FROZENSET
    case 'q': memo_put(uint_le(1)); return;                      // BINPUT
    case 'r': memo_put(uint_le(4)); return;                      // LONG_BINPUT
    case 'p': memo_put(static_cast<uint64_t>(text_int(line()))); return;  // PUT (text)
    case 0x94: memo_put(memo_.size()); return;                   // MEMOIZE
    case 'h': memo_get(uint_le(1)); return;                      // BINGET
    case 'j': memo_get(uint_le(4)); return;                      // LONG_BINGET
    case 'g': memo_get(static_cast<uint64_t>(text_int(line()))); return;  // GET (text)
    case 'c': {                                                  // GLOBAL "module\nname\n"
      std::string module = line();
      std::string name = line();
      push(global(module, name));
      return;
    }
    case 0x93: {  // STACK_GLOBAL: module and name from the stack
      int name = pop(), module = pop();
      if (obj(module).kind != PyKind::Str || obj(name).kind != PyKind::Str)
        bad("STACK_GLOBAL needs two strings, got ", to_string(obj(module).kind), " and ", to_string(obj(name).kind));
      const std::string m = obj(module).s, n = obj(name).s;  // copies: global() grows the arena
      push(global(m, n));
      return;
    }
    case 'i': {  // INST: builds an instance of a named class
      std::string module = line();
      std::string name = line();
      refuse_global(where_, op_, module, name);
    }
    case 'o': bad("refusing to load: the OBJ opcode builds arbitrary objects; a checkpoint may only contain tensors");
    case 0x82:
    case 0x83:
    case 0x84: bad("refusing to load: an extension-registry code (EXT1/2/4) refers to a global indirectly");
    case 'R': {  // REDUCE: callable(*args)
      int args = pop(), fn = pop();
      PyGlobal g = global_of(fn, "REDUCE");
      if (obj(args).kind != PyKind::Tuple) bad("REDUCE arguments are a ", to_string(obj(args).kind), ", not a tuple");
      std::vector<int> a = obj(args).items;
      push(call(g, a, "REDUCE"));
      return;
    }
    case 0x81:    // NEWOBJ: cls.__new__(cls, *args)
    case 0x92: {  // NEWOBJ_EX: cls.__new__(cls, *args, **kwargs)
      if (op == 0x92) pop();
      int args = pop(), cls = pop();
      PyGlobal g = global_of(cls, "NEWOBJ");
      if (g != PyGlobal::OrderedDict && g != PyGlobal::Size) bad("NEWOBJ of ", obj(cls).s, " is not allowed");
      if (obj(args).kind != PyKind::Tuple) bad("NEWOBJ arguments are not a tuple");
      std::vector<int> a = obj(args).items;
      push(call(g, g == PyGlobal::OrderedDict ? std::vector<int>{} : a, "NEWOBJ"));
      return;
    }
    case 'b': {  // BUILD: the state of an OrderedDict (_metadata) or a tensor; ignored
      pop();
      PyKind k = obj(top()).kind;
      if (k != PyKind::Dict && k != PyKind::Tensor) bad("BUILD on a ", to_string(k), " is not allowed");
      return;
    }
    case 'Q': push(persistent_load(pop())); return;  // BINPERSID
    case 'P': bad("text persistent ids (PERSID) are not used by torch.save");
    case 0x97:
    case 0x98: bad("out-of-band buffers (NEXT_BUFFER/READONLY_BUFFER) are not supported");
    default: bad("unsupported pickle opcode 0x", "0123456789abcdef"[op >> 4], "0123456789abcdef"[op & 15]);
  }
}

}  // namespace

Pickle unpickle(const uint8_t* data, size_t size, const std::string& where) {
  Unpickler u(data, size, where);
  return u.run();
}

}  // namespace vitkit
