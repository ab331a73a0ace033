// Datasets of labelled images: the abstraction every reader implements, and
// open_dataset, which turns a --data spec and a split into a reader.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "vitkit/io/image.h"

namespace vitkit {

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual int classes() const = 0;
  virtual std::vector<std::string> class_names() const = 0;
  // Label of image i, in [0, classes()).
  virtual int label(int64_t i) const = 0;
  // Image i (decoded). Thread-safe: called concurrently from OpenMP threads.
  virtual Image image(int64_t i) const = 0;
  // One line: "fashion-mnist test (10000 images, 10 classes, 28x28x1) from /usr/share/..."
  virtual std::string describe() const = 0;
};

// spec: "fashion-mnist" | "mnist" | "cifar10" | a path (an IDX folder, a CIFAR-10
// binary folder, or an image folder with one subfolder per class);
// split: "train" | "test". Throws vitkit::Error naming the file and the problem
// for missing or malformed files, and listing where it looked for named datasets.
std::unique_ptr<Dataset> open_dataset(const std::string& spec, const std::string& split);

// Where the named datasets are searched, in order (existing or not).
std::vector<std::string> dataset_search_dirs(const std::string& name);

// The first n images of a class-interleaved order (class 0's first image,
// class 1's first, ..., then each class's second, ...; classes that run out
// drop out), in dataset order within a class: deterministic, and balanced
// over classes as far as they allow. n <= 0 or n >= size: every image.
std::vector<int64_t> balanced_indices(const Dataset& ds, int64_t n);

// A held-out set: the n images taken from the END of each class (class 0's
// last image, class 1's last, ..., then each class's second-to-last, ...),
// skipping the indices in `exclude` (e.g. calibration images, which
// balanced_indices takes from the front), returned in ascending order. The
// datasets carry no validation split, so this is how a study measures on
// training images that no calibration used. n <= 0: every image not excluded.
std::vector<int64_t> heldout_indices(const Dataset& ds, int64_t n, const std::vector<int64_t>& exclude = {});

// The images `indices` of ds (which must outlive it) as a dataset of their
// own: image i is ds's indices[i]. describe() is ds's with `what` appended.
std::unique_ptr<Dataset> subset_dataset(const Dataset& ds, std::vector<int64_t> indices, const std::string& what);

// Throws if i is outside [0, size) (used by the readers; `what` names the dataset).
void check_index(int64_t i, int64_t size, const std::string& what);

}  // namespace vitkit
