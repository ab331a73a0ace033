#include "vitkit/io/cifar.h"

#include <algorithm>
#include <sstream>

#include "vitkit/core/error.h"
#include "vitkit/core/file.h"

namespace vitkit {

namespace {

constexpr int kSide = 32;
constexpr size_t kPixels = 3 * kSide * kSide;  // 3072
constexpr size_t kRecord = 1 + kPixels;        // 3073

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// batches.meta.txt: one name a line; blank lines are ignored. Falls back to the
// standard names when the file is absent.
std::vector<std::string> read_meta_names(const std::string& dir) {
  const std::string path = dir + "/batches.meta.txt";
  if (!file_exists(path)) return cifar10_class_names();
  std::istringstream in(read_text_file(path));
  std::vector<std::string> names;
  for (std::string line; std::getline(in, line);)
    if (!trim(line).empty()) names.push_back(trim(line));
  check(!names.empty(), path, ": no class names (expected one a line)");
  check(names.size() <= 256, path, ": ", names.size(), " class names; a label byte can name at most 256");
  return names;
}

}  // namespace

const std::vector<std::string>& cifar10_class_names() {
  static const std::vector<std::string> names = {"airplane", "automobile", "bird",  "cat",  "deer",
                                                 "dog",      "frog",       "horse", "ship", "truck"};
  return names;
}

// Each batch file: a positive multiple of 3073 bytes; every label byte < classes.
CifarDataset::CifarDataset(const std::vector<std::string>& batch_files, std::vector<std::string> class_names,
                           std::string name, std::string dir)
    : name_(std::move(name)), dir_(std::move(dir)), names_(std::move(class_names)) {
  check(!batch_files.empty(), dir_, ": no CIFAR-10 batch files");
  for (const auto& path : batch_files) {
    uint64_t size = file_size(path);
    check(size > 0 && size % kRecord == 0, path, ": CIFAR-10 batch is ", size,
          " bytes, not a positive multiple of the 3073-byte record (1 label + 3072 pixels)");
    size_t start = records_.size();
    records_.resize(start + size);
    InputFile(path).read_at(0, records_.data() + start, size);
    for (uint64_t r = 0; r < size / kRecord; ++r) {
      int label = records_[start + r * kRecord];
      check(label < static_cast<int>(names_.size()), path, ": record ", r, " has label ", label,
            ", out of range for ", names_.size(), " classes");
    }
  }
  n_ = static_cast<int64_t>(records_.size() / kRecord);
}

int CifarDataset::label(int64_t i) const {
  check_index(i, n_, name_);
  return records_[size_t(i) * kRecord];
}

// Record planes R, G, B (each 32x32) -> HWC.
Image CifarDataset::image(int64_t i) const {
  check_index(i, n_, name_);
  const uint8_t* src = &records_[size_t(i) * kRecord + 1];
  Image img;
  img.width = img.height = kSide;
  img.channels = 3;
  img.pixels.resize(kPixels);
  for (int p = 0; p < kSide * kSide; ++p)
    for (int c = 0; c < 3; ++c) img.pixels[size_t(p) * 3 + c] = src[size_t(c) * kSide * kSide + p];
  return img;
}

std::string CifarDataset::describe() const {
  return cat(name_, " (", n_, " images, ", names_.size(), " classes, 32x32x3) from ", dir_);
}

std::string cifar_batches_dir(const std::string& dir) {
  for (const std::string& d : {dir, dir + "/cifar-10-batches-bin"})
    if (file_exists(d + "/data_batch_1.bin") || file_exists(d + "/test_batch.bin")) return d;
  return "";
}

std::unique_ptr<Dataset> open_cifar_folder(const std::string& dir, const std::string& split, const std::string& name) {
  check(split == "train" || split == "test", "unknown split '", split, "' (expected train or test)");
  std::string d = cifar_batches_dir(dir);
  check(!d.empty(), dir, ": not a CIFAR-10 binary folder (no data_batch_1.bin or test_batch.bin)");
  std::vector<std::string> files;
  if (split == "test") {
    files.push_back(d + "/test_batch.bin");
  } else {
    for (int b = 1; b <= 5; ++b) files.push_back(cat(d, "/data_batch_", b, ".bin"));
  }
  for (const auto& f : files) check(file_exists(f), f, ": missing CIFAR-10 ", split, " batch");
  return std::make_unique<CifarDataset>(files, read_meta_names(d), name + " " + split, d);
}

}  // namespace vitkit
