// vitkit predict MODEL (--input X.npy | IMAGE...) -o logits.npy: logits of
// preprocessed inputs (N x C x H x W float32) or of image files (preprocessed
// as the model's metadata says).
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "commands.h"
#include "common.h"
#include "vitkit/core/error.h"
#include "vitkit/core/npy.h"
#include "vitkit/io/image.h"
#include "vitkit/io/preprocess.h"
#include "vitkit/model/forward.h"
#include "vitkit/report/table.h"

namespace vitkit::cli {

namespace {

struct PredictOpts {
  std::string model, input, output;
  std::vector<std::string> images;
  int top = 5;
  LoadOptions load;
  CommonOpts common;
};

Tensor load_inputs(const PredictOpts& o, const ViT& m) {
  const ViTConfig& c = m.cfg;
  if (!o.input.empty()) {
    Tensor x = read_npy(o.input);
    if (x.dtype() != DType::F32) x = x.to(DType::F32);
    if (x.ndim() == 3) x = x.reshape({1, x.dim(0), x.dim(1), x.dim(2)});
    if (x.ndim() != 4 || x.dim(1) != c.channels || x.dim(2) != c.image_size || x.dim(3) != c.image_size)
      fail(o.input, ": input has shape ", shape_str(x.shape()), ", the model needs (N, ", c.channels, ", ",
           c.image_size, ", ", c.image_size, ")");
    return x;
  }
  const int64_t N = static_cast<int64_t>(o.images.size()), per = int64_t(c.channels) * c.image_size * c.image_size;
  Tensor x = Tensor::empty({N, c.channels, c.image_size, c.image_size});
  for (int64_t i = 0; i < N; ++i) preprocess_image(decode_image(o.images[i]), c, x.f32() + i * per);
  return x;
}

void run_predict(const PredictOpts& o) {
  apply_common(o.common);
  if (o.input.empty() == o.images.empty()) throw UsageError("give either --input X.npy or image files");
  auto model = load_model(o.model, o.load);
  Tensor x = load_inputs(o, *model);
  Tensor logits = vit_predict(*model, x);
  if (!o.output.empty()) write_npy(o.output, logits);
  const int64_t N = logits.dim(0), C = logits.dim(1);
  const int k = static_cast<int>(std::min<int64_t>(o.top, C));
  nlohmann::json rows = nlohmann::json::array();
  for (int64_t i = 0; i < N; ++i) {
    const float* l = logits.f32() + i * C;
    std::vector<int> idx(C);
    for (int c = 0; c < C; ++c) idx[c] = c;
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int a, int b) { return l[a] > l[b]; });
    double mx = l[idx[0]], s = 0;
    for (int c = 0; c < C; ++c) s += std::exp(double(l[c]) - mx);
    nlohmann::json top = nlohmann::json::array();
    for (int j = 0; j < k; ++j) top.push_back({{"class", idx[j]}, {"logit", l[idx[j]]}, {"prob", std::exp(l[idx[j]] - mx) / s}});
    rows.push_back({{"input", o.images.empty() ? cat(o.input, "[", i, "]") : o.images[i]}, {"top", top}});
  }
  if (o.common.json) {
    print_json({{"model", o.model}, {"output", o.output}, {"shape", logits.shape()}, {"predictions", rows}});
    return;
  }
  for (auto& r : rows) {
    std::printf("%s:", r["input"].get<std::string>().c_str());
    for (auto& t : r["top"]) std::printf("  %d (%.3f)", t["class"].get<int>(), t["prob"].get<double>());
    std::printf("\n");
  }
  if (!o.output.empty()) std::printf("logits %s written to %s\n", shape_str(logits.shape()).c_str(), o.output.c_str());
}

}  // namespace

void register_predict(CLI::App& app) {
  auto o = std::make_shared<PredictOpts>();
  CLI::App* cmd = app.add_subcommand("predict", "Logits for preprocessed inputs (.npy) or image files");
  cmd->add_option("model", o->model, "Model file (.safetensors, .pth) or preset")->required();
  cmd->add_option("images", o->images, "Image files (JPEG, PNG, ...), preprocessed as the model's metadata says");
  cmd->add_option("--input", o->input, "N x C x H x W float32 .npy, already preprocessed");
  cmd->add_option("-o,--output", o->output, "Write the logits (N x classes float32) as .npy")->check(output_file());
  cmd->add_option("--top", o->top, "Classes shown per input")->check(whole_number(1));
  add_model_opts(cmd, o->load);
  add_common(cmd, o->common);
  cmd->callback([o] { run_predict(*o); });
}

}  // namespace vitkit::cli
