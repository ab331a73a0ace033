// The library's folders depend one way (../shared/design.md, "Layout"): a
// file in a folder may include only its own folder's headers and those of the
// folders before it in this order. Read from the source tree itself.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace {

// Lowest first. report (tables, plots) depends on core alone, so everything may use it.
const std::vector<std::string> kOrder = {"core",  "report",   "kernels", "repr",   "model", "io",
                                         "train", "compress", "analyze", "search", "export", "cli"};

int rank_of(const std::string& folder) {
  for (size_t i = 0; i < kOrder.size(); ++i)
    if (kOrder[i] == folder) return int(i);
  return -1;
}

}  // namespace

TEST(Layering, FoldersDependOneWay) {
  namespace fs = std::filesystem;
  const fs::path root = fs::path(vitkit::test::source_dir()) / "src" / "vitkit";
  ASSERT_TRUE(fs::is_directory(root)) << root;
  const std::regex include(R"re(#include\s+"vitkit/(\w+)/)re");
  int files = 0;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (!e.is_regular_file()) continue;
    const std::string folder = e.path().parent_path().filename().string();
    const int rank = rank_of(folder);
    ASSERT_GE(rank, 0) << "folder '" << folder << "' is not in the layering order (add it to kOrder and design.md)";
    std::ifstream in(e.path());
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    ++files;
    for (std::sregex_iterator it(text.begin(), text.end(), include), end; it != end; ++it) {
      const std::string dep = (*it)[1];
      const int dep_rank = rank_of(dep);
      EXPECT_GE(dep_rank, 0) << e.path() << " includes from unknown folder " << dep;
      EXPECT_LE(dep_rank, rank) << e.path().lexically_relative(root).string() << " (" << folder << ") includes vitkit/"
                                << dep << ": " << dep << " comes after " << folder << " in the layering";
    }
  }
  EXPECT_GT(files, 50);
}
