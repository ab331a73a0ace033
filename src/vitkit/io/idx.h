// IDX files (the MNIST / Fashion-MNIST format), plain or gzipped: a big-endian
// magic 0x00 0x00 TYPE NDIM (TYPE 0x08 = unsigned byte), NDIM big-endian uint32
// dimensions, then prod(dims) bytes, nothing after. Images are (N, rows, cols),
// labels (N).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "vitkit/io/dataset.h"

namespace vitkit {

struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;  // prod(dims) bytes
};

// Reads an unsigned-byte IDX file of `ndim` dimensions (gzip detected by its
// magic). Checks the magic, type, dims and that the data is exactly as long as
// the dims say.
IdxArray read_idx(const std::string& path, int ndim);

// Images (N, rows, cols) and labels (N) from two IDX files.
class IdxDataset : public Dataset {
 public:
  // Throws when the counts differ or a label is >= class_names.size().
  // `name` starts describe() ("fashion-mnist test").
  IdxDataset(const std::string& images_path, const std::string& labels_path,
             std::vector<std::string> class_names, std::string name);
  int64_t size() const override { return n_; }
  int classes() const override { return static_cast<int>(names_.size()); }
  std::vector<std::string> class_names() const override { return names_; }
  int label(int64_t i) const override;
  Image image(int64_t i) const override;
  std::string describe() const override;
  int rows() const { return rows_; }
  int cols() const { return cols_; }

 private:
  std::string name_, dir_;
  int64_t n_ = 0;
  int rows_ = 0, cols_ = 0;
  std::vector<uint8_t> pixels_, labels_;
  std::vector<std::string> names_;
};

// Fashion-MNIST's ten class names, T-shirt/top .. Ankle boot.
const std::vector<std::string>& fashion_mnist_class_names();

// True when dir holds IDX image files ("*-images-idx3-ubyte[.gz]" or "*images.idx3-ubyte[.gz]").
bool is_idx_folder(const std::string& dir);

// Opens {train,t10k|test}-{images-idx3,labels-idx1}-ubyte[.gz] in dir. With no
// class_names, the names are Fashion-MNIST's when the folder name says
// "fashion", else "0".."9" (or up to the largest label).
std::unique_ptr<Dataset> open_idx_folder(const std::string& dir, const std::string& split, const std::string& name,
                                         std::vector<std::string> class_names = {});

}  // namespace vitkit
