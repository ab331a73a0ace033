#include "vitkit/io/dataset.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/io/cifar.h"
#include "vitkit/io/idx.h"
#include "vitkit/io/image_folder.h"

namespace vitkit {

namespace fs = std::filesystem;

namespace {

// Directory of the running executable, or "" when /proc is unavailable.
std::string exe_dir() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : p.parent_path().string();
}

// Bases that may hold named datasets: $VITKIT_DATA, ../shared/data from the
// current directory and from the executable's ancestors (its repository), and
// Debian's /usr/share/datasets.
std::vector<std::string> data_bases() {
  std::vector<std::string> bases;
  if (const char* env = std::getenv("VITKIT_DATA"); env && *env) bases.push_back(env);
  std::error_code ec;
  fs::path cwd = fs::current_path(ec);
  if (!ec) bases.push_back((cwd / ".." / "shared" / "data").lexically_normal().string());
  fs::path dir = exe_dir();
  for (int up = 0; up < 4 && !dir.empty() && dir != dir.root_path(); ++up, dir = dir.parent_path())
    bases.push_back((dir / ".." / "shared" / "data").lexically_normal().string());
  bases.push_back("/usr/share/datasets");
  std::vector<std::string> unique;
  for (auto& b : bases)
    if (std::find(unique.begin(), unique.end(), b) == unique.end()) unique.push_back(b);
  return unique;
}

// Folder names a named dataset may have under a base.
std::vector<std::string> folder_names(const std::string& name, const std::string& split) {
  if (name == "cifar10") {
    std::vector<std::string> n = {"cifar10", "cifar-10-batches-bin"};
    if (split == "test") n.push_back("cifar10-test");  // the JPEG image folder in shared/data
    return n;
  }
  return {name};
}

// A folder: IDX, CIFAR-10 binary or image folder, detected from its contents.
std::unique_ptr<Dataset> open_folder(const std::string& dir, const std::string& split, const std::string& name) {
  if (is_idx_folder(dir)) return open_idx_folder(dir, split, name);
  if (!cifar_batches_dir(dir).empty()) return open_cifar_folder(dir, split, name);
  return open_image_folder(dir, split, name);
}

// The first existing folder for a named dataset; the error lists where it looked.
std::unique_ptr<Dataset> open_named(const std::string& name, const std::string& split) {
  std::vector<std::string> tried;
  for (const auto& base : data_bases())
    for (const auto& folder : folder_names(name, split)) {
      std::string dir = base + "/" + folder;
      if (!is_directory(dir)) {
        tried.push_back(dir);
        continue;
      }
      if (name == "fashion-mnist") return open_idx_folder(dir, split, name, fashion_mnist_class_names());
      if (name == "mnist") return open_idx_folder(dir, split, name, {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"});
      return open_folder(dir, split, name);
    }
  std::string where;
  for (auto& t : tried) where += "\n  " + t;
  const char* hint = name == "fashion-mnist" ? "\nhint: apt-get install dataset-fashion-mnist"
                                             : "\nhint: set VITKIT_DATA to a folder holding it";
  fail("dataset '", name, "' not found; looked in:", where, hint);
}

}  // namespace

std::vector<std::string> dataset_search_dirs(const std::string& name) {
  std::vector<std::string> out;
  for (const auto& base : data_bases())
    for (const auto& folder : folder_names(name, "test")) out.push_back(base + "/" + folder);
  return out;
}

void check_index(int64_t i, int64_t size, const std::string& what) {
  if (i < 0 || i >= size) fail(what, ": image index ", i, " out of range [0, ", size, ")");
}

std::unique_ptr<Dataset> open_dataset(const std::string& spec, const std::string& split) {
  if (split != "train" && split != "test") throw UsageError(cat("unknown split '", split, "' (expected train or test)"));
  if (spec == "fashion-mnist" || spec == "mnist" || spec == "cifar10") return open_named(spec, split);
  if (!file_exists(spec))
    fail("dataset '", spec, "': no such file or folder (expected fashion-mnist, mnist, cifar10, or a folder: "
         "IDX, CIFAR-10 binary, or an image folder with one subfolder per class)");
  check(is_directory(spec), spec, ": is a file; a dataset is a folder (IDX, CIFAR-10 binary, or image folder)");
  std::string name = fs::path(spec).lexically_normal().filename().string();
  if (name.empty()) name = fs::path(spec).lexically_normal().parent_path().filename().string();
  return open_folder(spec, split, name.empty() ? spec : name);
}

std::vector<int64_t> balanced_indices(const Dataset& ds, int64_t n) {
  const int64_t N = ds.size();
  if (n <= 0 || n > N) n = N;
  std::vector<std::vector<int64_t>> by_class(size_t(std::max(1, ds.classes())));
  for (int64_t i = 0; i < N; ++i) {
    const int c = ds.label(i);
    check(c >= 0 && c < int(by_class.size()), ds.describe(), ": image ", i, " has label ", c, " outside 0..",
          by_class.size() - 1);
    by_class[size_t(c)].push_back(i);
  }
  std::vector<int64_t> out;
  out.reserve(size_t(n));
  for (size_t round = 0; int64_t(out.size()) < n; ++round)
    for (auto& c : by_class)
      if (round < c.size() && int64_t(out.size()) < n) out.push_back(c[round]);
  return out;
}

std::vector<int64_t> heldout_indices(const Dataset& ds, int64_t n, const std::vector<int64_t>& exclude) {
  const std::set<int64_t> skip(exclude.begin(), exclude.end());
  std::vector<std::vector<int64_t>> by_class(size_t(std::max(1, ds.classes())));
  for (int64_t i = ds.size() - 1; i >= 0; --i) {
    const int c = ds.label(i);
    check(c >= 0 && c < int(by_class.size()), ds.describe(), ": image ", i, " has label ", c, " outside 0..",
          by_class.size() - 1);
    if (!skip.count(i)) by_class[size_t(c)].push_back(i);
  }
  int64_t avail = 0;
  for (auto& c : by_class) avail += int64_t(c.size());
  if (n <= 0 || n > avail) n = avail;
  std::vector<int64_t> out;
  out.reserve(size_t(n));
  for (size_t round = 0; int64_t(out.size()) < n; ++round)
    for (auto& c : by_class)
      if (round < c.size() && int64_t(out.size()) < n) out.push_back(c[round]);
  std::sort(out.begin(), out.end());
  return out;
}

namespace {

class SubsetDataset : public Dataset {
 public:
  SubsetDataset(const Dataset& ds, std::vector<int64_t> idx, std::string what)
      : ds_(ds), idx_(std::move(idx)), what_(std::move(what)) {
    for (int64_t i : idx_) check_index(i, ds_.size(), ds_.describe());
  }
  int64_t size() const override { return int64_t(idx_.size()); }
  int classes() const override { return ds_.classes(); }
  std::vector<std::string> class_names() const override { return ds_.class_names(); }
  int label(int64_t i) const override { return ds_.label(at(i)); }
  Image image(int64_t i) const override { return ds_.image(at(i)); }
  std::string describe() const override { return ds_.describe() + ", " + what_; }

 private:
  int64_t at(int64_t i) const {
    check_index(i, size(), describe());
    return idx_[size_t(i)];
  }
  const Dataset& ds_;
  std::vector<int64_t> idx_;
  std::string what_;
};

}  // namespace

std::unique_ptr<Dataset> subset_dataset(const Dataset& ds, std::vector<int64_t> indices, const std::string& what) {
  return std::make_unique<SubsetDataset>(ds, std::move(indices), what);
}

}  // namespace vitkit
