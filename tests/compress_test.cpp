// The pass framework end to end: a compressed model written and read back runs
// identically (the round pass's activation rounding rebuilt from the file's
// vitkit.compression metadata); bad logs are refused naming the file; and the
// CLI: vitkit compress, then vitkit analyze reuse on a small model and an image
// folder made here (JSON, CSV, SVG, fields present and consistent).
#include <stb/stb_image_write.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "test_util.h"
#include "vitkit/io/dataset.h"
#include "vitkit/io/preprocess.h"
#include "vitkit/analyze/reuse.h"
#include "vitkit/compress/pass.h"
#include "vitkit/compress/round.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/rng.h"
#include "vitkit/io/model_io.h"
#include "vitkit/model/forward.h"
#include "vitkit/model/init.h"
#include "vitkit/report/svg_plot.h"

using namespace vitkit;
namespace fs = std::filesystem;

namespace {

ViTConfig small_config() {
  ViTConfig c = test::small_config(8, 2, 24, 2, 3, 48, 3);
  c.pre.std = {0.25f};
  return c;
}

std::unique_ptr<ViT> small_model(uint64_t seed = 2) { return test::init_model(small_config(), seed, 0.2f); }


}  // namespace

TEST(Compress, SaveLoadRunsIdentically) {
  const Tensor x = test::random_images(small_config(), 6, 9);
  for (const char* spec : {"round:decimals=2", "round:decimals=1,activations=true",
                           "round:decimals=3,activations=true,layers=conv_proj|heads.head,biases=true"}) {
    auto m = small_model();
    const Tensor before = vit_predict(*m, x);
    apply_pass(*m, spec);
    const Tensor compressed = vit_predict(*m, x);
    EXPECT_FALSE(test::bit_equal(before, compressed)) << spec << ": rounding changes the logits";
    const std::string path = test::temp_dir() + "/m.safetensors";
    save_model(*m, path);
    auto loaded = load_model(path);
    EXPECT_TRUE(test::bit_equal(vit_predict(*loaded, x), compressed)) << spec;
    EXPECT_EQ(compression_log(*loaded), compression_log(*m)) << spec;
    for (size_t i = 0; i < m->linears().size(); ++i) {
      const Linear* a = m->linears()[i];
      const Linear* b = loaded->linears()[i];
      EXPECT_EQ(a->repr == nullptr, b->repr == nullptr) << spec << " " << a->name;
      if (a->repr && b->repr) {
        EXPECT_EQ(a->repr->kind(), b->repr->kind());
      }
    }
    // Written again, the log is kept (not doubled).
    save_model(*loaded, path);
    EXPECT_EQ(compression_log(*load_model(path)).size(), 1u);
  }
}

TEST(Compress, ActivationRoundingIsRebuiltNotLost) {
  // Without rebuilding the reprs the loaded model would only have rounded weights.
  auto m = small_model();
  auto w_only = m->clone();
  apply_pass(*m, "round:decimals=1,activations=true");
  apply_pass(*w_only, "round:decimals=1");
  const Tensor x = test::random_images(small_config(), 4, 4);
  EXPECT_FALSE(test::bit_equal(vit_predict(*m, x), vit_predict(*w_only, x)));
  const std::string path = test::temp_dir() + "/a.safetensors";
  save_model(*m, path);
  EXPECT_TRUE(test::bit_equal(vit_predict(*load_model(path), x), vit_predict(*m, x)));
}

TEST(Compress, BadLogsNameTheFile) {
  const std::string dir = test::temp_dir();
  auto expect_load_error = [&](const nlohmann::json& log, const std::string& part) {
    auto m = small_model();
    m->extra_metadata[kCompressionKey] = log;
    const std::string path = dir + "/bad.safetensors";
    save_model(*m, path);
    try {
      load_model(path);
      ADD_FAILURE() << "loaded a model with log " << log.dump();
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      EXPECT_NE(msg.find(part), std::string::npos) << msg;
    }
  };
  expect_load_error(nlohmann::json::array({{{"pass", "int8"}}}), "int8");
  expect_load_error(nlohmann::json::array({{{"nopass", 1}}}), "no \"pass\"");
  expect_load_error(nlohmann::json::object(), "not a JSON list");
  expect_load_error(nlohmann::json::array({{{"pass", "round"}, {"decimals", 2}}}), "round");
  expect_load_error(nlohmann::json::array(
                        {{{"pass", "round"}, {"decimals", 2}, {"activations", true}, {"layers", {"encoder.nothing"}}}}),
                    "encoder.nothing");
}

// The study on a model in memory: the counts agree with the layer shapes.
TEST(ReuseStudy, CountsEveryMultiplication) {
  auto m = small_model();
  const ViTConfig& c = m->cfg;
  const Tensor x = test::random_images(c, 2, 5);
  ReuseStudyOptions o;
  o.decimals = {1, 3};
  o.eval = false;
  o.progress = false;
  o.count.attention = true;
  o.count.sample = 300;
  const ReuseStudy st = run_reuse_study(*m, nullptr, x, o);
  ASSERT_EQ(st.rows.size(), 2u);
  const int64_t T = c.tokens(), D = c.dim, M = c.mlp_dim, L = c.depth;
  for (const ReuseDecimals& r : st.rows) {
    const ReuseSummary& s = r.reuse;
    EXPECT_EQ(s.images, 2);
    EXPECT_DOUBLE_EQ(s.mults, double(L * T * (3 * D * D + D * D + 2 * D * M)));
    EXPECT_LE(s.table, s.per_output);
    EXPECT_LE(s.per_output, s.mults);
    EXPECT_LE(s.overall.min, s.overall.mean);
    EXPECT_LE(s.overall.mean, s.overall.max);
    for (const char* k : {"qkv", "out_proj", "fc1", "fc2", "attn_scores", "attn_values"})
      EXPECT_EQ(s.kind_hits.count(k), 1u) << k;
    ASSERT_EQ(s.layers.size(), size_t(L * 6));
    EXPECT_EQ(s.layers[1].kind, "attn_scores");
    EXPECT_EQ(s.layers[1].mults, c.heads * T * T * c.block(0).head_dim);
    EXPECT_EQ(s.layers[2].mults, c.heads * T * c.block(0).head_dim * T);
    EXPECT_EQ(s.block_hits.size(), size_t(L));
    EXPECT_EQ(s.samples, 300);
  }
  // Fewer decimals, more repeats.
  EXPECT_GT(st.rows[0].reuse.overall.mean, st.rows[1].reuse.overall.mean);
}

namespace {

// An image folder with 3 classes of 8x8 gray PNGs.
std::string make_image_folder(const std::string& root) {
  Rng rng(17);
  for (int c = 0; c < 3; ++c) {
    const std::string dir = root + "/class" + std::to_string(c);
    fs::create_directories(dir);
    for (int i = 0; i < 4; ++i) {
      std::vector<uint8_t> px(64);
      for (auto& p : px) p = uint8_t(rng.below(256) / 3 + 80 * c);
      const std::string path = dir + "/" + std::to_string(i) + ".png";
      EXPECT_TRUE(stbi_write_png(path.c_str(), 8, 8, 1, px.data(), 8)) << path;
    }
  }
  return root;
}

nlohmann::json parse(const std::string& s) {
  try {
    return nlohmann::json::parse(s);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not one JSON document: " << e.what() << "\n" << s;
    return {};
  }
}

}  // namespace

TEST(CompressCli, CompressThenAnalyzeReuse) {
  const std::string dir = test::temp_dir();
  const std::string model = dir + "/model.safetensors", out = dir + "/r2.safetensors";
  save_model(*small_model(), model);
  const std::string data = make_image_folder(dir + "/images");

  // compress
  test::CliResult r = test::run_cli("compress " + model +
                                    " --pass round:decimals=2 --pass "
                                    "'round:decimals=1,layers=heads.head,activations=true' -o " +
                                    out + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  nlohmann::json j = parse(r.out);
  ASSERT_EQ(j["passes"].size(), 2u);
  EXPECT_EQ(j["passes"][0]["decimals"], 2);
  EXPECT_EQ(j["passes"][1]["layers"].size(), 9u);
  EXPECT_EQ(j["log"].size(), 2u);
  EXPECT_TRUE(file_exists(out));
  // The compressed file evaluates, and round-trips through load_model.
  r = test::run_cli("eval " + out + " --data " + data + " --json -q");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(compression_log(*load_model(out)).size(), 2u);
  // Text output and help.
  r = test::run_cli("compress " + model + " --pass round:decimals=3 -o " + dir + "/r3.safetensors");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("macs_fraction"), std::string::npos) << r.out;
  r = test::run_cli("compress --help");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("decimals=int"), std::string::npos) << r.out;
  // Usage errors name the pass and the key, exit 2.
  r = test::run_cli("compress " + model + " --pass round:decimals=9 -o " + dir + "/x.safetensors");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("decimals=9"), std::string::npos) << r.err;
  r = test::run_cli("compress " + model + " --pass shrink:x=1 -o " + dir + "/x.safetensors");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("shrink"), std::string::npos) << r.err;
  EXPECT_FALSE(file_exists(dir + "/x.safetensors"));

  // analyze reuse
  const std::string csv = dir + "/reuse.csv", svg = dir + "/reuse.svg";
  r = test::run_cli("analyze reuse " + model + " --data " + data +
                    " --decimals 1,2 --images 2 --attention --sample 200 "
                    "--json --csv " +
                    csv + " --plot " + svg + " --threads 2");
  ASSERT_EQ(r.code, 0) << r.err;
  j = parse(r.out);
  EXPECT_TRUE(j["evaluated"].get<bool>());
  EXPECT_EQ(j["eval_images"], 12);
  EXPECT_EQ(j["images"], 2);
  const double base = j["top1_baseline"].get<double>();
  ASSERT_EQ(j["rows"].size(), 2u);
  const ViTConfig c = small_config();
  const int64_t T = c.tokens(), D = c.dim, M = c.mlp_dim;
  for (size_t i = 0; i < 2; ++i) {
    const nlohmann::json& row = j["rows"][i];
    EXPECT_EQ(row["decimals"], int(i) + 1);
    EXPECT_EQ(row["layers_rounded"], 8);
    EXPECT_GT(row["macs_fraction"].get<double>(), 0.5);
    EXPECT_LT(row["macs_fraction"].get<double>(), 1.0);
    EXPECT_NEAR(row["loss_weights"].get<double>(), 100 * (base - row["top1_weights"].get<double>()), 1e-9);
    EXPECT_NEAR(row["loss_all"].get<double>(), 100 * (base - row["top1_all"].get<double>()), 1e-9);
    const nlohmann::json& h = row["reuse"]["hits"];
    for (const char* k : {"qkv", "out_proj", "fc1", "fc2", "attn_scores", "attn_values"}) {
      ASSERT_TRUE(h["kinds"].contains(k)) << k;
      EXPECT_GE(h["kinds"][k]["mean"].get<double>(), 0.0);
      EXPECT_LE(h["kinds"][k]["mean"].get<double>(), 100.0);
    }
    EXPECT_LE(h["overall"]["min"].get<double>(), h["overall"]["mean"].get<double>());
    EXPECT_LE(h["overall"]["mean"].get<double>(), h["overall"]["max"].get<double>());
    EXPECT_TRUE(h.contains("overall_with_attention"));
    EXPECT_EQ(h["blocks"].size(), 2u);
    const nlohmann::json& e = row["reuse"]["engine"];
    EXPECT_DOUBLE_EQ(e["multiplications"].get<double>(), double(c.depth * T * (4 * D * D + 2 * D * M)));
    EXPECT_LE(e["table"].get<double>(), e["per_output"].get<double>());
    EXPECT_LE(e["per_output"].get<double>(), e["multiplications"].get<double>());
    // Hits overall = 100 (1 - table / multiplications) per image; averaged over images.
    EXPECT_NEAR(h["overall"]["mean"].get<double>(), 100 * (1 - e["table_fraction"].get<double>()), 1e-6);
    EXPECT_TRUE(row["reuse"].contains("sampling"));
    EXPECT_EQ(row["reuse"]["layers"].size(), size_t(c.depth * 6));
  }
  EXPECT_GT(j["rows"][0]["reuse"]["hits"]["overall"]["mean"].get<double>(),
            j["rows"][1]["reuse"]["hits"]["overall"]["mean"].get<double>());
  // CSV: a header and one row per decimals; SVG: a document with both panels.
  const std::string text = read_text_file(csv);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 3);
  EXPECT_EQ(text.rfind("decimals,macs_fraction,top1_baseline", 0), 0u) << text;
  const std::string plot = read_text_file(svg);
  EXPECT_EQ(plot.rfind("<?xml", 0), 0u);
  EXPECT_NE(plot.find("Percentage hits"), std::string::npos);
  EXPECT_NE(plot.find("Accuracy loss"), std::string::npos);
  EXPECT_NE(plot.find("</svg>"), std::string::npos);
  // Text output.
  r = test::run_cli("analyze reuse " + model + " --data " + data + " --decimals 2 --images 1 --no-eval -q");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("hits overall"), std::string::npos) << r.out;
  r = test::run_cli("analyze reuse " + model + " --data " + data + " --decimals 8 -q");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--decimals"), std::string::npos) << r.err;
}

// compress --data: the output compared with the input model on the data's
// test split (analyze compare's numbers), in JSON and as the summary line.
TEST(CompressCli, WithDataComparesTheOutputWithTheInput) {
  const std::string dir = test::temp_dir();
  const std::string model = dir + "/model.safetensors", out = dir + "/b.safetensors";
  save_model(*small_model(), model);
  const std::string data = make_image_folder(dir + "/images");
  test::CliResult r = test::run_cli("compress " + model + " --pass bf16 -o " + out + " --data " + data + " --json -q");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = parse(r.out);
  ASSERT_TRUE(j.contains("compare")) << r.out;
  EXPECT_EQ(j["compare"]["images"], 12);
  const double agree = j["compare"]["agreement"].get<double>();
  EXPECT_GE(agree, 0.0);
  EXPECT_LE(agree, 1.0);
  // The same numbers as analyze compare of the two files.
  r = test::run_cli("analyze compare " + model + " " + out + " --data " + data + " --json -q");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json a = parse(r.out);
  EXPECT_EQ(a["agreement"], j["compare"]["agreement"]);
  EXPECT_EQ(a["kl"], j["compare"]["kl"]);
  r = test::run_cli("compress " + model + " --pass round:decimals=1 -o " + dir + "/r.safetensors --data " + data);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("agrees"), std::string::npos) << r.out;
  // Bad data fails before anything is written.
  r = test::run_cli("compress " + model + " --pass bf16 -o " + dir + "/x.safetensors --data " + dir + "/nothing -q");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("nothing"), std::string::npos) << r.err;
  EXPECT_FALSE(file_exists(dir + "/x.safetensors"));
}

// A calibration set is the first N of a class-interleaved order: balanced,
// deterministic, its indices and labels recorded.
TEST(Calibration, BalancedOverClassesAndRecorded) {
  const std::string dir = test::temp_dir();
  const std::string data = make_image_folder(dir + "/images");  // 3 classes x 4 images, in class order
  auto ds = open_dataset(data, "train");
  EXPECT_EQ(balanced_indices(*ds, 5), (std::vector<int64_t>{0, 4, 8, 1, 5}));
  EXPECT_EQ(balanced_indices(*ds, 0).size(), 12u);
  EXPECT_EQ(balanced_indices(*ds, 100).size(), 12u);
  auto m = small_model();
  PassContext ctx;
  load_calibration(ctx, *m, data, "train", 6);
  ASSERT_TRUE(ctx.has_calibration());
  EXPECT_EQ(ctx.calib.shape(), (Shape{6, 1, 8, 8}));
  EXPECT_EQ(ctx.calib_labels, (std::vector<int>{0, 1, 2, 0, 1, 2}));
  EXPECT_EQ(ctx.calib_indices, (std::vector<int64_t>{0, 4, 8, 1, 5, 9}));
  EXPECT_NE(ctx.calib_source.find("images"), std::string::npos) << ctx.calib_source;
  // The images are the model's preprocessing of those files.
  const Tensor want = preprocess_batch(*ds, ctx.calib_indices, m->cfg);
  EXPECT_TRUE(test::bit_equal(ctx.calib, want));
  EXPECT_THROW(load_calibration(ctx, *m, dir + "/nothing", "train", 6), Error);
}

TEST(SvgPlot, TicksAndDocument) {
  EXPECT_EQ(plot_ticks(0, 100, false), (std::vector<double>{0, 20, 40, 60, 80, 100}));
  EXPECT_EQ(plot_ticks(0.01, 100, true), (std::vector<double>{0.01, 0.1, 1, 10, 100}));
  EXPECT_EQ(plot_ticks(1, 10, true), (std::vector<double>{1, 2, 5, 10}));
  Plot p;
  p.title = "a <b> & c";
  p.x.label = "d";
  p.y.label = "hits";
  PlotSeries s;
  s.name = "overall";
  s.x = {1, 2, 3};
  s.y = {99, 88, NAN};  // non-finite points are skipped
  p.series.push_back(s);
  PlotSeries r = s;
  r.name = "loss";
  r.right = true;
  r.y = {10, 0.1, 0};
  p.y2.log = true;  // 0 is skipped on a log axis
  p.series.push_back(r);
  p.lines.push_back({0.5, "0.5 point", true});
  const std::string svg = render_svg({p, p});
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_NE(svg.find("a &lt;b&gt; &amp; c"), std::string::npos);
  EXPECT_EQ(svg.find("<b>"), std::string::npos);
  EXPECT_NE(svg.find("width=\"1040\""), std::string::npos);  // two panels of 520
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(svg.find("inf"), std::string::npos);
}
