#include "vitkit/io/image_folder.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <utility>

#include "vitkit/core/error.h"
#include "vitkit/core/file.h"

namespace vitkit {

namespace fs = std::filesystem;

namespace {

constexpr int kMaxDepth = 32;  // symlink loops end here

bool ends_with_any(const std::string& name, std::initializer_list<const char*> exts) {
  std::string n = name;
  for (char& c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* e : exts) {
    std::string ext(e);
    if (n.size() >= ext.size() && n.compare(n.size() - ext.size(), ext.size(), ext) == 0) return true;
  }
  return false;
}

// Image formats torchvision lists but stb_image cannot decode.
bool is_unsupported_image(const std::string& name) { return ends_with_any(name, {".tif", ".tiff", ".webp"}); }

// Sorted names of the subdirectories of dir (symlinks followed, as os.scandir's is_dir()).
std::vector<std::string> subdirs(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  check(!ec, dir, ": cannot list folder: ", ec.message());
  for (const auto& e : it)
    if (is_directory(e.path().string())) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// One folder's (path, sorted file names) and those of its subfolders, recursively
// (os.walk with followlinks=True).
void walk(const std::string& dir, int depth, std::vector<std::pair<std::string, std::vector<std::string>>>* out) {
  check(depth <= kMaxDepth, dir, ": folders nested deeper than ", kMaxDepth, " levels (symlink loop?)");
  std::vector<std::string> files;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  check(!ec, dir, ": cannot list folder: ", ec.message());
  std::vector<std::string> dirs;
  for (const auto& e : it) {
    std::string name = e.path().filename().string();
    (is_directory(e.path().string()) ? dirs : files).push_back(name);
  }
  std::sort(files.begin(), files.end());
  out->emplace_back(dir, std::move(files));
  for (const auto& d : dirs) walk(dir + "/" + d, depth + 1, out);
}

}  // namespace

bool is_image_file_name(const std::string& name) {
  return ends_with_any(name, {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm"});
}

// root/CLASS/**/FILE -> (file, class index); folders sorted by path as torchvision's
// sorted(os.walk(...)), files sorted by name within a folder.
ImageFolderDataset::ImageFolderDataset(const std::string& root, std::string name)
    : root_(root), name_(std::move(name)) {
  check(is_directory(root), root, ": not a folder");
  names_ = subdirs(root);
  check(!names_.empty(), root, ": no class subfolders (an image folder needs one subfolder per class, "
                               "as torchvision's ImageFolder)");
  int64_t unsupported = 0;
  for (size_t c = 0; c < names_.size(); ++c) {
    std::vector<std::pair<std::string, std::vector<std::string>>> folders;
    walk(root + "/" + names_[c], 0, &folders);
    std::sort(folders.begin(), folders.end());
    size_t before = files_.size();
    for (const auto& [dir, fnames] : folders)
      for (const auto& f : fnames) {
        if (is_image_file_name(f)) {
          files_.push_back(dir + "/" + f);
          labels_.push_back(static_cast<int>(c));
        } else if (is_unsupported_image(f)) {
          ++unsupported;
        }
      }
    check(files_.size() > before, root, "/", names_[c],
          ": class folder holds no image files (.jpg .jpeg .png .bmp .ppm .pgm)");
  }
  if (unsupported)
    warn(cat(root, ": skipped ", unsupported, " .tif/.tiff/.webp files (not decodable here); "
             "indices differ from torchvision's ImageFolder"));
}

int ImageFolderDataset::label(int64_t i) const {
  check_index(i, size(), name_);
  return labels_[size_t(i)];
}

const std::string& ImageFolderDataset::path(int64_t i) const {
  check_index(i, size(), name_);
  return files_[size_t(i)];
}

Image ImageFolderDataset::image(int64_t i) const { return decode_image(path(i)); }

std::string ImageFolderDataset::describe() const {
  return cat(name_, " (", files_.size(), " images, ", names_.size(), " classes, image folder) from ", root_);
}

std::unique_ptr<Dataset> open_image_folder(const std::string& dir, const std::string& split, const std::string& name) {
  check(split == "train" || split == "test", "unknown split '", split, "' (expected train or test)");
  std::string root = dir;
  if (is_directory(dir + "/" + split)) {
    root = dir + "/" + split;
  } else {
    const char* other = split == "train" ? "test" : "train";
    check(!is_directory(dir + "/" + other), dir, ": has a ", other, "/ subfolder but no ", split,
          "/ subfolder for the ", split, " split");
  }
  return std::make_unique<ImageFolderDataset>(root, name + " " + split);
}

}  // namespace vitkit
