// How low-rank a model's linear layers are (vitkit analyze lowrank): per
// layer, on a calibration set,
//   weight    the singular values of W (out, in)
//   seen      the singular values of W L, X^T X = L L^T: the weight as the
//             data sees it (||X W^T||_F = ||W L||_F), whose truncation is the
//             least output error (compress/lowrank.h, method=whiten)
//   features  the singular values of the layer's inputs X (rows, in) themselves
// with the rank each needs for 90, 95 and 99% of its energy (sum sigma^2), and
// the relative output error ||X (W - W_r)^T||_F / ||X W^T||_F of the rank-r
// weight each method (svd, asvd, whiten) gives, over ranks from 1/64 of full
// to full. The literature's observation (ViT features far more low-rank than
// ViT weights) is the comparison of the first and the other two columns.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vitkit/core/tensor.h"
#include "vitkit/model/vit.h"

namespace vitkit {

struct LowRankLayer {
  std::string name, kind;
  int block = -1, out = 0, in = 0, full_rank = 0, break_even = 0;
  std::vector<double> weight_sv, seen_sv, feature_sv;  // descending
  // Ranks for energies kEnergies of each spectrum.
  std::vector<int> weight_rank, seen_rank, feature_rank;
  std::vector<int> ranks;                           // of the error curves
  std::vector<double> err_svd, err_asvd, err_whiten;  // relative output error at each rank
  nlohmann::json to_json() const;
};

struct LowRankAnalysis {
  static constexpr double kEnergies[3] = {0.90, 0.95, 0.99};
  std::string data;  // the images' source
  int64_t images = 0;
  std::vector<LowRankLayer> layers;
  nlohmann::json to_json() const;
  std::string text() const;
  std::string csv() const;
  // Per layer kind: cumulative energy against rank / full rank for the three
  // spectra (mean over blocks), and the output error of each method.
  std::string svg(const std::string& title) const;
};

// The analysis of every linear layer of m on images (N, C, S, S), preprocessed for m.
LowRankAnalysis analyze_lowrank(const ViT& m, const Tensor& images, bool progress = false);

}  // namespace vitkit
