// Files: whole-file reads with clear errors, and atomic writes (a temporary file
// beside the target, renamed into place only when everything was written).
#pragma once
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace vitkit {

std::vector<uint8_t> read_file(const std::string& path);
std::string read_text_file(const std::string& path);
bool file_exists(const std::string& path);
bool is_directory(const std::string& path);
uint64_t file_size(const std::string& path);

// Calls write(FILE*) on a temporary file next to `path`, flushes and fsyncs it,
// then renames it to `path`. On any error the temporary file is removed and the
// target is left untouched.
void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& write);
void write_text_atomic(const std::string& path, const std::string& text);
// fwrite that throws on a short write.
void write_all(std::FILE* f, const void* data, size_t n, const std::string& path);

// An open file for reading at offsets (pread), with the file name in every error.
class InputFile {
 public:
  explicit InputFile(const std::string& path);
  ~InputFile();
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Reads exactly n bytes at offset; throws if the file is shorter.
  void read_at(uint64_t offset, void* dst, size_t n) const;

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

}  // namespace vitkit
