#include "vitkit/io/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <filesystem>

#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/tensor.h"

namespace vitkit {

namespace {

constexpr int64_t kMaxSide = 1 << 14;            // rows, cols
constexpr int64_t kMaxBytes = int64_t(1) << 36;  // 64 GiB of pixels: anything bigger is corrupt
constexpr uint64_t kMaxDeflateRatio = 1032;      // deflate cannot expand more than this

// A gzip or plain file read sequentially (zlib's gzread passes plain files through).
class GzReader {
 public:
  explicit GzReader(const std::string& path) : path_(path) {
    compressed_size_ = file_size(path);  // throws "cannot open" with the reason
    f_ = gzopen(path.c_str(), "rb");
    check(f_ != nullptr, path, ": cannot open for reading");
    gzbuffer(f_, 1 << 17);
    gzipped_ = !gzdirect(f_);
  }
  ~GzReader() {
    if (f_) gzclose(f_);
  }
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;

  // Reads up to n bytes; returns how many were read (< n only at end of data).
  uint64_t read(void* dst, uint64_t n) {
    uint8_t* p = static_cast<uint8_t*>(dst);
    uint64_t done = 0;
    while (done < n) {
      unsigned chunk = static_cast<unsigned>(std::min<uint64_t>(n - done, 1u << 30));
      int r = gzread(f_, p + done, chunk);
      if (r < 0) fail(path_, ": read error: ", error_text());
      if (r == 0) break;
      done += static_cast<uint64_t>(r);
    }
    return done;
  }
  // zlib's message for a failed or truncated stream, or "".
  std::string error_text() {
    int err = Z_OK;
    const char* msg = gzerror(f_, &err);
    return err == Z_OK || !msg ? std::string() : std::string(msg);
  }
  bool gzipped() const { return gzipped_; }
  uint64_t compressed_size() const { return compressed_size_; }

 private:
  std::string path_;
  gzFile f_ = nullptr;
  bool gzipped_ = false;
  uint64_t compressed_size_ = 0;
};

uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}

// Header: magic (4 bytes: 0, 0, type, ndim) + ndim big-endian uint32 dims.
std::vector<int64_t> read_idx_header(GzReader& in, const std::string& path, int ndim) {
  uint8_t magic[4];
  check(in.read(magic, 4) == 4, path, ": not an IDX file: shorter than the 4-byte magic");
  check(magic[0] == 0 && magic[1] == 0, path, ": not an IDX file: bad magic ", int(magic[0]), " ", int(magic[1]),
        " (expected 0 0)", in.gzipped() ? "" : " (plain file; IDX files may also be gzipped)");
  check(magic[2] == 0x08, path, ": IDX data type 0x", std::hex, int(magic[2]), std::dec,
        " is not supported (only unsigned byte, 0x08)");
  check(magic[3] == ndim, path, ": IDX file has ", int(magic[3]), " dimensions, expected ", ndim,
        ndim == 3 ? " (images: count, rows, cols)" : " (labels: count)");
  std::vector<uint8_t> raw(4 * size_t(ndim));
  check(in.read(raw.data(), raw.size()) == raw.size(), path, ": truncated IDX header (", ndim, " dimensions)");
  std::vector<int64_t> dims;
  for (int i = 0; i < ndim; ++i) dims.push_back(be32(&raw[4 * size_t(i)]));
  return dims;
}

// Checks dims against the caps and, for plain files, the file size; returns the data size.
uint64_t idx_data_size(const std::vector<int64_t>& dims, const GzReader& in, const std::string& path) {
  check(dims[0] > 0, path, ": IDX file holds 0 items");
  uint64_t bytes = static_cast<uint64_t>(dims[0]);
  for (size_t i = 1; i < dims.size(); ++i) {
    check(dims[i] > 0 && dims[i] <= kMaxSide, path, ": IDX dimension ", i, " is ", dims[i],
          " (expected 1..", kMaxSide, ")");
    bytes *= static_cast<uint64_t>(dims[i]);
  }
  check(bytes <= uint64_t(kMaxBytes), path, ": IDX header claims ", bytes, " bytes of data: corrupted?");
  const uint64_t header = 4 + 4 * dims.size();
  if (!in.gzipped())
    check(header + bytes == in.compressed_size(), path, ": IDX file is ", in.compressed_size(),
          " bytes but its header (dims ", shape_str(dims), ") says ", header + bytes,
          in.compressed_size() < header + bytes ? ": truncated" : ": trailing bytes");
  else
    check(bytes <= in.compressed_size() * kMaxDeflateRatio, path, ": IDX header claims ", bytes,
          " bytes, more than a ", in.compressed_size(), "-byte gzip file can hold: corrupted");
  return bytes;
}

// Reads exactly `bytes` of data and checks that nothing follows.
std::vector<uint8_t> read_idx_data(GzReader& in, uint64_t bytes, const std::string& path,
                                   const std::vector<int64_t>& dims) {
  std::vector<uint8_t> data(bytes);
  uint64_t got = in.read(data.data(), bytes);
  if (got != bytes) {
    std::string why = in.error_text();
    fail(path, ": truncated IDX file: dims ", shape_str(dims), " need ", bytes, " data bytes but only ", got,
         " could be read", why.empty() ? "" : " (" + why + ")");
  }
  uint8_t extra;
  check(in.read(&extra, 1) == 0, path, ": IDX file has trailing bytes after the ", bytes, " data bytes its dims ",
        shape_str(dims), " describe");
  std::string why = in.error_text();
  check(why.empty(), path, ": corrupted gzip stream: ", why);
  return data;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The first existing file among dir/{prefix}{kind}{"", ".gz"}.
std::string find_idx_file(const std::string& dir, const std::vector<std::string>& prefixes,
                          const std::vector<std::string>& kinds, std::string* tried) {
  for (auto& p : prefixes)
    for (auto& k : kinds)
      for (const char* gz : {".gz", ""}) {
        std::string path = dir + "/" + p + k + gz;
        if (file_exists(path)) return path;
        if (tried->size() < 400) *tried += (tried->empty() ? "" : ", ") + p + k + gz;
      }
  return "";
}

std::vector<std::string> number_names(int n) {
  std::vector<std::string> names;
  for (int i = 0; i < n; ++i) names.push_back(std::to_string(i));
  return names;
}

}  // namespace

IdxArray read_idx(const std::string& path, int ndim) {
  GzReader in(path);
  IdxArray a;
  a.dims = read_idx_header(in, path, ndim);
  uint64_t bytes = idx_data_size(a.dims, in, path);
  a.data = read_idx_data(in, bytes, path, a.dims);
  return a;
}

const std::vector<std::string>& fashion_mnist_class_names() {
  static const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                 "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return names;
}

// images (N, rows, cols) + labels (N) -> dataset; labels must be < classes.
IdxDataset::IdxDataset(const std::string& images_path, const std::string& labels_path,
                       std::vector<std::string> class_names, std::string name)
    : name_(std::move(name)), names_(std::move(class_names)) {
  dir_ = std::filesystem::path(images_path).parent_path().string();
  IdxArray images = read_idx(images_path, 3);
  IdxArray labels = read_idx(labels_path, 1);
  check(images.dims[0] == labels.dims[0], images_path, " holds ", images.dims[0], " images but ", labels_path,
        " holds ", labels.dims[0], " labels: the counts must agree");
  n_ = images.dims[0];
  rows_ = static_cast<int>(images.dims[1]);
  cols_ = static_cast<int>(images.dims[2]);
  pixels_ = std::move(images.data);
  labels_ = std::move(labels.data);
  int max_label = *std::max_element(labels_.begin(), labels_.end());
  if (names_.empty()) names_ = number_names(std::max(10, max_label + 1));
  for (int64_t i = 0; i < n_; ++i)
    check(labels_[i] < names_.size(), labels_path, ": label ", int(labels_[i]), " of item ", i,
          " is out of range for ", names_.size(), " classes");
}

int IdxDataset::label(int64_t i) const {
  check_index(i, n_, name_);
  return labels_[i];
}

Image IdxDataset::image(int64_t i) const {
  check_index(i, n_, name_);
  Image img;
  img.width = cols_;
  img.height = rows_;
  img.channels = 1;
  const size_t n = size_t(rows_) * cols_;
  img.pixels.assign(pixels_.begin() + i * n, pixels_.begin() + (i + 1) * n);
  return img;
}

std::string IdxDataset::describe() const {
  return cat(name_, " (", n_, " images, ", names_.size(), " classes, ", rows_, "x", cols_, "x1) from ", dir_);
}

bool is_idx_folder(const std::string& dir) {
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator(dir, ec)) {
    std::string n = lower(e.path().filename().string());
    if (n.find("images-idx3-ubyte") != std::string::npos || n.find("images.idx3-ubyte") != std::string::npos)
      return true;
  }
  return false;
}

std::unique_ptr<Dataset> open_idx_folder(const std::string& dir, const std::string& split, const std::string& name,
                                         std::vector<std::string> class_names) {
  check(split == "train" || split == "test", "unknown split '", split, "' (expected train or test)");
  std::vector<std::string> prefixes = split == "train" ? std::vector<std::string>{"train"}
                                                       : std::vector<std::string>{"t10k", "test"};
  std::string tried_img, tried_lab;
  std::string images = find_idx_file(dir, prefixes, {"-images-idx3-ubyte", "-images.idx3-ubyte"}, &tried_img);
  std::string labels = find_idx_file(dir, prefixes, {"-labels-idx1-ubyte", "-labels.idx1-ubyte"}, &tried_lab);
  check(!images.empty(), dir, ": no IDX ", split, " images (looked for ", tried_img, ")");
  check(!labels.empty(), dir, ": no IDX ", split, " labels (looked for ", tried_lab, ")");
  std::string folder = lower(std::filesystem::path(dir).lexically_normal().filename().string());
  if (folder.empty()) folder = lower(std::filesystem::path(dir).lexically_normal().parent_path().filename().string());
  if (class_names.empty() && folder.find("fashion") != std::string::npos) class_names = fashion_mnist_class_names();
  return std::make_unique<IdxDataset>(images, labels, std::move(class_names), name + " " + split);
}

}  // namespace vitkit
