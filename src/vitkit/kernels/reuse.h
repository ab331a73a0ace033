// Reuse of multiplications in Y = X W^T when both operands are rounded to d
// decimals (docs/reuse.md; the rounding itself is kernels/round.h): exact counting of the
// distinct unordered magnitude pairs {|x|, |w|} (percentage hits), the
// multiplications a reuse-aware engine executes, a stratified sampling
// estimate, and a reuse-aware matmul that computes the exact result with one
// multiplication per distinct pair.
//
// Shapes: X (T, K) row-major (T tokens), W (N, K) row-major (a PyTorch Linear's
// weight: N outputs), Y (T, N). One "multiplication" is x[t,k] * w[o,k].
#pragma once
#include <cstdint>
#include <vector>

#include "vitkit/kernels/round.h"

namespace vitkit::kernels {

// ---- Exact counting ----------------------------------------------------

// The weight operand W (N, K) rounded to d decimals and indexed for counting;
// built once per layer and decimals, used for every image.
struct ReuseWeights {
  ReuseWeights(const float* W, int64_t N, int64_t K, int decimals);
  int64_t N = 0, K = 0;
  int decimals = 0;
  std::vector<uint64_t> values;   // distinct magnitude codes |k|, sorted; a W id indexes it
  std::vector<uint32_t> ids;      // (N, K) W id of each weight
  int64_t words = 0;              // 64-bit words of a bitset over W ids
  std::vector<uint64_t> colbits;  // (K, words): W ids present in column k
  // Column k's distinct W ids with their counts, ids ascending:
  // col_id/col_count[col_ptr[k] .. col_ptr[k+1]).
  std::vector<int64_t> col_ptr;
  std::vector<uint32_t> col_id, col_count;
  int64_t distinct() const { return int64_t(values.size()); }
};

struct ReuseCountOptions {
  bool per_output = true;  // also count engine (a): distinct pairs per output element
  // Engine (a) with one-hot masks when W has at most 64 distinct values (faster);
  // false forces the general kernel (tests compare the two).
  bool masked = true;
  // Sampling estimate: `sample` multiplications drawn, stratified over
  // zone_rows x zone_cols zones (rows t of X x outputs o); 0: no sampling.
  int64_t sample = 0;
  int zone_rows = 4, zone_cols = 4;
  uint64_t seed = 0;
};

struct ReuseCount {
  int64_t mults = 0;     // T * N * K
  int64_t distinct = 0;  // distinct unordered pairs {|x|, |w|} of the whole matmul
  // Engine (a): sum over the T*N outputs of the distinct pairs among its K
  // terms (-1 when not counted). Engine (b), a shared product table, is `distinct`.
  int64_t per_output = -1;
  int64_t samples = 0;          // multiplications drawn (0: no sampling)
  double sample_hits = 0;       // naive estimate: hits within the drawn multiplications, zone-weighted
  double sample_freq_hits = 0;  // 1/frequency estimate (unbiased for distinct / mults)
  double hits() const { return mults ? 100.0 * double(mults - distinct) / double(mults) : 0; }
};

// Counts X (T, K), rounded to W.decimals, against the prepared W. Exact: every
// one of the T*N*K multiplications. OpenMP over values / rows.
ReuseCount count_reuse(const float* X, int64_t T, const ReuseWeights& W, const ReuseCountOptions& opt = {});

// ---- Reuse-aware matmul -------------------------------------------------

enum class ReuseEngine {
  PerOutput,  // per output element: one multiplication per distinct pair among its K terms
  Table,      // per matmul: one multiplication per distinct pair, then table look-ups
};

// Y (T, N) = round(X) round(W)^T computed exactly: the rounded operands are the
// integers k / 10^d, products |kx| * |kw| are formed once per distinct pair
// (per output or per matmul), signed sums of them are accumulated exactly in
// 128-bit integers, and each output is divided by 10^(2d) and rounded to float
// once. Returns the multiplications performed.
int64_t reuse_matmul(const float* X, const float* W, float* Y, int64_t T, int64_t N, int64_t K, int decimals,
                     ReuseEngine engine);

}  // namespace vitkit::kernels
