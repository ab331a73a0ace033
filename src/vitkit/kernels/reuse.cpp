#include "vitkit/kernels/reuse.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <unordered_map>
#include <utility>

#include "vitkit/core/error.h"
#include "vitkit/core/rng.h"
#include "vitkit/core/threads.h"

namespace vitkit::kernels {

// Codes of n values (parallel); throws naming the first bad one.
static std::vector<uint64_t> magnitude_codes(const float* x, int64_t n, int d, const char* what) {
  const double p = pow10_exact(d);
  std::vector<uint64_t> c(static_cast<size_t>(n));
  int64_t bad = -1;
#pragma omp parallel for schedule(static) reduction(max : bad) if (n > (int64_t(1) << 18)) num_threads(num_threads())
  for (int64_t i = 0; i < n; ++i) {
    const double u = std::fabs(decimal_units_at(x[i], p));
    if (u < kMaxMagnitudeCode) {
      c[i] = uint64_t(u);
    } else {
      c[i] = 0;
      bad = std::max(bad, i);
    }
  }
  if (bad >= 0) magnitude_code(x[bad], d, what);  // throws with the value
  return c;
}

// ---- Dense ranks of codes ------------------------------------------------

// The sorted distinct codes of a set and each code's rank among them: a direct
// table when the codes are small (the usual case at d <= 4), else a search.
class CodeRanks {
 public:
  explicit CodeRanks(const std::vector<uint64_t>& codes) {
    uint64_t mx = 0;
    for (uint64_t c : codes) mx = std::max(mx, c);
    if (mx < std::max<uint64_t>(uint64_t(1) << 16, 4 * uint64_t(codes.size()))) {
      dense_.assign(size_t(mx) + 1, -1);
      for (uint64_t c : codes) dense_[c] = 0;
      for (size_t v = 0; v < dense_.size(); ++v)
        if (dense_[v] == 0) {
          dense_[v] = int32_t(uniq.size());
          uniq.push_back(v);
        }
    } else {
      uniq = codes;
      std::sort(uniq.begin(), uniq.end());
      uniq.erase(std::unique(uniq.begin(), uniq.end()), uniq.end());
    }
  }
  // Rank of a code of the set.
  uint32_t rank(uint64_t c) const {
    if (!dense_.empty()) return uint32_t(dense_[c]);
    return uint32_t(std::lower_bound(uniq.begin(), uniq.end(), c) - uniq.begin());
  }
  std::vector<uint64_t> uniq;

 private:
  std::vector<int32_t> dense_;
};

// ---- The weight operand ----------------------------------------------------

ReuseWeights::ReuseWeights(const float* W, int64_t n, int64_t k, int d) : N(n), K(k), decimals(d) {
  check(N > 0 && K > 0, "reuse: empty weight (", N, " x ", K, ")");
  const std::vector<uint64_t> codes = magnitude_codes(W, N * K, d, "weight");
  CodeRanks ranks(codes);
  ids.resize(size_t(N * K));
#pragma omp parallel for schedule(static) if (N * K > (int64_t(1) << 18)) num_threads(num_threads())
  for (int64_t i = 0; i < N * K; ++i) ids[i] = ranks.rank(codes[i]);
  values = std::move(ranks.uniq);
  const int64_t nB = distinct();
  words = (nB + 63) / 64;
  colbits.assign(size_t(K * words), 0);
  col_ptr.assign(size_t(K + 1), 0);
  // Per column: the ids present (bitset) and their counts (ids ascending).
  std::vector<uint32_t> count(size_t(nB), 0);
  for (int64_t c = 0; c < K; ++c) {
    uint64_t* bits = colbits.data() + c * words;
    for (int64_t o = 0; o < N; ++o) {
      const uint32_t id = ids[o * K + c];
      bits[id >> 6] |= uint64_t(1) << (id & 63);
      ++count[id];
    }
    for (int64_t w = 0; w < words; ++w)
      for (uint64_t b = bits[w]; b; b &= b - 1) {
        const uint32_t id = uint32_t(w * 64 + std::countr_zero(b));
        col_id.push_back(id);
        col_count.push_back(count[id]);
        count[id] = 0;
      }
    col_ptr[c + 1] = int64_t(col_id.size());
  }
}

// ---- The activation operand ----------------------------------------------

// X rounded and indexed against W: a value equal to a W value gets that W id
// (so that unordered pairs can be matched), other values ids nB, nB+1, ...
struct XIndex {
  int64_t T = 0, K = 0, nB = 0, nX = 0;  // ids in [0, nX)
  std::vector<uint32_t> xid;             // (T, K)
  std::vector<uint64_t> code;            // (nX) magnitude code of each id
  // Inverted index: columns holding id a, ascending, with a's count in each:
  // col/cnt[ptr[a] .. ptr[a+1]).
  std::vector<int64_t> ptr;
  std::vector<uint32_t> col, cnt;
  bool present(int64_t a) const { return ptr[a + 1] > ptr[a]; }
};

static XIndex index_x(const float* X, int64_t T, const ReuseWeights& W) {
  XIndex x;
  x.T = T;
  x.K = W.K;
  x.nB = W.distinct();
  const int64_t K = W.K, n = T * K;
  const std::vector<uint64_t> codes = magnitude_codes(X, n, W.decimals, "activation");
  CodeRanks ranks(codes);
  // Rank -> id.
  std::vector<uint32_t> id_of(ranks.uniq.size());
  x.code = W.values;
  for (size_t r = 0; r < ranks.uniq.size(); ++r) {
    const uint64_t c = ranks.uniq[r];
    auto it = std::lower_bound(W.values.begin(), W.values.end(), c);
    if (it != W.values.end() && *it == c) {
      id_of[r] = uint32_t(it - W.values.begin());
    } else {
      id_of[r] = uint32_t(x.code.size());
      x.code.push_back(c);
    }
  }
  x.nX = int64_t(x.code.size());
  x.xid.resize(size_t(n));
#pragma omp parallel for schedule(static) if (n > (int64_t(1) << 18)) num_threads(num_threads())
  for (int64_t i = 0; i < n; ++i) x.xid[i] = id_of[ranks.rank(codes[i])];
  // (id, column, count) per column, then grouped by id (counting sort).
  struct Entry {
    uint32_t id, col, cnt;
  };
  std::vector<Entry> entries;
  entries.reserve(size_t(n));
  std::vector<int64_t> slot(size_t(x.nX), -1);
  std::vector<int64_t> slot_col(size_t(x.nX), -1);
  for (int64_t c = 0; c < K; ++c)
    for (int64_t t = 0; t < T; ++t) {
      const uint32_t a = x.xid[t * K + c];
      if (slot_col[a] != c) {
        slot_col[a] = c;
        slot[a] = int64_t(entries.size());
        entries.push_back({a, uint32_t(c), 1});
      } else {
        ++entries[size_t(slot[a])].cnt;
      }
    }
  x.ptr.assign(size_t(x.nX + 1), 0);
  for (const Entry& e : entries) ++x.ptr[e.id + 1];
  for (int64_t a = 0; a < x.nX; ++a) x.ptr[a + 1] += x.ptr[a];
  x.col.resize(entries.size());
  x.cnt.resize(entries.size());
  std::vector<int64_t> fill(x.ptr.begin(), x.ptr.end() - 1);
  for (const Entry& e : entries) {
    const int64_t p = fill[e.id]++;
    x.col[p] = e.col;
    x.cnt[p] = e.cnt;
  }
  return x;
}

// ---- Distinct pairs of the matmul ----------------------------------------

// The ordered pairs (x id a, w id b) that occur are S = U_k A_k x B_k. Row a of
// S is the OR of the W bitsets of the columns holding a. An unordered pair
// {a, b} with a != b is counted twice when both (a, b) and (b, a) occur, which
// needs a and b to be values of both operands: those rows are kept and the
// double counts subtracted.
static int64_t distinct_pairs(const XIndex& x, const ReuseWeights& W) {
  const int64_t words = W.words, nB = x.nB, nX = x.nX;
  // Rows kept for the correction: ids < nB present in X.
  std::vector<int64_t> crow_of(size_t(nB), -1);
  int64_t nC = 0;
  for (int64_t a = 0; a < nB; ++a)
    if (x.present(a)) crow_of[a] = nC++;
  std::vector<uint64_t> crow(size_t(nC * words), 0);
  int64_t total = 0;
#pragma omp parallel reduction(+ : total) if (int64_t(x.col.size()) * words > (int64_t(1) << 18)) num_threads(num_threads())
  {
    std::vector<uint64_t> acc(static_cast<size_t>(words));
#pragma omp for schedule(dynamic, 64)
    for (int64_t a = 0; a < nX; ++a) {
      const int64_t p0 = x.ptr[a], p1 = x.ptr[a + 1];
      if (p0 == p1) continue;
      std::fill(acc.begin(), acc.end(), 0);
      for (int64_t p = p0; p < p1; ++p) {
        const uint64_t* bits = W.colbits.data() + int64_t(x.col[p]) * words;
        for (int64_t w = 0; w < words; ++w) acc[w] |= bits[w];
      }
      for (int64_t w = 0; w < words; ++w) total += std::popcount(acc[w]);
      if (a < nB) std::copy(acc.begin(), acc.end(), crow.begin() + crow_of[a] * words);
    }
  }
  // Pairs a < b of common values with both (a, b) and (b, a) in S.
  int64_t twice = 0;
#pragma omp parallel for schedule(dynamic, 16) reduction(+ : twice) if (nC * words > (int64_t(1) << 18)) num_threads(num_threads())
  for (int64_t a = 0; a < nB; ++a) {
    if (crow_of[a] < 0) continue;
    const uint64_t* row = crow.data() + crow_of[a] * words;
    for (int64_t w = (a + 1) / 64; w < words; ++w) {
      uint64_t bits = row[w];
      if (w == (a + 1) / 64) bits &= ~uint64_t(0) << ((a + 1) % 64);
      for (; bits; bits &= bits - 1) {
        const int64_t b = w * 64 + std::countr_zero(bits);
        if (crow_of[b] < 0) continue;
        const uint64_t* rb = crow.data() + crow_of[b] * words;
        twice += (rb[a >> 6] >> (a & 63)) & 1;
      }
    }
  }
  return total - twice;
}

// ---- Engine (a): distinct pairs per output -------------------------------

// Per row t, the columns are grouped by x id. A group whose value is not a W
// value has as many distinct pairs, per output o, as distinct w ids over its
// columns (one when the group has one column). Columns whose x value is also a
// W value (common values) may pair with swapped partners; their pairs get a
// canonical code (x's row-local index, w id) with the larger local index first.
namespace {
struct RowScratch {
  std::vector<std::pair<uint32_t, uint32_t>> order;  // (x id, column)
  std::vector<uint32_t> gcols;                       // columns of multi-column groups
  std::vector<int64_t> gstart;                       // group boundaries in gcols
  std::vector<uint32_t> ccol, clocal, cid;           // common-value columns: column, local index, x id
  std::vector<int32_t> local;                        // (nB) local index of a common x id in the row, -1
  std::vector<uint32_t> stamp, ctab;                 // distinct-w stamps (nB); canonical pair stamps
  std::vector<uint64_t> codes;                       // fallback when the pair table would be too large
  uint32_t gen = 0, cgen = 0;
};
}  // namespace

static int64_t per_output_row(const XIndex& x, const ReuseWeights& W, int64_t t, RowScratch& s) {
  const int64_t K = W.K, N = W.N, nB = x.nB;
  const uint32_t* xr = x.xid.data() + t * K;
  s.order.resize(size_t(K));
  for (int64_t k = 0; k < K; ++k) s.order[k] = {xr[k], uint32_t(k)};
  std::sort(s.order.begin(), s.order.end());
  int64_t singles = 0, nc = 0;
  s.gcols.clear();
  s.gstart.assign(1, 0);
  s.ccol.clear();
  s.clocal.clear();
  s.cid.clear();
  for (int64_t i = 0; i < K;) {
    int64_t j = i;
    const uint32_t a = s.order[i].first;
    while (j < K && s.order[j].first == a) ++j;
    if (a < nB) {
      s.local[a] = int32_t(nc);
      for (int64_t q = i; q < j; ++q) {
        s.ccol.push_back(s.order[q].second);
        s.clocal.push_back(uint32_t(nc));
        s.cid.push_back(a);
      }
      ++nc;
    } else if (j - i == 1) {
      ++singles;
    } else {
      for (int64_t q = i; q < j; ++q) s.gcols.push_back(s.order[q].second);
      s.gstart.push_back(int64_t(s.gcols.size()));
    }
    i = j;
  }
  const int64_t groups = int64_t(s.gstart.size()) - 1, ncc = int64_t(s.ccol.size());
  const bool table = nc * nB <= (int64_t(1) << 24);
  if (ncc && table && int64_t(s.ctab.size()) < nc * nB) s.ctab.resize(size_t(nc * nB), 0);
  int64_t total = 0;
  for (int64_t o = 0; o < N; ++o) {
    const uint32_t* wr = W.ids.data() + o * K;
    int64_t d = singles;
    for (int64_t g = 0; g < groups; ++g) {
      if (++s.gen == 0) std::fill(s.stamp.begin(), s.stamp.end(), 0), s.gen = 1;
      for (int64_t q = s.gstart[g]; q < s.gstart[g + 1]; ++q) {
        const uint32_t b = wr[s.gcols[q]];
        if (s.stamp[b] != s.gen) s.stamp[b] = s.gen, ++d;
      }
    }
    if (ncc) {
      auto code = [&](int64_t q) -> uint64_t {
        const uint32_t b = wr[s.ccol[q]];
        const int64_t i = s.clocal[q], jl = s.local[b];
        return (jl < 0 || i >= jl) ? uint64_t(i * nB + b) : uint64_t(jl * nB + s.cid[q]);
      };
      if (table) {
        if (++s.cgen == 0) std::fill(s.ctab.begin(), s.ctab.end(), 0), s.cgen = 1;
        for (int64_t q = 0; q < ncc; ++q) {
          const uint64_t c = code(q);
          if (s.ctab[c] != s.cgen) s.ctab[c] = s.cgen, ++d;
        }
      } else {
        s.codes.resize(size_t(ncc));
        for (int64_t q = 0; q < ncc; ++q) s.codes[q] = code(q);
        std::sort(s.codes.begin(), s.codes.end());
        d += std::unique(s.codes.begin(), s.codes.end()) - s.codes.begin();
      }
    }
    total += d;
  }
  for (uint32_t a : s.cid) s.local[a] = -1;
  return total;
}

// With at most 64 distinct weights (the usual case at d <= 3) the same counts
// come from one-hot masks, vectorised over the outputs o: for a group G of
// columns with one x value, sum_o popcount(OR_{k in G} onehot(w[o,k])) distinct
// pairs; for the common values, their masks are kept and a pair {a, b} seen in
// both orders, bit b of mask_a[o] and bit a of mask_b[o], is counted once.
template <typename Mask>
static int64_t per_output_masked(const XIndex& x, const ReuseWeights& W) {
  const int64_t K = W.K, N = W.N, T = x.T, nB = x.nB;
  std::vector<Mask> onehot(size_t(K * N));  // (K, N)
#pragma omp parallel for schedule(static) if (K * N > (int64_t(1) << 18)) num_threads(num_threads())
  for (int64_t k = 0; k < K; ++k)
    for (int64_t o = 0; o < N; ++o) onehot[k * N + o] = Mask(Mask(1) << W.ids[o * K + k]);
  int64_t total = 0;
#pragma omp parallel reduction(+ : total) if (T * N * K > (int64_t(1) << 22)) num_threads(num_threads())
  {
    std::vector<std::pair<uint32_t, uint32_t>> order(static_cast<size_t>(K));
    std::vector<Mask> acc(static_cast<size_t>(N)), cmask(static_cast<size_t>(nB * N));
    std::vector<uint32_t> cids;
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < T; ++t) {
      const uint32_t* xr = x.xid.data() + t * K;
      for (int64_t k = 0; k < K; ++k) order[k] = {xr[k], uint32_t(k)};
      std::sort(order.begin(), order.end());
      cids.clear();
      int64_t row = 0;
      for (int64_t i = 0; i < K;) {
        int64_t j = i;
        const uint32_t a = order[i].first;
        while (j < K && order[j].first == a) ++j;
        if (a >= nB && j - i == 1) {
          row += N;  // one column, a value W does not have: one pair per output
          i = j;
          continue;
        }
        Mask* m = a < nB ? cmask.data() + int64_t(cids.size()) * N : acc.data();
        const Mask* first = onehot.data() + int64_t(order[i].second) * N;
        for (int64_t o = 0; o < N; ++o) m[o] = first[o];
        for (int64_t q = i + 1; q < j; ++q) {
          const Mask* col = onehot.data() + int64_t(order[q].second) * N;
          for (int64_t o = 0; o < N; ++o) m[o] |= col[o];
        }
        for (int64_t o = 0; o < N; ++o) row += std::popcount(m[o]);
        if (a < nB) cids.push_back(a);
        i = j;
      }
      // Common values a < b (W ids): {a, b} seen as (a, b) and as (b, a).
      for (size_t c1 = 0; c1 < cids.size(); ++c1)
        for (size_t c2 = c1 + 1; c2 < cids.size(); ++c2) {
          const Mask* ma = cmask.data() + int64_t(c1) * N;
          const Mask* mb = cmask.data() + int64_t(c2) * N;
          const uint32_t a = cids[c1], b = cids[c2];
          int64_t twice = 0;
          for (int64_t o = 0; o < N; ++o) twice += (ma[o] >> b) & (mb[o] >> a) & 1;
          row -= twice;
        }
      total += row;
    }
  }
  return total;
}

static int64_t per_output_pairs(const XIndex& x, const ReuseWeights& W, bool masked) {
  if (masked && x.nB <= 8) return per_output_masked<uint8_t>(x, W);
  if (masked && x.nB <= 16) return per_output_masked<uint16_t>(x, W);
  if (masked && x.nB <= 32) return per_output_masked<uint32_t>(x, W);
  if (masked && x.nB <= 64) return per_output_masked<uint64_t>(x, W);
  int64_t total = 0;
#pragma omp parallel reduction(+ : total) if (x.T * W.N * W.K > (int64_t(1) << 22)) num_threads(num_threads())
  {
    RowScratch s;
    s.local.assign(size_t(x.nB), -1);
    s.stamp.assign(size_t(x.nB), 0);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < x.T; ++t) total += per_output_row(x, W, t, s);
  }
  return total;
}

// ---- Sampling estimate -----------------------------------------------------

// Count of W id b in column k.
static int64_t w_count(const ReuseWeights& W, int64_t k, uint32_t b) {
  auto first = W.col_id.begin() + W.col_ptr[k], last = W.col_id.begin() + W.col_ptr[k + 1];
  auto it = std::lower_bound(first, last, b);
  return (it != last && *it == b) ? W.col_count[size_t(it - W.col_id.begin())] : 0;
}

// Multiplications of the whole matmul with the unordered pair {x id a, w id b}:
// sum_k cX_k(a) cW_k(b), plus the swapped sum_k cX_k(b) cW_k(a) when a != b and
// both are common values.
static int64_t pair_frequency(const XIndex& x, const ReuseWeights& W, uint32_t a, uint32_t b) {
  auto side = [&](uint32_t xa, uint32_t wb) {
    int64_t f = 0;
    for (int64_t p = x.ptr[xa]; p < x.ptr[xa + 1]; ++p) f += int64_t(x.cnt[p]) * w_count(W, x.col[p], wb);
    return f;
  };
  int64_t f = side(a, b);
  if (a != b && a < x.nB && x.present(b)) f += side(b, a);
  return f;
}

static void sample_estimate(const XIndex& x, const ReuseWeights& W, const ReuseCountOptions& opt, ReuseCount& r) {
  const int64_t T = x.T, N = W.N, K = W.K;
  const int64_t zr = std::clamp<int64_t>(opt.zone_rows, 1, T), zc = std::clamp<int64_t>(opt.zone_cols, 1, N);
  const int64_t zones = zr * zc;
  Rng rng(opt.seed);
  double naive = 0, inv = 0;
  int64_t drawn = 0;
  std::vector<std::pair<uint64_t, uint64_t>> pairs;
  std::unordered_map<uint64_t, int64_t> freq;  // (x id, w id) -> frequency
  for (int64_t z = 0; z < zones; ++z) {
    const int64_t r0 = T * (z / zc) / zr, r1 = T * (z / zc + 1) / zr;
    const int64_t c0 = N * (z % zc) / zc, c1 = N * (z % zc + 1) / zc;
    const int64_t n = std::max<int64_t>(1, opt.sample / zones + (z < opt.sample % zones ? 1 : 0));
    const double share = double(r1 - r0) * double(c1 - c0) / (double(T) * double(N));  // M_z / M
    pairs.clear();
    double inv_sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = r0 + int64_t(rng.below(uint64_t(r1 - r0)));
      const int64_t o = c0 + int64_t(rng.below(uint64_t(c1 - c0)));
      const int64_t k = int64_t(rng.below(uint64_t(K)));
      const uint32_t a = x.xid[t * K + k], b = W.ids[o * K + k];
      const uint64_t ca = x.code[a], cb = W.values[b];
      pairs.push_back({std::min(ca, cb), std::max(ca, cb)});
      auto [it, fresh] = freq.try_emplace((uint64_t(a) << 32) | b, 0);
      if (fresh) it->second = pair_frequency(x, W, a, b);  // few distinct pairs at low d: cache them
      inv_sum += 1.0 / double(it->second);
    }
    std::sort(pairs.begin(), pairs.end());
    const int64_t distinct = std::unique(pairs.begin(), pairs.end()) - pairs.begin();
    naive += share * 100.0 * double(n - distinct) / double(n);
    inv += share * inv_sum / double(n);
    drawn += n;
  }
  r.samples = drawn;
  r.sample_hits = naive;
  r.sample_freq_hits = 100.0 * (1.0 - inv);
}

ReuseCount count_reuse(const float* X, int64_t T, const ReuseWeights& W, const ReuseCountOptions& opt) {
  check(T > 0, "reuse: no rows in X");
  const XIndex x = index_x(X, T, W);
  ReuseCount r;
  r.mults = T * W.N * W.K;
  r.distinct = distinct_pairs(x, W);
  if (opt.per_output) r.per_output = per_output_pairs(x, W, opt.masked);
  if (opt.sample > 0) sample_estimate(x, W, opt, r);
  return r;
}

// ---- Reuse-aware matmul ----------------------------------------------------

// Deliberately independent of the counting code above (raw magnitude codes,
// sorting and hashing instead of ids and bitsets) so that each checks the other.
namespace {

using i128 = __int128;

struct Operand {
  std::vector<uint64_t> mag;  // |k|
  std::vector<int8_t> sign;   // -1, 0, +1
};

Operand operand(const float* v, int64_t n, int d, const char* what) {
  Operand op;
  op.mag = magnitude_codes(v, n, d, what);
  op.sign.resize(size_t(n));
  const double p = pow10_exact(d);
  for (int64_t i = 0; i < n; ++i) {
    const double u = decimal_units_at(v[i], p);
    op.sign[i] = int8_t((u > 0) - (u < 0));
  }
  return op;
}

struct PairKey {
  uint64_t lo, hi;
  bool operator==(const PairKey& o) const { return lo == o.lo && hi == o.hi; }
  bool operator<(const PairKey& o) const { return lo < o.lo || (lo == o.lo && hi < o.hi); }
};
struct PairHash {
  size_t operator()(const PairKey& k) const { return size_t(k.lo * 0x9E3779B97F4A7C15ull ^ (k.hi + (k.lo << 6))); }
};

PairKey key(uint64_t a, uint64_t b) { return {std::min(a, b), std::max(a, b)}; }

float to_float(i128 acc, int d) {
  const long double p = (long double)pow10_exact(d) * (long double)pow10_exact(d);
  return float((long double)acc / p);
}

}  // namespace

int64_t reuse_matmul(const float* X, const float* W, float* Y, int64_t T, int64_t N, int64_t K, int d,
                     ReuseEngine engine) {
  const Operand x = operand(X, T * K, d, "activation"), w = operand(W, N * K, d, "weight");
  int64_t mults = 0;
  if (engine == ReuseEngine::PerOutput) {
#pragma omp parallel reduction(+ : mults) num_threads(num_threads())
    {
      struct Term {
        PairKey k;
        int sign;
      };
      std::vector<Term> terms(static_cast<size_t>(K));
#pragma omp for schedule(dynamic, 1)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t o = 0; o < N; ++o) {
          for (int64_t k = 0; k < K; ++k) {
            const int64_t i = t * K + k, j = o * K + k;
            terms[k] = {key(x.mag[i], w.mag[j]), x.sign[i] * w.sign[j]};
          }
          std::sort(terms.begin(), terms.end(), [](const Term& a, const Term& b) { return a.k < b.k; });
          i128 acc = 0;
          for (int64_t k = 0; k < K;) {
            const PairKey run = terms[k].k;
            const i128 prod = i128(run.lo) * i128(run.hi);  // one multiplication per distinct pair
            ++mults;
            for (; k < K && terms[k].k == run; ++k) acc += terms[k].sign * prod;
          }
          Y[t * N + o] = to_float(acc, d);
        }
    }
    return mults;
  }
  // Table: every distinct pair of the matmul once (pairs occur within a column).
  std::unordered_map<PairKey, i128, PairHash> table;
  for (int64_t k = 0; k < K; ++k) {
    std::vector<uint64_t> xs, ws;
    for (int64_t t = 0; t < T; ++t) xs.push_back(x.mag[t * K + k]);
    for (int64_t o = 0; o < N; ++o) ws.push_back(w.mag[o * K + k]);
    for (auto* v : {&xs, &ws}) {
      std::sort(v->begin(), v->end());
      v->erase(std::unique(v->begin(), v->end()), v->end());
    }
    for (uint64_t a : xs)
      for (uint64_t b : ws) {
        const PairKey pk = key(a, b);
        if (!table.count(pk)) table.emplace(pk, i128(pk.lo) * i128(pk.hi));
      }
  }
  mults = int64_t(table.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads())
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < N; ++o) {
      i128 acc = 0;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t i = t * K + k, j = o * K + k;
        acc += x.sign[i] * w.sign[j] * table.find(key(x.mag[i], w.mag[j]))->second;
      }
      Y[t * N + o] = to_float(acc, d);
    }
  return mults;
}

}  // namespace vitkit::kernels
