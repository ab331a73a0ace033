// Datasets: IDX (Fashion-MNIST from Debian, MNIST from shared/data, small files
// written here, plain and gzipped), CIFAR-10 binary batches and image folders,
// with malformed inputs rejected by errors that name the file.
#include <stb/stb_image_write.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "test_util.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/io/cifar.h"
#include "vitkit/io/dataset.h"
#include "vitkit/io/idx.h"
#include "vitkit/io/image_folder.h"

using namespace vitkit;
namespace fs = std::filesystem;

namespace {

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
  gzclose(f);
}

void put_be32(std::vector<uint8_t>& v, uint32_t x) {
  for (int s = 24; s >= 0; s -= 8) v.push_back(uint8_t(x >> s));
}

// IDX images (n, rows, cols) with pixel (i, y, x) = i * 31 + y * 7 + x.
std::vector<uint8_t> idx_images(int n, int rows, int cols) {
  std::vector<uint8_t> v = {0, 0, 8, 3};
  put_be32(v, n);
  put_be32(v, rows);
  put_be32(v, cols);
  for (int i = 0; i < n; ++i)
    for (int y = 0; y < rows; ++y)
      for (int x = 0; x < cols; ++x) v.push_back(uint8_t(i * 31 + y * 7 + x));
  return v;
}

std::vector<uint8_t> idx_labels(const std::vector<uint8_t>& labels) {
  std::vector<uint8_t> v = {0, 0, 8, 1};
  put_be32(v, uint32_t(labels.size()));
  v.insert(v.end(), labels.begin(), labels.end());
  return v;
}

// fn() must throw an Error whose message contains every one of `parts`.
template <typename Fn>
void expect_error(Fn fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning " << parts[0];
  } catch (const Error& e) {
    std::string msg = e.what();
    for (auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "expected '" << p << "' in: " << msg;
  }
}

std::vector<int> histogram(const Dataset& ds) {
  std::vector<int> h(ds.classes());
  for (int64_t i = 0; i < ds.size(); ++i) ++h[ds.label(i)];
  return h;
}

int64_t pixel_sum(const Dataset& ds) {
  int64_t s = 0;
  for (int64_t i = 0; i < ds.size(); ++i) {
    Image im = ds.image(i);
    s += std::accumulate(im.pixels.begin(), im.pixels.end(), int64_t(0));
  }
  return s;
}

// One CIFAR record: label, then R, G, B planes with pixel p of plane c = p + c * 50 + label.
std::vector<uint8_t> cifar_records(const std::vector<uint8_t>& labels) {
  std::vector<uint8_t> v;
  for (uint8_t l : labels) {
    v.push_back(l);
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < 1024; ++p) v.push_back(uint8_t(p + c * 50 + l));
  }
  return v;
}

// A w x h PNG whose pixels all equal `value` (gray or RGB).
void write_png(const std::string& path, int w, int h, int channels, uint8_t value) {
  fs::create_directories(fs::path(path).parent_path());
  std::vector<uint8_t> px(size_t(w) * h * channels, value);
  ASSERT_TRUE(stbi_write_png(path.c_str(), w, h, channels, px.data(), w * channels));
}

}  // namespace

// ---- IDX ----

TEST(Idx, FashionMnistTestSplit) {
  VITKIT_REQUIRE_FILE(test::fashion_mnist_dir() + "/t10k-images-idx3-ubyte.gz");
  auto ds = open_dataset("fashion-mnist", "test");
  ASSERT_EQ(ds->size(), 10000);
  EXPECT_EQ(ds->classes(), 10);
  EXPECT_EQ(ds->class_names().front(), "T-shirt/top");
  EXPECT_EQ(ds->class_names().back(), "Ankle boot");
  EXPECT_EQ(ds->label(0), 9);
  EXPECT_EQ(histogram(*ds), std::vector<int>(10, 1000));
  Image im = ds->image(0);
  EXPECT_EQ(im.width, 28);
  EXPECT_EQ(im.height, 28);
  EXPECT_EQ(im.channels, 1);
  EXPECT_EQ(std::accumulate(im.pixels.begin(), im.pixels.end(), 0), 33456);
  EXPECT_EQ(pixel_sum(*ds), 573469082);
  EXPECT_NE(ds->describe().find("fashion-mnist test (10000 images, 10 classes, 28x28x1) from "), std::string::npos)
      << ds->describe();
}

TEST(Idx, FashionMnistTrainSplit) {
  VITKIT_REQUIRE_FILE(test::fashion_mnist_dir() + "/train-images-idx3-ubyte.gz");
  auto ds = open_dataset(test::fashion_mnist_dir(), "train");
  ASSERT_EQ(ds->size(), 60000);
  EXPECT_EQ(ds->class_names()[7], "Sneaker");  // folder name says fashion
  EXPECT_EQ(histogram(*ds), std::vector<int>(10, 6000));
  EXPECT_EQ(pixel_sum(*ds), 3431114169);
}

TEST(Idx, MnistFromSharedData) {
  const std::string dir = test::data_dir() + "/mnist";
  VITKIT_REQUIRE_FILE(dir + "/t10k-images-idx3-ubyte.gz");
  auto ds = open_dataset(dir, "test");
  ASSERT_EQ(ds->size(), 10000);
  EXPECT_EQ(ds->class_names()[3], "3");
  EXPECT_EQ(ds->label(0), 7);
  EXPECT_EQ(histogram(*ds), (std::vector<int>{980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009}));
  EXPECT_EQ(pixel_sum(*ds), 264923200);  // the file with the MD5 in shared/data/README.md
  // The name finds the same folder relative to the test executable's repository.
  auto named = open_dataset("mnist", "test");
  EXPECT_EQ(named->size(), 10000);
  expect_error([] { open_dataset("mnist", "train"); }, {"no IDX train images", "train-images-idx3-ubyte"});
}

TEST(Idx, SmallPlainAndGzipped) {
  const std::string dir = test::temp_dir();
  write_bytes(dir + "/plain/t10k-images-idx3-ubyte", idx_images(5, 4, 3));
  write_bytes(dir + "/plain/t10k-labels-idx1-ubyte", idx_labels({3, 0, 1, 4, 2}));
  fs::create_directories(dir + "/gz");
  write_gz(dir + "/gz/t10k-images-idx3-ubyte.gz", idx_images(5, 4, 3));
  write_gz(dir + "/gz/t10k-labels-idx1-ubyte.gz", idx_labels({3, 0, 1, 4, 2}));
  for (const char* sub : {"/plain", "/gz"}) {
    auto ds = open_dataset(dir + sub, "test");
    ASSERT_EQ(ds->size(), 5);
    EXPECT_EQ(ds->classes(), 10);
    EXPECT_EQ(ds->label(3), 4);
    Image im = ds->image(2);
    ASSERT_EQ(im.width, 3);
    ASSERT_EQ(im.height, 4);
    EXPECT_EQ(im.pixels[1 * 3 + 2], uint8_t(2 * 31 + 7 + 2));
    EXPECT_THROW(ds->image(5), Error);
    EXPECT_THROW(ds->label(-1), Error);
  }
}

TEST(Idx, TruncatedAndCorruptedFiles) {
  const std::string dir = test::temp_dir();
  std::vector<uint8_t> img = idx_images(5, 4, 3);
  auto check_images = [&](const std::string& name, const std::vector<uint8_t>& bytes, const std::string& what) {
    write_bytes(dir + "/" + name, bytes);
    expect_error([&] { read_idx(dir + "/" + name, 3); }, {dir + "/" + name, what});
  };
  check_images("short", std::vector<uint8_t>(img.begin(), img.end() - 1), "truncated");
  check_images("long", [&] { auto v = img; v.push_back(0); return v; }(), "trailing bytes");
  check_images("magic", [&] { auto v = img; v[0] = 1; return v; }(), "bad magic");
  check_images("type", [&] { auto v = img; v[2] = 0x0d; return v; }(), "data type 0xd");
  check_images("ndim", [&] { auto v = img; v[3] = 2; return v; }(), "2 dimensions, expected 3");
  check_images("header", std::vector<uint8_t>(img.begin(), img.begin() + 9), "truncated IDX header");
  check_images("huge", [&] { auto v = img; v[12] = 0x7f; return v; }(), "expected 1..");
  check_images("zero", [&] { auto v = img; v[7] = 0; return v; }(), "0 items");
  // A gzip stream cut short.
  write_gz(dir + "/full.gz", img);
  std::vector<uint8_t> gz = read_file(dir + "/full.gz");
  ASSERT_GT(gz.size(), 40u);
  gz.erase(gz.end() - 12, gz.end());
  check_images("cut.gz", gz, "truncated");
  // Garbage after the gzip magic.
  std::vector<uint8_t> bad = read_file(dir + "/full.gz");
  for (size_t i = 12; i < bad.size(); ++i) bad[i] ^= 0x5a;
  write_bytes(dir + "/bad.gz", bad);
  EXPECT_THROW(read_idx(dir + "/bad.gz", 3), Error);
  expect_error([&] { read_idx(dir + "/missing", 3); }, {dir + "/missing", "cannot open"});
}

TEST(Idx, CountMismatchAndLabelRange) {
  const std::string dir = test::temp_dir();
  write_bytes(dir + "/a/t10k-images-idx3-ubyte", idx_images(5, 4, 3));
  write_bytes(dir + "/a/t10k-labels-idx1-ubyte", idx_labels({1, 2, 3, 4}));
  expect_error([&] { open_dataset(dir + "/a", "test"); }, {"5 images", "4 labels", "must agree"});
  write_bytes(dir + "/b/t10k-images-idx3-ubyte", idx_images(2, 4, 3));
  write_bytes(dir + "/b/t10k-labels-idx1-ubyte", idx_labels({1, 12}));
  EXPECT_EQ(open_dataset(dir + "/b", "test")->classes(), 13);  // unnamed folder: up to the largest label
  expect_error([&] { IdxDataset(dir + "/b/t10k-images-idx3-ubyte", dir + "/b/t10k-labels-idx1-ubyte",
                                {"x", "y"}, "b"); },
               {"t10k-labels-idx1-ubyte", "label 12", "2 classes"});
  expect_error([&] { open_dataset(dir + "/b", "train"); }, {"no IDX train images"});
}

// ---- CIFAR-10 binary ----

TEST(Cifar, SmallValidBatches) {
  const std::string dir = test::temp_dir() + "/cifar-10-batches-bin";
  write_bytes(dir + "/test_batch.bin", cifar_records({3, 9, 0}));
  for (int b = 1; b <= 5; ++b) write_bytes(cat(dir, "/data_batch_", b, ".bin"), cifar_records({uint8_t(b)}));
  auto ds = open_dataset(fs::path(dir).parent_path().string(), "test");  // finds the cifar-10-batches-bin subfolder
  ASSERT_EQ(ds->size(), 3);
  EXPECT_EQ(ds->classes(), 10);
  EXPECT_EQ(ds->class_names()[3], "cat");
  EXPECT_EQ(ds->label(1), 9);
  Image im = ds->image(1);
  ASSERT_EQ(im.width, 32);
  ASSERT_EQ(im.channels, 3);
  const int p = 5 * 32 + 7;  // row 5, column 7
  EXPECT_EQ(im.pixels[p * 3 + 0], uint8_t(p + 9));
  EXPECT_EQ(im.pixels[p * 3 + 2], uint8_t(p + 100 + 9));
  auto train = open_dataset(dir, "train");
  ASSERT_EQ(train->size(), 5);
  EXPECT_EQ(train->label(4), 5);
  EXPECT_NE(train->describe().find("(5 images, 10 classes, 32x32x3)"), std::string::npos) << train->describe();
  std::ofstream(dir + "/batches.meta.txt") << "a\nb\n\nc\nd\ne\nf\ng\nh\ni\nj\n";
  EXPECT_EQ(open_dataset(dir, "test")->class_names()[2], "c");
}

TEST(Cifar, InvalidBatches) {
  const std::string dir = test::temp_dir();
  auto recs = cifar_records({1, 2});
  write_bytes(dir + "/size/test_batch.bin", std::vector<uint8_t>(recs.begin(), recs.end() - 1));
  expect_error([&] { open_dataset(dir + "/size", "test"); }, {"test_batch.bin", "not a positive multiple of"});
  write_bytes(dir + "/label/test_batch.bin", cifar_records({1, 10}));
  expect_error([&] { open_dataset(dir + "/label", "test"); }, {"test_batch.bin", "record 1 has label 10"});
  write_bytes(dir + "/empty/test_batch.bin", {});
  expect_error([&] { open_dataset(dir + "/empty", "test"); }, {"test_batch.bin", "0 bytes"});
  expect_error([&] { open_dataset(dir + "/size", "train"); }, {"data_batch_1.bin", "missing CIFAR-10 train batch"});
}

// ---- image folders ----

TEST(ImageFolder, Cifar10TestJpegs) {
  const std::string dir = test::data_dir() + "/cifar10-test";
  VITKIT_REQUIRE_FILE(dir + "/airplane/0000.jpg");
  auto ds = open_dataset(dir, "test");
  ASSERT_EQ(ds->size(), 10000);
  ASSERT_EQ(ds->classes(), 10);
  EXPECT_EQ(ds->class_names(), cifar10_class_names());
  EXPECT_EQ(histogram(*ds), std::vector<int>(10, 1000));
  for (int64_t i = 0; i < ds->size(); i += 997) EXPECT_EQ(ds->label(i), i / 1000);
  auto* folder = dynamic_cast<ImageFolderDataset*>(ds.get());
  ASSERT_NE(folder, nullptr);
  EXPECT_EQ(folder->path(0), dir + "/airplane/0000.jpg");
  EXPECT_EQ(folder->path(1), dir + "/airplane/0001.jpg");
  EXPECT_EQ(folder->path(9999).substr(0, dir.size() + 7), dir + "/truck/");
  Image im = ds->image(1234);
  EXPECT_EQ(im.width, 32);
  EXPECT_EQ(im.height, 32);
  EXPECT_EQ(im.channels, 3);
  // The name "cifar10" finds this folder for the test split when no binary batches exist.
  auto named = open_dataset("cifar10", "test");
  EXPECT_EQ(named->size(), 10000);
  EXPECT_NE(named->describe().find("cifar10 test (10000 images, 10 classes"), std::string::npos) << named->describe();
}

TEST(ImageFolder, TinyFolderOrderAndLabels) {
  const std::string dir = test::temp_dir() + "/tiny";
  write_png(dir + "/zebra/b.png", 4, 3, 3, 10);
  write_png(dir + "/zebra/a.PNG", 4, 3, 1, 20);
  write_png(dir + "/ant/x.png", 5, 2, 3, 30);
  write_png(dir + "/ant/sub/y.png", 2, 2, 3, 40);
  write_png(dir + "/ant/sub-b/w.png", 2, 2, 3, 50);
  write_png(dir + "/ant/sub/deep/v.png", 2, 2, 3, 60);  // root "ant/sub/deep" sorts after "ant/sub-b" ('/' > '-')
  std::ofstream(dir + "/ant/notes.txt") << "not an image";
  std::ofstream(dir + "/readme.md") << "files at the root are not classes";
  auto ds = open_dataset(dir, "train");
  auto* f = dynamic_cast<ImageFolderDataset*>(ds.get());
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(ds->size(), 6);
  EXPECT_EQ(ds->class_names(), (std::vector<std::string>{"ant", "zebra"}));
  // torchvision 0.14's ImageFolder order for the same tree (sorted(os.walk(...)), then sorted file names).
  const std::vector<std::string> order = {"ant/x.png",          "ant/sub/y.png", "ant/sub-b/w.png",
                                          "ant/sub/deep/v.png", "zebra/a.PNG",   "zebra/b.png"};
  const std::vector<int> labels = {0, 0, 0, 0, 1, 1};
  const std::vector<int> values = {30, 40, 50, 60, 20, 10};
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(f->path(i), dir + "/" + order[i]);
    EXPECT_EQ(ds->label(i), labels[i]);
    Image im = ds->image(i);
    EXPECT_EQ(int(im.pixels[0]), values[i]);
  }
  EXPECT_EQ(ds->image(4).channels, 1);
  EXPECT_EQ(ds->image(0).width, 5);
}

TEST(ImageFolder, TrainTestSubfolders) {
  const std::string dir = test::temp_dir();
  write_png(dir + "/train/a/0.png", 2, 2, 3, 1);
  write_png(dir + "/train/b/0.png", 2, 2, 3, 2);
  write_png(dir + "/test/a/0.png", 2, 2, 3, 3);
  write_png(dir + "/test/b/0.png", 2, 2, 3, 4);
  write_png(dir + "/test/b/1.png", 2, 2, 3, 5);
  EXPECT_EQ(open_dataset(dir, "train")->size(), 2);
  EXPECT_EQ(open_dataset(dir, "test")->size(), 3);
  write_png(dir + "/only/train/a/0.png", 2, 2, 3, 1);
  expect_error([&] { open_dataset(dir + "/only", "test"); }, {"no test/ subfolder"});
}

TEST(ImageFolder, Errors) {
  const std::string dir = test::temp_dir();
  fs::create_directories(dir + "/empty");
  expect_error([&] { open_dataset(dir + "/empty", "test"); }, {dir + "/empty", "no class subfolders"});
  write_png(dir + "/flat/x.png", 2, 2, 3, 1);
  expect_error([&] { open_dataset(dir + "/flat", "test"); }, {"no class subfolders"});
  write_png(dir + "/holes/a/0.png", 2, 2, 3, 1);
  fs::create_directories(dir + "/holes/b");
  expect_error([&] { open_dataset(dir + "/holes", "test"); }, {dir + "/holes/b", "holds no image files"});
  write_png(dir + "/broken/a/0.png", 2, 2, 3, 1);
  std::ofstream(dir + "/broken/a/1.jpg") << "this is not a JPEG";
  auto ds = open_dataset(dir + "/broken", "test");
  expect_error([&] { ds->image(1); }, {dir + "/broken/a/1.jpg", "cannot decode image"});
  EXPECT_EQ(ds->image(0).width, 2);
  std::ofstream(dir + "/broken/a/2.png").flush();
  expect_error([&] { decode_image(dir + "/broken/a/2.png"); }, {dir + "/broken/a/2.png", "the file is empty"});
}

// ---- open_dataset ----

TEST(Dataset, BadSpecsAndSplits) {
  EXPECT_THROW(open_dataset("fashion-mnist", "validation"), UsageError);
  expect_error([] { open_dataset("/nonexistent/folder", "test"); }, {"/nonexistent/folder", "no such file"});
  const std::string file = test::temp_dir() + "/file.bin";
  std::ofstream(file) << "x";
  expect_error([&] { open_dataset(file, "test"); }, {file, "is a file"});
}

TEST(Dataset, NamedDatasetsSearchVitkitDataFirst) {
  const std::string dir = test::temp_dir();
  setenv("VITKIT_DATA", dir.c_str(), 1);
  write_bytes(dir + "/mnist/t10k-images-idx3-ubyte", idx_images(3, 2, 2));
  write_bytes(dir + "/mnist/t10k-labels-idx1-ubyte", idx_labels({0, 1, 2}));
  auto ds = open_dataset("mnist", "test");  // $VITKIT_DATA comes first
  EXPECT_EQ(ds->size(), 3);
  EXPECT_NE(ds->describe().find("mnist test (3 images, 10 classes, 2x2x1) from " + dir + "/mnist"), std::string::npos)
      << ds->describe();
  auto dirs = dataset_search_dirs("cifar10");
  EXPECT_EQ(dirs.front(), dir + "/cifar10");
  EXPECT_EQ(dirs.back(), "/usr/share/datasets/cifar10-test");
  bool any_train = false;
  for (auto& d : dirs) any_train |= d.find("cifar10-test") == std::string::npos && is_directory(d);
  if (!any_train)
    expect_error([] { open_dataset("cifar10", "train"); }, {"dataset 'cifar10' not found; looked in:", dir + "/cifar10"});
  unsetenv("VITKIT_DATA");
}
