// PyTorch checkpoints written by torch.save in its zip format (the default since
// PyTorch 1.6), read without running any Python:
//   <archive>/data.pkl     the pickled object; each tensor is _rebuild_tensor_v2 of
//                          a persistent id ('storage', torch.FloatStorage, key,
//                          location, numel), read by the restricted unpickler
//   <archive>/data/<key>   each storage's raw little-endian bytes (numel elements)
//   <archive>/version, <archive>/byteorder ("little"; optional)
// <archive> is the folder holding data.pkl. The tensors are the state dict: the
// top-level dict, or the one under "model", "state_dict" or "model_state_dict"
// of a checkpoint dict; other values (epoch, optimizer state) are skipped.
// Tensors are strided views (offset, size, stride) into storages, possibly
// shared; every view is checked against its storage, and every storage against
// its zip entry, before anything is read. Tensor data is read on demand.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "vitkit/io/tensor_source.h"

namespace vitkit {

struct PthTensor {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  std::vector<int64_t> stride;  // elements
  int64_t offset = 0;           // elements into the storage
  std::string storage;          // zip entry name, "<archive>/data/<key>"
  int64_t entry = -1;           // its libzip index
  bool contiguous = true;       // row-major and dense
  int64_t numel() const { return shape_numel(shape); }
};

class PthReader : public TensorSource {
 public:
  // Opens the file, parses data.pkl and validates every tensor against the
  // archive. Throws Error naming the file: not a zip (a legacy torch file gets a
  // hint to re-save it), no data.pkl, a refused global, a missing data entry, a
  // storage or view that does not fit.
  explicit PthReader(const std::string& path);
  // The same from bytes in memory (copied); name is used in messages.
  PthReader(const std::string& name, const uint8_t* data, size_t size);
  ~PthReader() override;

  std::string path() const override { return path_; }
  std::vector<SourceTensor> list() const override;
  void read_f32(const std::string& name, float* dst) const override;
  Tensor read(const std::string& name) const override;

  const std::vector<PthTensor>& tensors() const { return tensors_; }
  // Where the state dict was found: "" (the top-level object), "model", ...
  const std::string& state_dict_key() const { return dict_key_; }

 private:
  struct Zip;
  void open();
  void load_pickle();
  const PthTensor& find(const std::string& name) const;
  // Checks that an entry's declared size is possible in this archive: stored
  // data no larger than the file, compressed data at most ~1100 times its size.
  void check_entry_size(uint64_t size, uint64_t comp_size, bool stored, const std::string& what) const;
  // Reads bytes [begin, begin + n) of zip entry `entry` into dst.
  void read_entry(int64_t entry, const std::string& entry_name, uint64_t begin, void* dst, size_t n) const;
  // The tensor's elements, row-major, in its dtype, into dst (numel * dtype_size bytes).
  void read_raw(const PthTensor& t, void* dst) const;

  std::string path_;
  std::vector<uint8_t> bytes_;  // the file, when read from memory
  bool in_memory_ = false;
  std::unique_ptr<Zip> zip_;
  mutable std::mutex mu_;       // libzip handles are not thread-safe
  std::string prefix_;          // "<archive>/"
  std::string dict_key_;
  uint64_t archive_size_ = 0;
  std::vector<PthTensor> tensors_;
  std::map<std::string, size_t> index_;  // name -> tensors_ index
};

enum class CheckpointFormat { Safetensors, TorchZip, TorchLegacy, Unknown };
// What a file is, from its first bytes: a zip (torch.save), a legacy torch file
// (a raw pickle or a tar), safetensors (a length then '{'), or unknown.
CheckpointFormat sniff_checkpoint(const std::string& path);

}  // namespace vitkit
