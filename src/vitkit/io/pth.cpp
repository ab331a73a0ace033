#include "vitkit/io/pth.h"

#include <zip.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/io/unpickler.h"

namespace vitkit {

namespace {

constexpr uint64_t kMaxPickle = 1ull << 30;       // data.pkl of any real state dict is far smaller
constexpr int64_t kMaxNumel = int64_t(1) << 40;    // elements of one tensor
constexpr int64_t kMaxExpanded = int64_t(1) << 28;  // elements of a view larger than its storage
constexpr uint64_t kMaxRatio = 1100;               // deflate cannot compress more than ~1032:1

const char* kLegacyHint =
    "re-save it in the zip format with PyTorch >= 1.6: "
    "torch.save(torch.load(OLD, map_location='cpu', weights_only=True), NEW)";

std::string zip_error_text(int code) {
  zip_error_t e;
  zip_error_init_with_code(&e, code);
  std::string s = zip_error_strerror(&e);
  zip_error_fini(&e);
  return s;
}

bool is_zip_magic(const uint8_t* b, size_t n) {
  return n >= 4 && b[0] == 'P' && b[1] == 'K' && ((b[2] == 3 && b[3] == 4) || (b[2] == 5 && b[3] == 6));
}

// A legacy torch.save file: a raw pickle stream (protocol 2 starts with 0x80 0x02)
// or a tar archive (PyTorch <= 0.3).
bool is_legacy_magic(const uint8_t* b, size_t n) {
  if (n >= 2 && b[0] == 0x80 && b[1] >= 1 && b[1] <= 5) return true;
  return n >= 262 && std::memcmp(b + 257, "ustar", 5) == 0;
}

CheckpointFormat sniff_bytes(const uint8_t* b, size_t n) {
  if (is_zip_magic(b, n)) return CheckpointFormat::TorchZip;
  if (is_legacy_magic(b, n)) return CheckpointFormat::TorchLegacy;
  if (n >= 9 && b[8] == '{') return CheckpointFormat::Safetensors;
  return CheckpointFormat::Unknown;
}

// Elements of a shape, or -1 beyond kMaxNumel.
int64_t checked_numel(const Shape& s) {
  __int128 n = 1;
  for (int64_t d : s) {
    n *= d;
    if (n > kMaxNumel) return -1;
  }
  return static_cast<int64_t>(n);
}

bool is_contiguous(const PthTensor& t) {
  int64_t expect = 1;
  for (size_t i = t.shape.size(); i-- > 0;) {
    if (t.shape[i] != 1 && t.stride[i] != expect) return false;
    expect *= t.shape[i];
  }
  return true;
}

}  // namespace

CheckpointFormat sniff_checkpoint(const std::string& path) {
  InputFile f(path);
  uint8_t b[512];
  size_t n = static_cast<size_t>(std::min<uint64_t>(f.size(), sizeof b));
  if (n) f.read_at(0, b, n);
  return sniff_bytes(b, n);
}

struct PthReader::Zip {
  zip_t* z = nullptr;
  ~Zip() {
    if (z) zip_discard(z);
  }
};

PthReader::PthReader(const std::string& path) : path_(path) { open(); }

PthReader::PthReader(const std::string& name, const uint8_t* data, size_t size)
    : path_(name), bytes_(data, data + size), in_memory_(true) {
  open();
}

PthReader::~PthReader() = default;

// Opens the zip (or explains what else the file is), finds the archive folder
// and parses data.pkl.
void PthReader::open() {
  uint8_t head[512];
  size_t n = 0;
  if (!in_memory_) {
    InputFile f(path_);
    archive_size_ = f.size();
    n = static_cast<size_t>(std::min<uint64_t>(f.size(), sizeof head));
    if (n) f.read_at(0, head, n);
  } else {
    archive_size_ = bytes_.size();
    n = std::min(bytes_.size(), sizeof head);
    if (n) std::memcpy(head, bytes_.data(), n);
  }
  const CheckpointFormat fmt = sniff_bytes(head, n);
  if (fmt == CheckpointFormat::TorchLegacy)
    fail(path_, ": this is PyTorch's legacy (pre-1.6, non-zip) checkpoint format, which vitkit does not read; ",
         kLegacyHint);
  if (fmt != CheckpointFormat::TorchZip)
    fail(path_, ": not a PyTorch checkpoint: torch.save writes a zip archive, and this file does not start with "
                "a zip signature");

  zip_ = std::make_unique<Zip>();
  const int flags = ZIP_RDONLY | ZIP_CHECKCONS;
  if (!in_memory_) {
    int code = 0;
    zip_->z = zip_open(path_.c_str(), flags, &code);
    if (!zip_->z) fail(path_, ": cannot read the zip archive (truncated or corrupted?): ", zip_error_text(code));
  } else {
    zip_error_t err;
    zip_error_init(&err);
    zip_source_t* src = zip_source_buffer_create(bytes_.data(), bytes_.size(), 0, &err);
    if (src) zip_->z = zip_open_from_source(src, flags, &err);
    if (!zip_->z) {
      if (src) zip_source_free(src);
      std::string msg = zip_error_strerror(&err);
      zip_error_fini(&err);
      fail(path_, ": cannot read the zip archive (truncated or corrupted?): ", msg);
    }
    zip_error_fini(&err);
  }

  // The archive folder: the one holding data.pkl (torch names it after the file).
  const zip_int64_t count = zip_get_num_entries(zip_->z, 0);
  std::vector<std::string> pkls;
  for (zip_int64_t i = 0; i < count; ++i) {
    const char* nm = zip_get_name(zip_->z, static_cast<zip_uint64_t>(i), ZIP_FL_ENC_RAW);
    if (!nm) continue;
    std::string s = nm;
    if (s == "data.pkl" || (s.size() > 9 && s.compare(s.size() - 9, 9, "/data.pkl") == 0 &&
                            s.find('/') == s.size() - 9))
      pkls.push_back(s);
  }
  if (pkls.empty())
    fail(path_, ": a zip archive without data.pkl: not a file written by torch.save");
  if (pkls.size() > 1)
    fail(path_, ": the zip archive holds several data.pkl (", printable(pkls[0]), ", ", printable(pkls[1]),
         "); expected one torch.save archive");
  prefix_ = pkls[0].substr(0, pkls[0].size() - 8);
  if (zip_name_locate(zip_->z, (prefix_ + "constants.pkl").c_str(), ZIP_FL_ENC_RAW) >= 0)
    fail(path_, ": this is a TorchScript archive (torch.jit.save), not a state dict; load it with torch.jit.load "
                "and save its weights with torch.save(model.state_dict(), PATH)");
  const zip_int64_t bo = zip_name_locate(zip_->z, (prefix_ + "byteorder").c_str(), ZIP_FL_ENC_RAW);
  if (bo >= 0) {
    zip_stat_t st;
    if (zip_stat_index(zip_->z, static_cast<zip_uint64_t>(bo), 0, &st) == 0 && st.size <= 16) {
      std::string order(static_cast<size_t>(st.size), '\0');
      read_entry(bo, prefix_ + "byteorder", 0, order.data(), order.size());
      if (order != "little")
        fail(path_, ": the checkpoint was written on a '", printable(order), "'-endian machine; vitkit reads "
                    "little-endian data only");
    }
  }
  load_pickle();
}

namespace {

bool has_tensor(const Pickle& pk, const PyObject& dict) {
  for (size_t i = 1; i < dict.items.size(); i += 2)
    if (pk.at(dict.items[i]).kind == PyKind::Tensor) return true;
  return false;
}

// The dict holding the tensors: under "model", "state_dict" or
// "model_state_dict" of a checkpoint dict, or the top-level dict itself.
const PyObject& find_state_dict(const Pickle& pk, const std::string& where, std::string* key) {
  const PyObject& root = pk.at(pk.root);
  if (root.kind == PyKind::Tensor) fail(where, ": the file holds a single tensor, not a state dict");
  if (root.kind != PyKind::Dict)
    fail(where, ": the file holds a ", to_string(root.kind), ", not a state dict (a dict of tensors)");
  for (const char* k : {"model", "state_dict", "model_state_dict"})
    for (size_t i = 0; i + 1 < root.items.size(); i += 2) {
      const PyObject& kk = pk.at(root.items[i]);
      const PyObject& v = pk.at(root.items[i + 1]);
      if (kk.kind == PyKind::Str && kk.s == k && v.kind == PyKind::Dict && has_tensor(pk, v)) {
        *key = k;
        return v;
      }
    }
  if (has_tensor(pk, root)) {
    key->clear();
    return root;
  }
  std::string keys;
  for (size_t i = 0; i + 1 < root.items.size() && i < 20; i += 2) {
    const PyObject& kk = pk.at(root.items[i]);
    keys += (i ? ", " : "") + (kk.kind == PyKind::Str ? printable(kk.s, 60) : std::string(to_string(kk.kind)));
  }
  fail(where, ": no tensors found: the file holds a dict with keys [", keys,
       "], and none of 'model', 'state_dict', 'model_state_dict' is a dict of tensors");
}

}  // namespace

void PthReader::load_pickle() {
  const std::string pkl_name = prefix_ + "data.pkl";
  const zip_int64_t idx = zip_name_locate(zip_->z, pkl_name.c_str(), ZIP_FL_ENC_RAW);
  zip_stat_t st;
  if (idx < 0 || zip_stat_index(zip_->z, static_cast<zip_uint64_t>(idx), 0, &st) != 0 ||
      !(st.valid & ZIP_STAT_SIZE))
    fail(path_, ": cannot stat ", printable(pkl_name), " in the archive");
  if (st.size > kMaxPickle) fail(path_, ": ", printable(pkl_name), " is ", st.size, " bytes, more than the 1 GiB cap");
  check_entry_size(st.size, st.comp_size, st.comp_method == ZIP_CM_STORE, cat(path_, ": ", printable(pkl_name)));
  std::vector<uint8_t> pkl(static_cast<size_t>(st.size));
  read_entry(idx, pkl_name, 0, pkl.data(), pkl.size());
  const std::string where = cat(path_, ": ", printable(pkl_name));
  const Pickle pk = unpickle(pkl.data(), pkl.size(), where);

  const PyObject& dict = find_state_dict(pk, path_, &dict_key_);
  for (size_t i = 0; i + 1 < dict.items.size(); i += 2) {
    const PyObject& k = pk.at(dict.items[i]);
    const PyObject& v = pk.at(dict.items[i + 1]);
    if (k.kind != PyKind::Str || v.kind != PyKind::Tensor) continue;  // epoch, optimizer, ...
    const PyTensor& pt = pk.tensors.at(static_cast<size_t>(v.i));
    const PyStorage& ps = pk.storages.at(static_cast<size_t>(pt.storage));
    PthTensor t;
    t.name = k.s;
    t.dtype = ps.dtype;
    t.shape = pt.size;
    t.stride = pt.stride;
    t.offset = pt.offset;
    t.storage = prefix_ + "data/" + ps.key;
    const std::string what = cat(path_, ": tensor '", printable(t.name), "'");

    // The storage's zip entry holds exactly numel elements of its dtype.
    if (ps.key.empty() || ps.key.find_first_of(std::string("/\0", 2)) != std::string::npos)
      fail(what, ": storage key '", printable(ps.key), "' is not a plain entry name");
    const zip_int64_t e = zip_name_locate(zip_->z, t.storage.c_str(), ZIP_FL_ENC_RAW);
    if (e < 0)
      fail(what, ": its storage ", printable(t.storage), " is missing from the archive (truncated or incomplete file?)");
    zip_stat_t es;
    if (zip_stat_index(zip_->z, static_cast<zip_uint64_t>(e), 0, &es) != 0 || !(es.valid & ZIP_STAT_SIZE))
      fail(what, ": cannot stat its storage ", printable(t.storage));
    const uint64_t need = static_cast<uint64_t>(ps.numel) * dtype_size(ps.dtype);
    if (es.size != need)
      fail(what, ": its storage ", printable(t.storage), " holds ", es.size, " bytes, but the pickle declares ",
           ps.numel, " ", dtype_name(ps.dtype), " elements (", need, " bytes)");
    check_entry_size(es.size, es.comp_size, es.comp_method == ZIP_CM_STORE,
                     cat(what, ": its storage ", printable(t.storage)));
    t.entry = e;

    // The view (offset, size, stride) stays inside the storage.
    const int64_t numel = checked_numel(t.shape);
    if (numel < 0) fail(what, ": shape ", shape_str(t.shape), " has more than 2^40 elements");
    if (numel > 0) {
      __int128 last = t.offset;
      for (size_t d = 0; d < t.shape.size(); ++d) last += static_cast<__int128>(t.shape[d] - 1) * t.stride[d];
      if (last >= ps.numel)
        fail(what, ": the view (offset ", t.offset, ", shape ", shape_str(t.shape), ", stride ",
             shape_str(t.stride), ") reaches element ", static_cast<int64_t>(last), " of a storage of ", ps.numel,
             " elements");
      if (numel > ps.numel && numel > kMaxExpanded)
        fail(what, ": a broadcast view of ", numel, " elements over a storage of ", ps.numel, " is too large");
    }
    t.contiguous = is_contiguous(t);
    auto it = index_.find(t.name);
    if (it != index_.end()) {
      tensors_[it->second] = std::move(t);  // a repeated key: the last value wins, as in Python
    } else {
      index_[t.name] = tensors_.size();
      tensors_.push_back(std::move(t));
    }
  }
}

void PthReader::read_entry(int64_t entry, const std::string& entry_name, uint64_t begin, void* dst,
                           size_t n) const {
  if (n == 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  zip_file_t* f = zip_fopen_index(zip_->z, static_cast<zip_uint64_t>(entry), 0);
  if (!f) fail(path_, ": cannot open ", printable(entry_name), " in the archive: ", zip_strerror(zip_->z));
  struct Closer {
    zip_file_t* f;
    ~Closer() { zip_fclose(f); }
  } closer{f};
  auto fread_all = [&](uint8_t* p, uint64_t len) {
    while (len > 0) {
      zip_int64_t r = zip_fread(f, p, len);
      if (r < 0) fail(path_, ": read error in ", printable(entry_name), ": ", zip_file_strerror(f));
      if (r == 0) fail(path_, ": ", printable(entry_name), " ends early: the archive is truncated or corrupted");
      p += r;
      len -= static_cast<uint64_t>(r);
    }
  };
  if (begin > 0 && zip_fseek(f, static_cast<zip_int64_t>(begin), SEEK_SET) != 0) {
    // A compressed entry cannot seek: read and discard up to begin.
    zip_fclose(f);
    closer.f = f = zip_fopen_index(zip_->z, static_cast<zip_uint64_t>(entry), 0);
    if (!f) fail(path_, ": cannot open ", printable(entry_name), " in the archive: ", zip_strerror(zip_->z));
    std::vector<uint8_t> skip(std::min<uint64_t>(begin, 1 << 20));
    for (uint64_t left = begin; left > 0;) {
      uint64_t k = std::min<uint64_t>(left, skip.size());
      fread_all(skip.data(), k);
      left -= k;
    }
  }
  fread_all(static_cast<uint8_t*>(dst), n);
}

const PthTensor& PthReader::find(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail(path_, ": no tensor named '", printable(name), "'");
  return tensors_[it->second];
}

void PthReader::check_entry_size(uint64_t size, uint64_t comp_size, bool stored, const std::string& what) const {
  if (stored && size > archive_size_)
    fail(what, " claims ", size, " bytes, more than the whole file (", archive_size_, " bytes): corrupted");
  if (!stored && (comp_size > archive_size_ || size > comp_size * kMaxRatio + 4096))
    fail(what, " claims ", size, " bytes from ", comp_size, " compressed: no zip compresses that much; corrupted");
}

std::vector<SourceTensor> PthReader::list() const {
  std::vector<SourceTensor> v;
  for (auto& t : tensors_) v.push_back({t.name, t.dtype, t.shape});
  return v;
}

// Contiguous: one read. Strided: read the span the view touches, then gather
// element by element in row-major order.
void PthReader::read_raw(const PthTensor& t, void* dst) const {
  const size_t es = dtype_size(t.dtype);
  const int64_t numel = t.numel();
  if (numel == 0) return;
  if (t.contiguous) {
    read_entry(t.entry, t.storage, static_cast<uint64_t>(t.offset) * es, dst, static_cast<size_t>(numel) * es);
    return;
  }
  int64_t span = 1;
  for (size_t d = 0; d < t.shape.size(); ++d) span += (t.shape[d] - 1) * t.stride[d];
  std::vector<uint8_t> src(static_cast<size_t>(span) * es);
  read_entry(t.entry, t.storage, static_cast<uint64_t>(t.offset) * es, src.data(), src.size());
  const size_t nd = t.shape.size();
  std::vector<int64_t> idx(nd, 0);
  uint8_t* out = static_cast<uint8_t*>(dst);
  int64_t at = 0;  // element offset of idx in src
  for (int64_t i = 0; i < numel; ++i) {
    std::memcpy(out + static_cast<size_t>(i) * es, src.data() + static_cast<size_t>(at) * es, es);
    for (size_t d = nd; d-- > 0;) {  // increment the multi-index, last dimension fastest
      if (++idx[d] < t.shape[d]) {
        at += t.stride[d];
        break;
      }
      at -= (t.shape[d] - 1) * t.stride[d];
      idx[d] = 0;
    }
  }
}

Tensor PthReader::read(const std::string& name) const {
  const PthTensor& t = find(name);
  Tensor out = Tensor::empty(t.shape, t.dtype);
  read_raw(t, out.raw());
  return out;
}

void PthReader::read_f32(const std::string& name, float* dst) const {
  const PthTensor& t = find(name);
  if (t.dtype == DType::F32) {
    read_raw(t, dst);
    return;
  }
  Tensor raw = read(name);
  convert_to_f32(t.dtype, raw.raw(), dst, static_cast<size_t>(raw.numel()));
}

}  // namespace vitkit
