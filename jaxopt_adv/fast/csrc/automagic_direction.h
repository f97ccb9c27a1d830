// Automagic-CameAMP's direction control (jaxopt_adv.automagic.body.automagic_direction) of
// matrices, shared by automagic_direction.cc (the direction's kernel) and
// automagic_body.cc (the scaling and direction in one kernel): the scalars, a leaf, and
// the passes that do not depend on where the update u comes from:
//   early (Grams, edge damping, OrthoGrad):
//     1. c = |u| sign(g), the Laplacian of c over the last two axes (neighbour rows from
//        the inputs), the edge history H' = d H + (1 - d) E(c), c' = c clip(1 - H', f, 1)
//        into out; the sums of w c', w w and c' c'           reads u, g, w, H; writes out, H'
//     2. OrthoGrad's |c' - w p| (p the projection) from those sums as
//        |c'|^2 - 2 p (w c') + p^2 |w|^2, or, where c' - w p is less than a third of c'
//        (too much cancels) or not finite, from a pass over the leaf   (reads out, w)
//     3. out = c' unchanged, or (c' - w p) |c'| / (|c' - w p| + eps)   reads out, w
//   later (Cautious, background halving): per leaf the count of u g > 0 and the sums of
//     g - g0 and (g - g0)^2 (g0: the leaf's first element; the unbiased variance), then
//     out = u ((1[u g > 0] / max(mean, floor)) (factor if var < threshold)).
// Sums are accumulated in double (in a fixed order of tasks: the results do not depend on
// the thread count), so results agree with the XLA path to rounding, not bit for bit.
#ifndef JAXOPT_ADV_FAST_AUTOMAGIC_DIRECTION_H_
#define JAXOPT_ADV_FAST_AUTOMAGIC_DIRECTION_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common.h"

namespace {

// The direction's scalars after the phase flag, in their operand order.
constexpr int kDirectionScalars = 9;

template <typename T>
struct DirectionScalars {
  T early;                                // 1 in the early phase, else 0
  T edge_decay, edge_keep, edge_threshold, edge_penalty, edge_floor;
  T ortho_eps, mean_floor, background_threshold, background_factor;
};

template <typename T>
DirectionScalars<T> DirectionScalarsOf(T early, const T* v) {
  return {early, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]};
}

// A leaf seen as batch matrices of rows x cols: u (absent where the kernel forms it), g
// (the reference gradient), w (the params), H (the edge history; absent without edge
// suppression) and their results.
template <typename T>
struct DirectionLeaf {
  const T* u = nullptr;
  const T* g = nullptr;
  const T* w = nullptr;
  const T* history = nullptr;
  T* new_history = nullptr;
  T* out = nullptr;
  int64_t batch = 0, rows = 0, cols = 0;
  // per leaf, from the first pass: OrthoGrad's projection and Cautious's mask factor
  T projection = 0, rescale = 0;
  bool keep = false;
  bool exact = false;  // |c' - w p| needs its own pass
  T mask_denom = 1;
  bool background = false;
};

// Rows [lo, hi) of one leaf's batch * rows rows.
struct DirectionTask {
  int64_t leaf, lo, hi;
};

// jnp.sign(g) times |u|: +-|u|, and 0, -0 or NaN times |u| where g is.
template <typename T>
inline T Grams(T u, T g) {
  const T sign = g > T(0) ? T(1) : (g < T(0) ? T(-1) : g);
  return std::fabs(u) * sign;
}

// The edge factor of one element: H' = d H + (1 - d) E(lap), clip(1 - H', f, 1).
template <typename T>
inline T EdgeFactor(const DirectionScalars<T>& s, T lap, T old_history, T* new_history) {
  const T magnitude = std::fabs(lap);
  const T strength = magnitude > s.edge_threshold ? magnitude * s.edge_penalty : T(0);
  const T history = s.edge_decay * old_history + s.edge_keep * strength;
  *new_history = history;
  return XlaMin(XlaMax(T(1) - history, s.edge_floor), T(1));
}

// Cautious's masked update of one element.
template <typename T>
inline T CautiousElement(T u, T g, T denom, bool background, T factor) {
  T mask = (u * g > T(0) ? T(1) : T(0)) / denom;
  if (background) mask = mask * factor;
  return u * mask;
}

// Early pass 1 over a task: Grams (grams_row(r, c) writes row r's |u| sign(g) into c),
// edge damping (with_edge), out = c'; sums[0..3) = sums of w c', w w, c' c'.
template <typename T, typename GramsRow>
void EarlyFirstPass(const DirectionScalars<T>& s, bool with_edge, DirectionLeaf<T>& leaf,
                    const DirectionTask& t, GramsRow grams_row, double* sums) {
  const int64_t cols = leaf.cols;
  // the Grams of three rows (a row and its neighbours, each computed once) and a Laplacian
  std::vector<T> buffer(4 * cols);
  T* slot[3] = {buffer.data(), buffer.data() + cols, buffer.data() + 2 * cols};
  T* lap = buffer.data() + 3 * cols;
  int64_t held[3] = {-3, -3, -3};  // the row each slot holds (none yet)
  double wc = 0, ww = 0, cc = 0;
  for (int64_t row = t.lo; row < t.hi; ++row) {
    // the Grams of row r, in a slot not holding one of this row's three
    const auto grams_of = [&](int64_t r) -> const T* {
      for (int k = 0; k < 3; ++k) {
        if (held[k] == r) return slot[k];
      }
      int k = 0;
      while (held[k] >= row - 1 && held[k] <= row + 1) ++k;
      grams_row(r, slot[k]);
      held[k] = r;
      return slot[k];
    };
    const int64_t i = row % leaf.rows;
    const bool row_term = with_edge && leaf.rows > 2 && i >= 1 && i + 1 < leaf.rows;
    const T* cur = grams_of(row);
    const int64_t at = row * cols;
    const T* w = leaf.w + at;
    T* out = leaf.out + at;
    if (with_edge) {
      // XLA's order: 0, plus the row term (interior rows), plus the column term
      if (row_term) {
        const T* prev = grams_of(row - 1);
        const T* next = grams_of(row + 1);
#pragma omp simd
        for (int64_t j = 0; j < cols; ++j) lap[j] = T(0) + ((next[j] - T(2) * cur[j]) + prev[j]);
      } else {
        std::fill(lap, lap + cols, T(0));
      }
#pragma omp simd
      for (int64_t j = 1; j < cols - 1; ++j) {
        lap[j] = lap[j] + ((cur[j + 1] - T(2) * cur[j]) + cur[j - 1]);
      }
      const T* h_in = leaf.history + at;
      T* h_out = leaf.new_history + at;
#pragma omp simd
      for (int64_t j = 0; j < cols; ++j) out[j] = cur[j] * EdgeFactor(s, lap[j], h_in[j], h_out + j);
    } else {
#pragma omp simd
      for (int64_t j = 0; j < cols; ++j) out[j] = cur[j];
    }
    // products in double: exact for float32, so that |c' - w p| can be formed from them
#pragma omp simd reduction(+ : wc, ww, cc)
    for (int64_t j = 0; j < cols; ++j) {
      const double wj = w[j], cj = out[j];
      wc += wj * cj;
      ww += wj * wj;
      cc += cj * cj;
    }
  }
  sums[0] = wc;
  sums[1] = ww;
  sums[2] = cc;
}

// Early pass 2 over a task (a leaf that needs it): the sum of squares of c' - w p.
template <typename T>
double OrthogonalSumOfSquares(const DirectionLeaf<T>& leaf, const DirectionTask& t) {
  const int64_t at = t.lo * leaf.cols;
  const int64_t n = (t.hi - t.lo) * leaf.cols;
  const T* c = leaf.out + at;
  const T* w = leaf.w + at;
  const T p = leaf.projection;
  double sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t k = 0; k < n; ++k) {
    const T x = c[k] - w[k] * p;
    sum += static_cast<double>(x * x);
  }
  return sum;
}

// Early pass 3 over a task: out = (c' - w p) * rescale, unless the leaf keeps c'.
template <typename T>
void Orthogonalize(DirectionLeaf<T>& leaf, const DirectionTask& t) {
  if (leaf.keep) return;
  const int64_t at = t.lo * leaf.cols;
  const int64_t n = (t.hi - t.lo) * leaf.cols;
  T* c = leaf.out + at;
  const T* w = leaf.w + at;
  const T p = leaf.projection;
  const T r = leaf.rescale;
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) c[k] = (c[k] - w[k] * p) * r;
}

// The old edge history copied to the new one (later phase: H is kept).
template <typename T>
void CopyHistory(DirectionLeaf<T>& leaf, const DirectionTask& t) {
  if (leaf.history == nullptr || leaf.history == leaf.new_history) return;
  const int64_t at = t.lo * leaf.cols;
  std::copy(leaf.history + at, leaf.history + at + (t.hi - t.lo) * leaf.cols,
            leaf.new_history + at);
}

// Per-task sums of three, added in task order per leaf.
template <typename T>
std::vector<double> LeafSums(const std::vector<DirectionLeaf<T>>& leaves,
                             const std::vector<DirectionTask>& tasks,
                             const std::vector<double>& task_sums) {
  std::vector<double> sums(3 * leaves.size(), 0.0);
  for (size_t k = 0; k < tasks.size(); ++k) {
    for (int i = 0; i < 3; ++i) sums[3 * tasks[k].leaf + i] += task_sums[3 * k + i];
  }
  return sums;
}

// Early passes 2 and 3 after pass 1's per-task sums (of w c', w w, c' c'): OrthoGrad's
// projection, its orthogonal norm (from the sums, or a pass over the leaves that need
// one) and the projected, rescaled update.
template <typename T>
void OrthogonalizeLeaves(ffi::ThreadPool& pool, const DirectionScalars<T>& s,
                         const std::vector<DirectionTask>& tasks, int64_t total,
                         const std::vector<double>& task_sums,
                         std::vector<DirectionLeaf<T>>& leaves) {
  const int64_t n = static_cast<int64_t>(tasks.size());
  const std::vector<double> sums = LeafSums(leaves, tasks, task_sums);
  std::vector<double> orth_sums(leaves.size(), 0.0);
  bool any_exact = false;
  for (size_t l = 0; l < leaves.size(); ++l) {
    DirectionLeaf<T>& leaf = leaves[l];
    const double wc = sums[3 * l], ww = sums[3 * l + 1], cc = sums[3 * l + 2];
    leaf.projection = static_cast<T>(wc) / (static_cast<T>(ww) + s.ortho_eps);
    const double p = static_cast<double>(leaf.projection);
    orth_sums[l] = cc - 2.0 * p * wc + p * p * ww;
    // rounding of the three sums is ~1e-16 of cc, of the sum past 1/9 of it ~1e-15
    leaf.exact = !(std::isfinite(orth_sums[l]) && orth_sums[l] >= cc / 9.0);
    any_exact = any_exact || leaf.exact;
  }
  if (any_exact) {
    std::vector<double> orth(n, 0.0);
    ParallelFor(pool, n, total, [&](int64_t k) {
      const DirectionLeaf<T>& leaf = leaves[tasks[k].leaf];
      if (leaf.exact) orth[k] = OrthogonalSumOfSquares(leaf, tasks[k]);
    });
    for (size_t l = 0; l < leaves.size(); ++l) {
      if (leaves[l].exact) orth_sums[l] = 0.0;
    }
    for (int64_t k = 0; k < n; ++k) {
      if (leaves[tasks[k].leaf].exact) orth_sums[tasks[k].leaf] += orth[k];
    }
  }
  for (size_t l = 0; l < leaves.size(); ++l) {
    DirectionLeaf<T>& leaf = leaves[l];
    const T c_norm = std::sqrt(static_cast<T>(sums[3 * l + 2]));
    const T orth_norm = std::sqrt(static_cast<T>(orth_sums[l]));
    const T w_norm = std::sqrt(static_cast<T>(sums[3 * l + 1]));
    leaf.rescale = c_norm / (orth_norm + s.ortho_eps);
    leaf.keep = w_norm <= s.ortho_eps || orth_norm <= s.ortho_eps;
  }
  ParallelFor(pool, n, total, [&](int64_t k) { Orthogonalize(leaves[tasks[k].leaf], tasks[k]); });
}

// Cautious's per-leaf mask denominator and background flag from the per-task sums (of the
// kept count, g - g0 and (g - g0)^2).
template <typename T>
void SetCautiousMasks(const DirectionScalars<T>& s, bool with_background,
                      const std::vector<DirectionTask>& tasks,
                      const std::vector<double>& task_sums,
                      std::vector<DirectionLeaf<T>>& leaves) {
  const std::vector<double> sums = LeafSums(leaves, tasks, task_sums);
  for (size_t l = 0; l < leaves.size(); ++l) {
    DirectionLeaf<T>& leaf = leaves[l];
    const double size = static_cast<double>(leaf.batch * leaf.rows * leaf.cols);
    const T mean = static_cast<T>(sums[3 * l]) / static_cast<T>(size);
    leaf.mask_denom = XlaMax(mean, s.mean_floor);
    if (with_background) {
      const double first = sums[3 * l + 1];
      const T variance = static_cast<T>((sums[3 * l + 2] - first * first / size) / (size - 1));
      leaf.background = variance < s.background_threshold;
    }
  }
}

}  // namespace

#endif  // JAXOPT_ADV_FAST_AUTOMAGIC_DIRECTION_H_
