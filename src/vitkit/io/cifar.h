// CIFAR-10 binary batches (cifar-10-batches-bin): records of 1 label byte and
// 3072 pixel bytes (a 32x32 R plane, then G, then B, rows top to bottom);
// data_batch_1..5.bin form the train split, test_batch.bin the test split;
// batches.meta.txt (one class name a line) names the classes when present.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "vitkit/io/dataset.h"

namespace vitkit {

class CifarDataset : public Dataset {
 public:
  // Reads and validates every batch (size a positive multiple of 3073 bytes,
  // labels < class_names.size()). `name` starts describe() ("cifar10 test").
  CifarDataset(const std::vector<std::string>& batch_files, std::vector<std::string> class_names, std::string name,
               std::string dir);
  int64_t size() const override { return n_; }
  int classes() const override { return static_cast<int>(names_.size()); }
  std::vector<std::string> class_names() const override { return names_; }
  int label(int64_t i) const override;
  Image image(int64_t i) const override;  // 32x32x3 HWC
  std::string describe() const override;

 private:
  std::string name_, dir_;
  int64_t n_ = 0;
  std::vector<uint8_t> records_;  // n_ * 3073 bytes as in the files
  std::vector<std::string> names_;
};

// airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck.
const std::vector<std::string>& cifar10_class_names();

// The folder holding the batches: dir itself or dir/cifar-10-batches-bin; "" if neither.
std::string cifar_batches_dir(const std::string& dir);

// Opens the split's batches in dir (see cifar_batches_dir).
std::unique_ptr<Dataset> open_cifar_folder(const std::string& dir, const std::string& split, const std::string& name);

}  // namespace vitkit
