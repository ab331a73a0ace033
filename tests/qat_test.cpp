// Quantization-aware training (compress/qat.h, repr/int.h's training path):
// straight-through gradients with clipping against finite differences, LSQ's
// scale gradients against their closed form, the trained model's forward
// bit-identical to the saved file's, and `vitkit train --qat` end to end on
// real data (an improvement over the PTQ start, an exact resume, clear errors).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "test_util.h"
#include "vitkit/compress/pass.h"
#include "vitkit/compress/qat.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/rng.h"
#include "vitkit/io/model_io.h"
#include "vitkit/model/forward.h"
#include "vitkit/repr/int.h"
#include "vitkit/train/step.h"

namespace vitkit {
namespace {

std::vector<float> uniforms(Rng& rng, int64_t n, float lo, float hi) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = lo + (hi - lo) * rng.uniform();
  return v;
}

// The trainable tensors of a representation, in backward()'s gradient order.
std::vector<ReprTensor> trainable(const LinearRepr& r) {
  std::vector<ReprTensor> v;
  for (const ReprTensor& t : r.tensors())
    if (t.trainable) v.push_back(t);
  return v;
}

// Runs backward with fresh zero gradients for every trainable tensor.
std::vector<std::vector<float>> grads_of(const LinearRepr& r, const std::vector<float>& dY, const std::vector<float>& X,
                                         std::vector<float>* dX, int64_t M) {
  std::vector<std::vector<float>> g;
  for (const ReprTensor& t : trainable(r)) g.emplace_back(size_t(t.t.numel()), 0.f);
  std::vector<float*> p;
  for (auto& v : g) p.push_back(v.data());
  r.backward(dY.data(), X.data(), dX ? dX->data() : nullptr, M, false, p.data());
  return g;
}

// L = sum(dY * (x^ W^T + b)) for the layer's own dequantized weight W^ with
// the inputs x^ = clip(x) to the static range, not rounded: the function whose
// gradient the straight-through estimator is.
double surrogate(const IntLinear& l, const std::vector<float>& X, const std::vector<float>& dY, int64_t M) {
  std::vector<float> wbuf;
  const float* W = l.plain_weight(wbuf);
  const IntFormat& f = l.format();
  const double lo = -double(f.in_zero) * f.in_scale, hi = double((1 << f.abits) - 1 - f.in_zero) * f.in_scale;
  double L = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int o = 0; o < l.out(); ++o) {
      double y = l.bias()[o];
      for (int k = 0; k < l.in(); ++k) y += std::clamp(double(X[size_t(m * l.in() + k)]), lo, hi) * W[o * l.in() + k];
      L += double(dY[size_t(m * l.out() + o)]) * y;
    }
  return L;
}

IntFormat static_format(int bits, int abits, float in_scale, int32_t in_zero) {
  IntFormat f;
  f.bits = bits;
  f.abits = abits;
  f.static_inputs = true;
  f.in_scale = in_scale;
  f.in_zero = in_zero;
  return f;
}

IntLinear make_layer(const IntFormat& f, int in, int out, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> W = uniforms(rng, int64_t(in) * out, -0.5f, 0.5f);
  Tensor b = Tensor::empty({out});
  for (int o = 0; o < out; ++o) b.f32()[o] = 0.1f * float(o);
  return IntLinear(W.data(), in, out, b, f);
}

// ---------------------------------------------------------------- straight-through gradients

// Static 4-bit inputs on [-0.8, 0.7] (scale 0.1, zero point 8), inputs drawn
// on [-1.5, 1.5]: dX agrees with central differences of the clipped surrogate
// for inputs away from the clip edges, and is exactly zero for clipped ones.
TEST(QatSte, InputGradientIsStraightThroughInsideTheRangeAndZeroOutside) {
  IntLinear l = make_layer(static_format(6, 4, 0.1f, 8), 12, 5, 1);
  l.begin_training();
  Rng rng(2);
  const int64_t M = 3;
  std::vector<float> X = uniforms(rng, M * l.in(), -1.5f, 1.5f), dY = uniforms(rng, M * l.out(), -1.f, 1.f);
  std::vector<float> dX(X.size(), 7.f);  // overwritten (accumulate false)
  grads_of(l, dY, X, &dX, M);
  int inside = 0, outside = 0;
  const double h = 1e-3;
  for (size_t i = 0; i < X.size(); ++i) {
    const double x = X[i];
    if (x < -0.8 - 2 * h || x > 0.7 + 2 * h) {
      EXPECT_EQ(dX[i], 0.f) << "clipped input " << i << " = " << x;
      ++outside;
      continue;
    }
    if (x < -0.8 + 2 * h || x > 0.7 - 2 * h) continue;  // at an edge: the surrogate is not differentiable
    std::vector<float> Xp = X, Xm = X;
    Xp[i] = float(x + h);
    Xm[i] = float(x - h);
    const double fd = (surrogate(l, Xp, dY, M) - surrogate(l, Xm, dY, M)) / (double(Xp[i]) - Xm[i]);
    EXPECT_NEAR(dX[i], fd, 1e-4 * (1 + std::fabs(fd))) << "input " << i << " = " << x;
    ++inside;
  }
  EXPECT_GT(inside, 10);
  EXPECT_GT(outside, 5);
}

// Without learned scales a weight's range is its own (max |w| per channel):
// nothing is clipped and the latent gradient is dY^T x^ everywhere, checked
// against central differences of L in the dequantized weight (linear in it).
TEST(QatSte, WeightGradientAgreesWithFiniteDifferencesOfTheDequantizedWeight) {
  IntFormat f;
  f.bits = 4;
  f.abits = 0;  // f32 inputs: x^ = x
  IntLinear l = make_layer(f, 10, 6, 3);
  l.begin_training();
  Rng rng(4);
  const int64_t M = 4;
  std::vector<float> X = uniforms(rng, M * l.in(), -1.f, 1.f), dY = uniforms(rng, M * l.out(), -1.f, 1.f);
  auto g = grads_of(l, dY, X, nullptr, M);
  ASSERT_EQ(g.size(), 2u);  // latent weight, bias
  std::vector<float> wbuf;
  const std::vector<float> W(l.plain_weight(wbuf), l.plain_weight(wbuf) + l.in() * l.out());
  auto loss = [&](const std::vector<float>& w) {
    double L = 0;
    for (int64_t m = 0; m < M; ++m)
      for (int o = 0; o < l.out(); ++o) {
        double y = 0;
        for (int k = 0; k < l.in(); ++k) y += double(X[size_t(m * l.in() + k)]) * w[size_t(o * l.in() + k)];
        L += dY[size_t(m * l.out() + o)] * y;
      }
    return L;
  };
  for (size_t i = 0; i < W.size(); ++i) {
    std::vector<float> p = W, q = W;
    p[i] += 0.25f;
    q[i] -= 0.25f;
    const double fd = (loss(p) - loss(q)) / 0.5;
    EXPECT_NEAR(g[0][i], fd, 1e-5 * (1 + std::fabs(fd))) << "weight " << i;
  }
}

// ---------------------------------------------------------------- LSQ

// Learned weight scales halved so that the largest weights clip: the codes
// follow the learned scales, the latent gradient is zero where a weight was
// clipped, and the scale gradient is LSQ's closed form
//   sum over the channel of G (q - v [inside]) / sqrt(in Qp),  G = dY^T x^.
TEST(QatLsq, WeightScaleGradientIsTheClosedForm) {
  IntFormat f;
  f.bits = 3;
  f.abits = 0;
  IntLinear l = make_layer(f, 16, 4, 5);
  l.set_lsq(true);
  l.begin_training();
  std::vector<ReprTensor> tr = trainable(l);
  ASSERT_EQ(tr.size(), 3u);
  EXPECT_EQ(tr[0].role, "weight_latent");
  EXPECT_EQ(tr[1].role, "weight_scale_latent");
  EXPECT_EQ(tr[2].role, "bias");
  ASSERT_EQ(tr[1].t.numel(), 4);
  for (int c = 0; c < 4; ++c) tr[1].t.f32()[c] *= 0.5f;
  l.after_step();
  const int Qp = 3;
  const float* w = tr[0].t.f32();
  const float* s = tr[1].t.f32();
  for (int c = 0; c < 4; ++c) EXPECT_EQ(l.scales().f32()[c], s[c]);
  std::vector<float> wbuf;
  const float* W = l.plain_weight(wbuf);
  int clipped = 0;
  for (int i = 0; i < 64; ++i) {
    const double v = double(w[i]) / s[i / 16];
    EXPECT_EQ(W[i], s[i / 16] * float(std::clamp(std::nearbyint(v), double(-Qp), double(Qp)))) << i;
    clipped += std::fabs(v) > Qp;
  }
  EXPECT_GT(clipped, 4);
  Rng rng(6);
  const int64_t M = 5;
  std::vector<float> X = uniforms(rng, M * 16, -1.f, 1.f), dY = uniforms(rng, M * 4, -1.f, 1.f);
  auto g = grads_of(l, dY, X, nullptr, M);
  for (int c = 0; c < 4; ++c) {
    double want = 0;
    for (int k = 0; k < 16; ++k) {
      const int i = c * 16 + k;
      double G = 0;
      for (int64_t m = 0; m < M; ++m) G += double(dY[size_t(m * 4 + c)]) * X[size_t(m * 16 + k)];
      const double v = double(w[i]) / s[c];
      const bool inside = std::fabs(v) <= Qp;
      EXPECT_NEAR(g[0][size_t(i)], inside ? G : 0.0, 1e-5) << "latent " << i;
      if (!inside) { EXPECT_EQ(g[0][size_t(i)], 0.f); }
      want += G * (std::clamp(std::nearbyint(v), double(-Qp), double(Qp)) - (inside ? v : 0.0));
    }
    want /= std::sqrt(16.0 * Qp);
    EXPECT_NEAR(g[1][size_t(c)], want, 1e-5 * (1 + std::fabs(want))) << "scale " << c;
  }
}

// The learned static input scale: sum of G (q - z - x/s [inside]) / sqrt(in (2^b - 1)),
// G = dY W^ (the gradient reaching x^); after a step the format's input scale is it.
TEST(QatLsq, InputScaleGradientIsTheClosedForm) {
  IntLinear l = make_layer(static_format(8, 4, 0.1f, 8), 12, 5, 7);
  l.set_lsq(true);
  l.begin_training();
  std::vector<ReprTensor> tr = trainable(l);
  ASSERT_EQ(tr.size(), 4u);
  EXPECT_EQ(tr[2].role, "input_scale_latent");
  EXPECT_EQ(tr[2].t.f32()[0], 0.1f);
  Rng rng(8);
  const int64_t M = 4;
  std::vector<float> X = uniforms(rng, M * 12, -1.5f, 1.5f), dY = uniforms(rng, M * 5, -1.f, 1.f);
  auto g = grads_of(l, dY, X, nullptr, M);
  std::vector<float> wbuf;
  const float* W = l.plain_weight(wbuf);
  double want = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int k = 0; k < 12; ++k) {
      double G = 0;
      for (int o = 0; o < 5; ++o) G += double(dY[size_t(m * 5 + o)]) * W[o * 12 + k];
      const double x = X[size_t(m * 12 + k)], v = x / 0.1f + 8;
      const bool inside = v >= 0 && v <= 15;
      const double q = std::clamp(std::nearbyint(x / 0.1f) + 8, 0.0, 15.0);
      want += G * ((q - 8) - (inside ? x / 0.1f : 0.0));
    }
  want /= std::sqrt(12.0 * 15);
  EXPECT_NEAR(g[2][0], want, 1e-5 * (1 + std::fabs(want)));
  tr[2].t.f32()[0] = 0.125f;
  l.after_step();
  EXPECT_EQ(l.format().in_scale, 0.125f);
  EXPECT_EQ(l.meta()["in_scale"], 0.125f);
}

TEST(QatLsq, FormatsWithFixedScalesRefuseLearnedStepSizes) {
  IntFormat fx;
  fx.bits = 8;
  fx.granularity = kernels::ScaleGranularity::Tensor;
  fx.frac = 6;
  fx.abits = 0;
  IntLinear a = make_layer(fx, 8, 4, 9);
  EXPECT_THROW(a.set_lsq(true), Error);
  IntFormat zp;
  zp.symmetric = false;
  IntLinear b = make_layer(zp, 8, 4, 9);
  EXPECT_THROW(b.set_lsq(true), Error);
}

// ---------------------------------------------------------------- the model

ViTConfig config() { return test::small_config(16, 4, 32, 2, 4, 64, 10); }

// QAT through TrainStep (learned scales, static 4-bit inputs): the model as
// the last step computes it (latent weights still held) and the file the
// trainer would write give bit-identical logits: training trains the quantized
// model itself, not a float imitation of it.
TEST(QatModel, TheLastStepsForwardIsTheSavedModelsBitForBit) {
  auto m = test::init_model(config(), 11);
  PassContext ctx = test::random_calibration(config(), 32, 12);
  apply_pass(*m, "quantize:bits=4,abits=4,act=static,calib=mse", ctx);
  QatConfig q;
  q.spec = "quantize:bits=4,abits=4";
  q.lsq = true;
  set_qat_options(*m, q);
  std::vector<float> calibrated;
  for (const Linear* l : m->linears()) calibrated.push_back(static_cast<const IntLinear*>(l->repr.get())->format().in_scale);
  AdamWConfig opt;
  TrainStep step(*m, opt);
  const Tensor x = test::random_images(config(), 8, 13);
  std::vector<int> labels{0, 1, 2, 3, 4, 5, 6, 7};
  const Tensor before = vit_predict(*m, x);
  StepOptions so;
  so.lr = 1e-2f;
  for (int i = 0; i < 3; ++i) step.run(x.f32(), labels.data(), 8, so);
  const Tensor last = vit_predict(*m, x);
  EXPECT_FALSE(test::bit_equal(before, last)) << "three steps at lr 1e-2 changed nothing";
  // The learned input scales moved from their calibrated values.
  size_t moved = 0;
  for (size_t i = 0; i < m->linears().size(); ++i)
    moved += static_cast<const IntLinear*>(m->linears()[i]->repr.get())->format().in_scale != calibrated[i];
  EXPECT_EQ(moved, m->linears().size());
  end_training(*m);
  const std::string path = test::temp_dir() + "/qat.safetensors";
  save_model(*m, path);
  auto loaded = load_model(path);
  EXPECT_TRUE(test::bit_equal(vit_predict(*loaded, x), last));
  EXPECT_TRUE(test::bit_equal(vit_predict(*m, x), last));
  for (const Linear* l : loaded->linears()) EXPECT_EQ(l->repr->kind(), "int") << l->name;
}

// A recipe gives QAT the same per-layer formats as compress --recipe; one
// with a fine-tuning step is refused (the training is the QAT run's own).
TEST(QatModel, RecipesQuantizeAsCompressDoes) {
  const std::string dir = test::temp_dir();
  write_text_atomic(dir + "/mix.toml", "[[step]]\npass = \"quantize\"\nbits = 8\n[[step.override]]\n"
                                       "kind = [\"fc1\", \"fc2\"]\nbits = 4\n");
  TrainConfig cfg;
  cfg.qat.spec = dir + "/mix.toml";
  cfg.qat.lsq = true;
  auto m = test::init_model(config(), 11);
  EXPECT_EQ(quantize_for_qat(*m, cfg, false).size(), 2u);  // one spec per distinct set of keys
  for (const Linear* l : m->linears()) {
    const auto* il = dynamic_cast<const IntLinear*>(l->repr.get());
    ASSERT_NE(il, nullptr) << l->name;
    EXPECT_EQ(il->format().bits, l->kind == LayerKind::Fc1 || l->kind == LayerKind::Fc2 ? 4 : 8) << l->name;
    EXPECT_TRUE(il->lsq()) << l->name;
  }
  write_text_atomic(dir + "/ft.toml", "[[step]]\npass = \"quantize\"\nbits = 4\n[[step]]\nfinetune = true\n"
                                      "[step.train]\nepochs = 1\n");
  cfg.qat.spec = dir + "/ft.toml";
  auto m2 = test::init_model(config(), 11);
  EXPECT_THROW(quantize_for_qat(*m2, cfg, false), UsageError);
}

TEST(QatModel, SpecsTheModelCannotTakeAreClearErrors) {
  TrainConfig cfg;
  auto m = test::init_model(config(), 11);
  auto expect_usage = [&](const std::string& spec, const std::string& words) {
    auto c = m->clone();
    cfg.qat.spec = spec;
    try {
      quantize_for_qat(*c, cfg, false);
      ADD_FAILURE() << spec << " was accepted";
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  expect_usage("quantize:bits=1", "bits");
  expect_usage("bits=4,layers=^nothing_here$", "matches no layer");
  expect_usage("prune:sparsity=0.5", "expected a quantize spec");
  cfg.qat.lsq = true;
  expect_usage("quantize:bits=4,sym=false", "zero points");
  cfg.qat.lsq = false;
  // A model without int layers cannot take the QAT options.
  QatConfig q;
  q.spec = "x";
  EXPECT_THROW(set_qat_options(*m, q), UsageError);
  EXPECT_EQ(qat_spec("bits=4,abits=4"), "quantize:bits=4,abits=4");
  EXPECT_EQ(qat_spec("quantize:bits=4"), "quantize:bits=4");
}

// ---------------------------------------------------------------- the CLI on real data

std::string fmnist_config(const std::string& dir, int epochs, int64_t limit, const std::string& teacher = "") {
  const std::string path = dir + "/qat.toml";
  const std::string distill = teacher.empty() ? "" : "[distill]\nteacher = \"" + teacher + "\"\nalpha = 0.5\n";
  write_text_atomic(path, distill + cat("[data]\ndataset = \"fashion-mnist\"\ntrain_limit = ", limit,
                              "\ntest_limit = 1000\n[train]\nepochs = ", epochs,
                              "\nbatch = 64\nlr = 1e-4\nmin_lr = 1e-6\nwarmup_epochs = 0\nweight_decay = 0.0\n"
                              "label_smoothing = 0.1\nclip_grad = 1.0\nseed = 3\neval_every = 100\n"
                              "[augment]\ncrop_padding = 1\nhflip = 0.5\n"));
  return path;
}

double top1(const std::string& model, int limit) {
  test::CliResult r = test::run_cli(cat("eval ", model, " --data fashion-mnist --limit ", limit, " --json -q"));
  EXPECT_EQ(r.code, 0) << r.err;
  return test::parse_json(r).value("top1", 0.0);
}

// The shipped default model with 4-bit weights (one scale per tensor) and
// static 4-bit inputs (min-max calibration, the same 128 images for both)
// loses points after PTQ; one QAT epoch over 4,000 training images (learned
// scales) wins a good part of them back. The output is an int
// model that every command takes.
TEST(QatCli, AShortRunImprovesALowBitModelOverItsPtqStartSlow) {
  const std::string shipped = test::source_dir() + "/models/vit-tiny-fmnist.safetensors";
  VITKIT_REQUIRE_FILE(shipped);
  VITKIT_REQUIRE_FILE(test::fashion_mnist_dir() + "/train-images-idx3-ubyte.gz");
  const std::string dir = test::temp_dir(), spec = "quantize:bits=4,abits=4,granularity=tensor,act=static,calib=minmax";
  test::CliResult r = test::run_cli("compress " + shipped + " --pass " + spec + " -o " + dir +
                                    "/ptq.safetensors --data fashion-mnist --calib 128 --compare-limit 1 -q");
  ASSERT_EQ(r.code, 0) << r.err;
  r = test::run_cli("train --config " + fmnist_config(dir, 1, 4000) + " --init " + shipped + " --qat " + spec +
                    " --calib 128 --lsq -o " + dir + "/qat.safetensors --threads 2 -q --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = test::parse_json(r);
  EXPECT_EQ(j["qat_passes"].size(), 1u);
  // The file's history: the quantize pass, then the QAT training.
  const nlohmann::json log = compression_log(*load_model(dir + "/qat.safetensors"));
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0]["pass"], "quantize");
  EXPECT_EQ(log[1]["pass"], "qat");
  EXPECT_EQ(log[1]["config"]["qat"]["lsq"], true);
  const double ptq = top1(dir + "/ptq.safetensors", 1000), qat = top1(dir + "/qat.safetensors", 1000);
  std::printf("W4A4 per tensor, static minmax: PTQ %.2f%%, after one QAT epoch of 4,000 images %.2f%%\n", 100 * ptq,
              100 * qat);
  EXPECT_GE(qat, ptq + 0.005);  // measured: +1.0 point (88.7% -> 89.7%)
  r = test::run_cli("info " + dir + "/qat.safetensors --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json info = test::parse_json(r);
  EXPECT_LT(info.value("file_bytes", 0), 700 * 1024);  // 3-bit codes two per byte, not f32
  r = test::run_cli("bench " + dir + "/qat.safetensors --batch 2 --reps 2 --warmup 0 --threads 2 -q");
  EXPECT_EQ(r.code, 0) << r.err;
}

// Two epochs of QAT distilled from the float model in one run, and the same in two runs (stop after epoch 1, then
// --resume, once from the checkpoint alone and once with --init given again:
// the quantization is then redone and the learned scales come from the
// checkpoint): the same model file, byte for byte.
TEST(QatCli, ResumeContinuesExactlySlow) {
  const std::string shipped = test::source_dir() + "/models/vit-tiny-fmnist.safetensors";
  VITKIT_REQUIRE_FILE(shipped);
  VITKIT_REQUIRE_FILE(test::fashion_mnist_dir() + "/train-images-idx3-ubyte.gz");
  const std::string dir = test::temp_dir(), cfg = fmnist_config(dir, 2, 384, shipped);  // distilled from the float model
  const std::string qat = " --qat bits=4,abits=4,act=static,calib=minmax --lsq --calib 64 --threads 2 -q";
  test::CliResult r = test::run_cli("train --config " + cfg + " --init " + shipped + qat + " -o " + dir + "/a.safetensors");
  ASSERT_EQ(r.code, 0) << r.err;
  for (const std::string& again : {std::string(""), " --init " + shipped}) {
    const std::string b = dir + "/b.safetensors";
    r = test::run_cli("train --config " + cfg + " --init " + shipped + qat + " --stop-after 1 -o " + b);
    ASSERT_EQ(r.code, 0) << r.err;
    ASSERT_FALSE(file_exists(b));
    r = test::run_cli("train --config " + cfg + again + qat + " --resume " + dir + "/b.ckpt.safetensors -o " + b);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(read_text_file(dir + "/a.safetensors"), read_text_file(b)) << "resumed" << again;
    std::filesystem::remove(b);
    // Resuming with other QAT settings (no --lsq: the learned scales would be dropped) is an error.
    r = test::run_cli("train --config " + cfg + " --init " + shipped + qat + " --stop-after 1 -o " + b);
    ASSERT_EQ(r.code, 0) << r.err;
    std::string no_lsq = qat;
    no_lsq.replace(no_lsq.find(" --lsq"), 6, "");
    r = test::run_cli("train --config " + cfg + again + no_lsq + " --resume " + dir + "/b.ckpt.safetensors -o " + b);
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("resume with the same --qat"), std::string::npos) << r.err;
  }
}

TEST(QatCli, BadQatArgumentsAreClearErrors) {
  const std::string shipped = test::source_dir() + "/models/vit-tiny-fmnist.safetensors";
  VITKIT_REQUIRE_FILE(shipped);
  const std::string dir = test::temp_dir(), cfg = fmnist_config(dir, 1, 64);
  auto run = [&](const std::string& args) { return test::run_cli("train --config " + cfg + " " + args + " -q"); };
  test::CliResult r = run("--qat bits=4");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("--init"), std::string::npos) << r.err;
  r = run("--init " + shipped + " --qat quantize:bits=1 -o " + dir + "/x.safetensors");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("bits"), std::string::npos) << r.err;
  r = run("--init " + shipped + " --qat quantize:bits=4,layers=nomatch -o " + dir + "/x.safetensors");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("matches no layer"), std::string::npos) << r.err;
  r = run("--init " + shipped + " --qat quantize:bits=8,attention=true -o " + dir + "/x.safetensors");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("attention"), std::string::npos) << r.err;
  EXPECT_FALSE(file_exists(dir + "/x.safetensors"));
}

}  // namespace
}  // namespace vitkit
