// Helpers shared by the tests: where reference outputs and data live, and
// running the CLI.
#pragma once
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "vitkit/core/tensor.h"

namespace vitkit::test {

std::string source_dir();
std::string ref_dir();   // build/ref, written by tests/ref/*.py
std::string ref_path(const std::string& name);  // ref_dir()/name
std::string data_dir();  // ../shared/data (may be absent)
std::string fashion_mnist_dir();  // /usr/share/datasets/fashion-mnist (may be absent)
std::string temp_dir();  // a fresh directory under the build tree for this test

struct CliResult {
  int code = 0;
  std::string out, err;
};
// Runs build/vitkit with args (a shell-quoted string), capturing stdout/stderr.
CliResult run_cli(const std::string& args);

// max |a - b| and max |b|.
float max_abs_diff(const Tensor& a, const Tensor& b);
float max_abs(const Tensor& a);

}  // namespace vitkit::test

// Skips the test when a file does not exist.
#define VITKIT_REQUIRE_FILE(path)                                          \
  do {                                                                     \
    if (!::vitkit::file_exists(path)) GTEST_SKIP() << "missing " << (path); \
  } while (0)
