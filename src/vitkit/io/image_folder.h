// Image folders as torchvision's ImageFolder reads them: each subfolder of the
// root is a class (sorted names give the class indices), its image files
// (.jpg .jpeg .png .bmp .ppm .pgm, any case, searched recursively) are the
// samples, ordered as torchvision orders them (folders by path, files by name).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "vitkit/io/dataset.h"

namespace vitkit {

class ImageFolderDataset : public Dataset {
 public:
  // Lists the folder; throws when it has no class subfolders or a class has no
  // images. `name` starts describe() ("cifar10-test test").
  ImageFolderDataset(const std::string& root, std::string name);
  int64_t size() const override { return static_cast<int64_t>(files_.size()); }
  int classes() const override { return static_cast<int>(names_.size()); }
  std::vector<std::string> class_names() const override { return names_; }
  int label(int64_t i) const override;
  Image image(int64_t i) const override;  // decoded from its file
  std::string describe() const override;
  const std::string& path(int64_t i) const;

 private:
  std::string root_, name_;
  std::vector<std::string> names_, files_;
  std::vector<int> labels_;
};

// True for the extensions above (case-insensitive).
bool is_image_file_name(const std::string& name);

// The split folder: dir/split when it exists; dir itself when dir has neither
// train/ nor test/; otherwise an error.
std::unique_ptr<Dataset> open_image_folder(const std::string& dir, const std::string& split, const std::string& name);

}  // namespace vitkit
