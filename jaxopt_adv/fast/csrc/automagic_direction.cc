// Automagic-CameAMP's direction control (jaxopt_adv.automagic.body.automagic_direction) of
// leaves with ndim >= 2 and more than one element, for XLA:CPU through the XLA FFI. XLA
// compiles both phases' directions for every step and selects one (a dozen whole-leaf
// loops and reductions); here a leaf takes only its phase's passes:
//   early (Grams, edge damping, OrthoGrad):
//     1. c = |u| sign(g), the Laplacian of c over the last two axes (neighbour rows from
//        the inputs), the edge history H' = d H + (1 - d) E(c), c' = c clip(1 - H', f, 1)
//        into out; the sums of w c', w w and c' c'       reads u, g, w, H; writes out, H'
//     2. the sum of squares of c' - w p (p the projection)      reads out, w
//     3. out = c' unchanged, or (c' - w p) |c'| / (|c' - w p| + eps)   reads out, w
//   later (Cautious, background halving):
//     1. the count of u g > 0, the sums of g - g0 and (g - g0)^2 (g0: the leaf's first
//        element; the unbiased variance)                          reads u, g
//     2. out = u ((1[u g > 0] / max(mean, floor)) (factor if var < threshold))
// Sums are accumulated in double (in a fixed order of tasks: the results do not depend on
// the thread count), so results agree with the XLA path to rounding, not bit for bit.

#include <cmath>
#include <cstdint>
#include <vector>

#include "common.h"

namespace {

// Rows are grouped into tasks of about this many elements.
constexpr int64_t kDirectionTask = int64_t{1} << 16;

template <typename T>
struct DirectionScalars {
  T early;                                // 1 in the early phase, else 0
  T edge_decay, edge_keep, edge_threshold, edge_penalty, edge_floor;
  T ortho_eps, mean_floor, background_threshold, background_factor;
};

// A leaf seen as batch matrices of rows x cols: u, g (the reference gradient), w (the
// params), H (the edge history; absent without edge suppression) and their results.
template <typename T>
struct DirectionLeaf {
  const T* u;
  const T* g;
  const T* w;
  const T* history;
  T* new_history;
  T* out;
  int64_t batch, rows, cols;
  // per leaf, from the first pass: OrthoGrad's projection and Cautious's mask factor
  T projection = 0, rescale = 0;
  bool keep = false;
  T mask_denom = 1;
  bool background = false;
};

// Rows [lo, hi) of one leaf's batch * rows rows.
struct DirectionTask {
  int64_t leaf, lo, hi;
};

template <typename T>
std::vector<DirectionTask> DirectionTasks(const std::vector<DirectionLeaf<T>>& leaves,
                                          int64_t* total) {
  std::vector<DirectionTask> tasks;
  *total = 0;
  for (int64_t l = 0; l < static_cast<int64_t>(leaves.size()); ++l) {
    const DirectionLeaf<T>& leaf = leaves[l];
    const int64_t all_rows = leaf.batch * leaf.rows;
    *total += all_rows * leaf.cols;
    const int64_t step = std::max<int64_t>(1, kDirectionTask / leaf.cols);
    for (int64_t lo = 0; lo < all_rows; lo += step) {
      tasks.push_back({l, lo, std::min(all_rows, lo + step)});
    }
  }
  return tasks;
}

// jnp.sign(g) times |u|: +-|u|, and 0, -0 or NaN times |u| where g is.
template <typename T>
inline T Grams(T u, T g) {
  const T sign = g > T(0) ? T(1) : (g < T(0) ? T(-1) : g);
  return std::fabs(u) * sign;
}

template <typename T>
void GramsRow(const DirectionLeaf<T>& leaf, int64_t row, T* c) {
  const T* u = leaf.u + row * leaf.cols;
  const T* g = leaf.g + row * leaf.cols;
#pragma omp simd
  for (int64_t j = 0; j < leaf.cols; ++j) c[j] = Grams(u[j], g[j]);
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

// Early pass 1 over a task: Grams, edge damping (with_edge), out = c'; sums[0..3) =
// sums of w c', w w, c' c'.
template <typename T>
void EarlyFirstPass(const DirectionScalars<T>& s, bool with_edge, DirectionLeaf<T>& leaf,
                    const DirectionTask& t, double* sums) {
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
      GramsRow(leaf, r, slot[k]);
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
#pragma omp simd reduction(+ : wc, ww, cc)
    for (int64_t j = 0; j < cols; ++j) {
      wc += static_cast<double>(w[j] * out[j]);
      ww += static_cast<double>(w[j] * w[j]);
      cc += static_cast<double>(out[j] * out[j]);
    }
  }
  sums[0] = wc;
  sums[1] = ww;
  sums[2] = cc;
}

// Early pass 2 over a task: the sum of squares of c' - w p.
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

// Later pass 1 over a task: sums[0..3) = the count of u g > 0, the sums of g - g0 and of
// its square.
template <typename T>
void CautiousSums(const DirectionLeaf<T>& leaf, const DirectionTask& t, double* sums) {
  const int64_t at = t.lo * leaf.cols;
  const int64_t n = (t.hi - t.lo) * leaf.cols;
  const T* u = leaf.u + at;
  const T* g = leaf.g + at;
  const double g0 = static_cast<double>(leaf.g[0]);
  double kept = 0, first = 0, second = 0;
#pragma omp simd reduction(+ : kept, first, second)
  for (int64_t k = 0; k < n; ++k) {
    kept += u[k] * g[k] > T(0) ? 1.0 : 0.0;
    const double x = static_cast<double>(g[k]) - g0;
    first += x;
    second += x * x;
  }
  sums[0] = kept;
  sums[1] = first;
  sums[2] = second;
}

// Later pass 2 over a task: out = u * mask.
template <typename T>
void CautiousUpdate(const DirectionScalars<T>& s, DirectionLeaf<T>& leaf,
                    const DirectionTask& t) {
  const int64_t at = t.lo * leaf.cols;
  const int64_t n = (t.hi - t.lo) * leaf.cols;
  const T* u = leaf.u + at;
  const T* g = leaf.g + at;
  T* out = leaf.out + at;
  const T denom = leaf.mask_denom;
  const bool background = leaf.background;
  const T factor = s.background_factor;
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) {
    T mask = (u[k] * g[k] > T(0) ? T(1) : T(0)) / denom;
    if (background) mask = mask * factor;
    out[k] = u[k] * mask;
  }
}

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

template <typename T>
void DirectionStep(ffi::ThreadPool& pool, const DirectionScalars<T>& s, bool with_edge,
                   bool with_background, std::vector<DirectionLeaf<T>>& leaves) {
  int64_t total = 0;
  const std::vector<DirectionTask> tasks = DirectionTasks(leaves, &total);
  const int64_t n = static_cast<int64_t>(tasks.size());
  std::vector<double> task_sums(3 * n);
  if (s.early != T(0)) {
    ParallelFor(pool, n, total, [&](int64_t k) {
      EarlyFirstPass(s, with_edge, leaves[tasks[k].leaf], tasks[k], task_sums.data() + 3 * k);
    });
    const std::vector<double> sums = LeafSums(leaves, tasks, task_sums);
    for (size_t l = 0; l < leaves.size(); ++l) {
      const T ww = static_cast<T>(sums[3 * l + 1]);
      leaves[l].projection = static_cast<T>(sums[3 * l]) / (ww + s.ortho_eps);
    }
    std::vector<double> orth(n);
    ParallelFor(pool, n, total, [&](int64_t k) {
      orth[k] = OrthogonalSumOfSquares(leaves[tasks[k].leaf], tasks[k]);
    });
    std::vector<double> orth_sums(leaves.size(), 0.0);
    for (int64_t k = 0; k < n; ++k) orth_sums[tasks[k].leaf] += orth[k];
    for (size_t l = 0; l < leaves.size(); ++l) {
      DirectionLeaf<T>& leaf = leaves[l];
      const T c_norm = std::sqrt(static_cast<T>(sums[3 * l + 2]));
      const T orth_norm = std::sqrt(static_cast<T>(orth_sums[l]));
      const T w_norm = std::sqrt(static_cast<T>(sums[3 * l + 1]));
      leaf.rescale = c_norm / (orth_norm + s.ortho_eps);
      leaf.keep = w_norm <= s.ortho_eps || orth_norm <= s.ortho_eps;
    }
    ParallelFor(pool, n, total, [&](int64_t k) { Orthogonalize(leaves[tasks[k].leaf], tasks[k]); });
    return;
  }
  ParallelFor(pool, n, total, [&](int64_t k) {
    CautiousSums(leaves[tasks[k].leaf], tasks[k], task_sums.data() + 3 * k);
    if (with_edge) CopyHistory(leaves[tasks[k].leaf], tasks[k]);
  });
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
  ParallelFor(pool, n, total,
              [&](int64_t k) { CautiousUpdate(s, leaves[tasks[k].leaf], tasks[k]); });
}

template <typename T>
ffi::Error DirectionTyped(ffi::ThreadPool& pool, const ffi::AnyBuffer* in, bool with_edge,
                          bool with_background, ffi::RemainingArgs args,
                          ffi::RemainingRets rets) {
  DirectionScalars<T> s;
  T* fields[] = {&s.early,        &s.edge_decay, &s.edge_keep,  &s.edge_threshold,
                 &s.edge_penalty, &s.edge_floor, &s.ortho_eps,  &s.mean_floor,
                 &s.background_threshold, &s.background_factor};
  for (int k = 0; k < 10; ++k) {
    if (ffi::Error error = ReadScalar(in[k], fields[k]); error.failure()) return error;
  }
  // per leaf: operands u, g, w, H and results H', out
  constexpr size_t kArgs = 4, kRets = 2;
  if (args.size() % kArgs != 0 || rets.size() != args.size() / kArgs * kRets) {
    return InvalidArgument("Automagic's direction takes u, g, w, H and gives H', out per leaf");
  }
  std::vector<DirectionLeaf<T>> leaves(args.size() / kArgs);
  for (size_t l = 0; l < leaves.size(); ++l) {
    DirectionLeaf<T>& leaf = leaves[l];
    const T* operands[kArgs];
    int64_t size = 0;
    for (size_t a = 0; a < kArgs; ++a) {
      auto buffer = args.get<ffi::AnyBuffer>(l * kArgs + a);
      if (buffer.has_error()) return buffer.error();
      if (a == 0) {
        const auto dims = buffer->dimensions();
        if (dims.size() < 2) return InvalidArgument("the direction kernel takes ndim >= 2");
        leaf.rows = dims[dims.size() - 2];
        leaf.cols = dims[dims.size() - 1];
        leaf.batch = 1;
        for (size_t d = 0; d + 2 < dims.size(); ++d) leaf.batch *= dims[d];
        size = leaf.batch * leaf.rows * leaf.cols;
        if (size < 2) return InvalidArgument("the direction kernel takes two elements or more");
      }
      const int64_t want = a == 3 && !with_edge ? 0 : size;
      if (buffer->element_type() != kDataType<T> ||
          static_cast<int64_t>(buffer->element_count()) != want) {
        return InvalidArgument("an operand of the direction kernel has the wrong dtype or size");
      }
      operands[a] = static_cast<const T*>(buffer->untyped_data());
    }
    T* results[kRets];
    for (size_t r = 0; r < kRets; ++r) {
      auto buffer = rets.get<ffi::AnyBuffer>(l * kRets + r);
      if (buffer.has_error()) return buffer.error();
      const int64_t want = r == 0 && !with_edge ? 0 : size;
      if ((*buffer)->element_type() != kDataType<T> ||
          static_cast<int64_t>((*buffer)->element_count()) != want) {
        return InvalidArgument("a result of the direction kernel has the wrong dtype or size");
      }
      results[r] = static_cast<T*>((*buffer)->untyped_data());
    }
    leaf.u = operands[0];
    leaf.g = operands[1];
    leaf.w = operands[2];
    leaf.history = with_edge ? operands[3] : nullptr;
    leaf.new_history = with_edge ? results[0] : nullptr;
    leaf.out = results[1];
  }
  DirectionStep(pool, s, with_edge, with_background, leaves);
  return ffi::Error::Success();
}

ffi::Error DirectionImpl(ffi::ThreadPool pool, ffi::AnyBuffer early, ffi::AnyBuffer edge_decay,
                         ffi::AnyBuffer edge_keep, ffi::AnyBuffer edge_threshold,
                         ffi::AnyBuffer edge_penalty, ffi::AnyBuffer edge_floor,
                         ffi::AnyBuffer ortho_eps, ffi::AnyBuffer mean_floor,
                         ffi::AnyBuffer background_threshold, ffi::AnyBuffer background_factor,
                         ffi::RemainingArgs args, ffi::RemainingRets rets, int64_t edge,
                         int64_t background) {
  const ffi::AnyBuffer in[] = {early,      edge_decay, edge_keep,           edge_threshold,
                               edge_penalty, edge_floor, ortho_eps,         mean_floor,
                               background_threshold, background_factor};
  return ByDtype(early.element_type(), [&](auto zero) {
    return DirectionTyped<decltype(zero)>(pool, in, edge != 0, background != 0, args, rets);
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxoptAdvAutomagicDirection, DirectionImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // 1 in the early phase, else 0
                                  .Arg<ffi::AnyBuffer>()  // edge history decay d
                                  .Arg<ffi::AnyBuffer>()  // 1 - d
                                  .Arg<ffi::AnyBuffer>()  // edge threshold
                                  .Arg<ffi::AnyBuffer>()  // edge penalty
                                  .Arg<ffi::AnyBuffer>()  // edge factor floor
                                  .Arg<ffi::AnyBuffer>()  // OrthoGrad's eps
                                  .Arg<ffi::AnyBuffer>()  // Cautious's mean floor
                                  .Arg<ffi::AnyBuffer>()  // background variance threshold
                                  .Arg<ffi::AnyBuffer>()  // background factor
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int64_t>("edge")
                                  .Attr<int64_t>("background"));
