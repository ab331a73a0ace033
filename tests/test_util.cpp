#include "test_util.h"

#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>

#include "vitkit/core/file.h"

namespace vitkit::test {

std::string source_dir() { return VITKIT_SOURCE_DIR; }
std::string ref_dir() { return VITKIT_REF_DIR; }
std::string ref_path(const std::string& name) { return std::string(VITKIT_REF_DIR) + "/" + name; }
std::string data_dir() { return VITKIT_DATA_DIR; }
std::string fashion_mnist_dir() { return "/usr/share/datasets/fashion-mnist"; }

std::string temp_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "test";
  std::filesystem::path p = std::filesystem::path(VITKIT_BINARY_DIR) / "test_tmp" / name;
  static std::set<std::string> fresh;  // wiped once per test, then reused
  if (fresh.insert(name).second) std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

static std::string slurp(const std::string& path) {
  return file_exists(path) ? read_text_file(path) : std::string();
}

CliResult run_cli(const std::string& args) {
  std::string dir = temp_dir() + "/.cli";
  std::filesystem::create_directories(dir);
  std::string out = dir + "/stdout", err = dir + "/stderr";
  std::string cmd = std::string(VITKIT_CLI) + " " + args + " >" + out + " 2>" + err;
  int st = std::system(cmd.c_str());
  CliResult r;
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

float max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  if (a.shape() != b.shape()) return INFINITY;
  Tensor fa = a.to(DType::F32), fb = b.to(DType::F32);
  float m = 0;
  for (int64_t i = 0; i < fa.numel(); ++i) {
    float d = std::fabs(fa.f32()[i] - fb.f32()[i]);
    if (!(d <= m)) m = d;  // NaN propagates as max
  }
  return m;
}

float max_abs(const Tensor& a) {
  Tensor f = a.to(DType::F32);
  float m = 0;
  for (int64_t i = 0; i < f.numel(); ++i) m = std::max(m, std::fabs(f.f32()[i]));
  return m;
}

}  // namespace vitkit::test
