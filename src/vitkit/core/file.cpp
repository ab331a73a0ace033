#include "vitkit/core/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "vitkit/core/error.h"

namespace vitkit {

static std::string errno_str() { return std::strerror(errno); }

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool is_directory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

uint64_t file_size(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) fail(path, ": cannot open: ", errno_str());
  return static_cast<uint64_t>(st.st_size);
}

InputFile::InputFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail(path, ": cannot open: ", errno_str());
  struct stat st;
  if (::fstat(fd_, &st) != 0) fail(path, ": cannot stat: ", errno_str());
  if (S_ISDIR(st.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    fail(path, ": is a directory, expected a file");
  }
  size_ = static_cast<uint64_t>(st.st_size);
}

InputFile::~InputFile() {
  if (fd_ >= 0) ::close(fd_);
}

void InputFile::read_at(uint64_t offset, void* dst, size_t n) const {
  if (offset > size_ || n > size_ - offset)
    fail(path_, ": truncated: need ", n, " bytes at offset ", offset, " but the file has ", size_);
  uint8_t* p = static_cast<uint8_t*>(dst);
  while (n > 0) {
    ssize_t r = ::pread(fd_, p, n, static_cast<off_t>(offset));
    if (r < 0) {
      if (errno == EINTR) continue;
      fail(path_, ": read error: ", errno_str());
    }
    if (r == 0) fail(path_, ": unexpected end of file at offset ", offset);
    p += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
}

std::vector<uint8_t> read_file(const std::string& path) {
  InputFile f(path);
  std::vector<uint8_t> out(f.size());
  if (!out.empty()) f.read_at(0, out.data(), out.size());
  return out;
}

std::string read_text_file(const std::string& path) {
  auto b = read_file(path);
  return std::string(b.begin(), b.end());
}

void write_all(std::FILE* f, const void* data, size_t n, const std::string& path) {
  if (n && std::fwrite(data, 1, n, f) != n) fail(path, ": write error: ", errno_str());
}

void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& write) {
  namespace fs = std::filesystem;
  fs::path target(path);
  fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  if (!fs::is_directory(dir)) fail(path, ": cannot write: directory ", dir.string(), " does not exist");
  // (appended, not "." + name: GCC 12 warns falsely about operator+ here, -Wrestrict)
  std::string hidden(".");
  hidden += target.filename().string();
  hidden += ".tmpXXXXXX";
  std::string tmpl = (dir / hidden).string();
  std::vector<char> name(tmpl.begin(), tmpl.end());
  name.push_back('\0');
  int fd = ::mkstemp(name.data());
  if (fd < 0) fail(path, ": cannot create temporary file: ", errno_str());
  std::string tmp(name.data());
  std::FILE* f = ::fdopen(fd, "wb");
  if (!f) {
    ::close(fd);
    ::unlink(tmp.c_str());
    fail(path, ": cannot open temporary file: ", errno_str());
  }
  try {
    write(f);
    if (std::fflush(f) != 0) fail(path, ": write error: ", errno_str());
    ::fsync(::fileno(f));
  } catch (...) {
    std::fclose(f);
    ::unlink(tmp.c_str());
    throw;
  }
  if (std::fclose(f) != 0) {
    ::unlink(tmp.c_str());
    fail(path, ": write error: ", errno_str());
  }
  ::chmod(tmp.c_str(), 0644);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    fail(path, ": cannot rename temporary file into place: ", std::strerror(e));
  }
}

void write_text_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, [&](std::FILE* f) { write_all(f, text.data(), text.size(), path); });
}

}  // namespace vitkit
