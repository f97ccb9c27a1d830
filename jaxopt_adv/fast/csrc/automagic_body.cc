// Automagic-CameAMP's scaling and direction control in one kernel for XLA:CPU, through
// the XLA FFI: jaxopt_adv.automagic.body.scale_by_automagic_came (factored, CAME on)
// followed by jaxopt_adv.automagic.body.automagic_direction, for leaves with ndim >= 2 and
// two elements or more. The scaling's update U = m' rsqrt(R'_i / mean R') rsqrt(C'_j) is
// never written: the direction's first pass forms it from the new momentum and the
// confidence factors, saving the scaling's last pass (read m', write U) and the
// direction's reads of U. A leaf takes the three passes of automagic.h (the second
// moment, the clip and the new momentum), then its phase's direction:
//   early (Grams, edge damping, OrthoGrad; automagic_direction.h):
//     4. c = |U| sign(g) from m', the edge damping and OrthoGrad's sums
//                                                      reads m', g, w, H; writes out, H'
//     5. the projected, rescaled update (before it, only for a leaf whose c' lies
//        mostly along w, the orthogonal norm)                      reads out, w
//   later (Cautious, background halving): pass 3 also counts m' g > 0 and sums g - g0
//     and (g - g0)^2 on each row it has just written (the row in cache; g0: the leaf's
//     first element); the count is Cautious's count of U g > 0, the confidence factors
//     being positive, unless a factor is not finite and positive or a product comes
//     within four of the smallest normal number of underflowing (a subnormal product
//     may be flushed to zero), where the leaf takes
//     4. the count of U g > 0 and the sums of g - g0 and (g - g0)^2     reads m', g
//     5. out = U (1[U g > 0] / max(mean, floor)) (factor if var < threshold)
//                                                                   reads m', g; writes out
// against the two kernels' 4 + 2 passes in either phase, whose direction passes read
// the written update: five passes early, four later (five where the count needs its
// own). U is formed as automagic.cc's fourth pass forms it, so the results are the two
// kernels' up to the order of the sums.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "automagic.h"
#include "automagic_direction.h"
#include "came.h"
#include "common.h"

namespace {

// Row r's Grams |U| sign(g), U formed from the new momentum and the residual's factors.
template <typename T>
void BodyGramsRow(const CameLeaf<T>& leaf, const T* g, int64_t row, T* c) {
  const T rf = leaf.row_factor[row];
  const T* cf = leaf.col_factor.data() + (row / leaf.rows) * leaf.cols;
  const T* m = leaf.out[kMomentum] + row * leaf.cols;
  const T* gr = g + row * leaf.cols;
#pragma omp simd
  for (int64_t j = 0; j < leaf.cols; ++j) c[j] = Grams((rf * cf[j]) * m[j], gr[j]);
}

// Later pass 4 over a task: sums[0..3) = the count of U g > 0, the sums of g - g0 and of
// its square.
template <typename T>
void BodyCautiousSums(const CameLeaf<T>& leaf, const DirectionLeaf<T>& direction,
                      const DirectionTask& t, double* sums) {
  const double g0 = static_cast<double>(direction.g[0]);
  double kept = 0, first = 0, second = 0;
  for (int64_t row = t.lo; row < t.hi; ++row) {
    const T rf = leaf.row_factor[row];
    const T* cf = leaf.col_factor.data() + (row / leaf.rows) * leaf.cols;
    const T* m = leaf.out[kMomentum] + row * leaf.cols;
    const T* g = direction.g + row * leaf.cols;
#pragma omp simd reduction(+ : kept, first, second)
    for (int64_t j = 0; j < leaf.cols; ++j) {
      const T u = (rf * cf[j]) * m[j];
      kept += u * g[j] > T(0) ? 1.0 : 0.0;
      const double x = static_cast<double>(g[j]) - g0;
      first += x;
      second += x * x;
    }
  }
  sums[0] = kept;
  sums[1] = first;
  sums[2] = second;
}

// Later pass 5 over a task: out = U * mask.
template <typename T>
void BodyCautiousUpdate(const DirectionScalars<T>& s, const CameLeaf<T>& leaf,
                        DirectionLeaf<T>& direction, const DirectionTask& t) {
  const T denom = direction.mask_denom;
  const bool background = direction.background;
  const T factor = s.background_factor;
  for (int64_t row = t.lo; row < t.hi; ++row) {
    const T rf = leaf.row_factor[row];
    const T* cf = leaf.col_factor.data() + (row / leaf.rows) * leaf.cols;
    const T* m = leaf.out[kMomentum] + row * leaf.cols;
    const T* g = direction.g + row * leaf.cols;
    T* out = direction.out + row * leaf.cols;
#pragma omp simd
    for (int64_t j = 0; j < leaf.cols; ++j) {
      out[j] = CautiousElement((rf * cf[j]) * m[j], g[j], denom, background, factor);
    }
  }
}

// Later phase, per task: from pass 3 (each row's m' still in cache), the count of
// m' g > 0, the sums of g - g0 and of its square, and the smallest |m'| and |m' g| of the
// elements where neither is 0.
template <typename T>
struct MomentumSums {
  double kept = 0, first = 0, second = 0;
  T min_m = std::numeric_limits<T>::infinity();
  T min_mg = std::numeric_limits<T>::infinity();
};

template <typename T>
void MomentumCautiousRow(const CameLeaf<T>& leaf, const DirectionLeaf<T>& direction,
                         int64_t row, MomentumSums<T>* sums) {
  const T* m = leaf.out[kMomentum] + row * leaf.cols;
  const T* g = direction.g + row * leaf.cols;
  const double g0 = static_cast<double>(direction.g[0]);
  const T inf = std::numeric_limits<T>::infinity();
  double kept = 0, first = 0, second = 0;
  T min_m = inf, min_mg = inf;
#pragma omp simd reduction(+ : kept, first, second) reduction(min : min_m, min_mg)
  for (int64_t j = 0; j < leaf.cols; ++j) {
    const T mg = m[j] * g[j];
    kept += mg > T(0) ? 1.0 : 0.0;
    const double x = static_cast<double>(g[j]) - g0;
    first += x;
    second += x * x;
    const bool both = m[j] != T(0) && g[j] != T(0);
    const T am = both ? std::fabs(m[j]) : inf;
    const T amg = both ? std::fabs(mg) : inf;
    min_m = am < min_m ? am : min_m;
    min_mg = amg < min_mg ? amg : min_mg;
  }
  sums->kept += kept;
  sums->first += first;
  sums->second += second;
  sums->min_m = std::min(sums->min_m, min_m);
  sums->min_mg = std::min(sums->min_mg, min_mg);
}

// Whether a leaf's count of U g > 0 is its count of m' g > 0: U = (R' factor * C' factor)
// m' with both factors finite and positive, and no product of the two counts' so small
// that it rounds to zero in one and not in the other (a margin of four of the smallest
// normal numbers). Else the count takes a pass of its own.
template <typename T>
bool CountFromMomentum(const CameLeaf<T>& leaf, T min_m, T min_mg) {
  double min_rf = std::numeric_limits<double>::infinity(), min_cf = min_rf;
  for (const T f : leaf.row_factor) {
    if (!(std::isfinite(f) && f > T(0))) return false;
    min_rf = std::min(min_rf, static_cast<double>(f));
  }
  for (const T f : leaf.col_factor) {
    if (!(std::isfinite(f) && f > T(0))) return false;
    min_cf = std::min(min_cf, static_cast<double>(f));
  }
  const double tiny = 4.0 * static_cast<double>(std::numeric_limits<T>::min());
  const double factor = min_rf * min_cf;
  return factor >= tiny && static_cast<double>(min_mg) >= tiny &&
         factor * static_cast<double>(min_m) >= tiny &&
         factor * static_cast<double>(min_mg) >= tiny;
}

template <typename T>
void BodyStep(ffi::ThreadPool& pool, const AutomagicScalars<T>& s, const DirectionScalars<T>& d,
              bool with_edge, bool with_background, const std::vector<LeafOptions<T>>& options,
              std::vector<CameLeaf<T>>& leaves, std::vector<DirectionLeaf<T>>& directions) {
  int64_t partial_size = 0, total = 0;
  const std::vector<CameTask> came_tasks = AutomagicTasks(leaves, &partial_size, &total);
  // the direction's passes over the same rows
  std::vector<DirectionTask> tasks;
  tasks.reserve(came_tasks.size());
  for (const CameTask& t : came_tasks) tasks.push_back({t.leaf, t.lo, t.hi});
  const int64_t n = static_cast<int64_t>(tasks.size());
  std::vector<double> task_sums(3 * n);
  if (d.early != T(0)) {
    ScaleToMomentum(pool, s, options, came_tasks, partial_size, total, leaves);
    ParallelFor(pool, n, total, [&](int64_t k) {
      const int64_t l = tasks[k].leaf;
      const CameLeaf<T>& leaf = leaves[l];
      const T* g = directions[l].g;
      const auto grams_row = [&leaf, g](int64_t r, T* c) { BodyGramsRow(leaf, g, r, c); };
      EarlyFirstPass(d, with_edge, directions[l], tasks[k], grams_row, task_sums.data() + 3 * k);
    });
    OrthogonalizeLeaves(pool, d, tasks, total, task_sums, directions);
    return;
  }
  // later: Cautious's sums in pass 3 where the bounds allow (else pass 4)
  std::vector<MomentumSums<T>> momentum_sums(n);
  ScaleToMomentum(pool, s, options, came_tasks, partial_size, total, leaves,
                  [&](int64_t k, int64_t row) {
                    const int64_t l = tasks[k].leaf;
                    MomentumCautiousRow(leaves[l], directions[l], row, &momentum_sums[k]);
                  });
  const T inf = std::numeric_limits<T>::infinity();
  std::vector<T> min_m(leaves.size(), inf), min_mg(leaves.size(), inf);
  for (int64_t k = 0; k < n; ++k) {
    const MomentumSums<T>& sums = momentum_sums[k];
    const int64_t l = tasks[k].leaf;
    min_m[l] = std::min(min_m[l], sums.min_m);
    min_mg[l] = std::min(min_mg[l], sums.min_mg);
    task_sums[3 * k] = sums.kept;
    task_sums[3 * k + 1] = sums.first;
    task_sums[3 * k + 2] = sums.second;
  }
  std::vector<char> recount(leaves.size());
  bool any_recount = false;
  for (size_t l = 0; l < leaves.size(); ++l) {
    recount[l] = !CountFromMomentum(leaves[l], min_m[l], min_mg[l]);
    any_recount = any_recount || recount[l];
  }
  if (any_recount) {
    ParallelFor(pool, n, total, [&](int64_t k) {
      const int64_t l = tasks[k].leaf;
      if (recount[l]) BodyCautiousSums(leaves[l], directions[l], tasks[k], task_sums.data() + 3 * k);
    });
  }
  SetCautiousMasks(d, with_background, tasks, task_sums, directions);
  ParallelFor(pool, n, total, [&](int64_t k) {
    const int64_t l = tasks[k].leaf;
    if (with_edge) CopyHistory(directions[l], tasks[k]);
    BodyCautiousUpdate(d, leaves[l], directions[l], tasks[k]);
  });
}

// Per leaf, after the scaling's g, m, v_row, v_col, r_row, r_col, s of every leaf: the
// direction's operands g (the reference gradient), w, H and its result H'.
constexpr size_t kBodyArgs = 3, kBodyRets = 1;

template <typename T>
ffi::Error BodyTyped(ffi::ThreadPool& pool, const ffi::AnyBuffer& scalars,
                     const ffi::AnyBuffer& leaf_options, bool with_edge, bool with_background,
                     ffi::RemainingArgs args, ffi::RemainingRets rets) {
  constexpr int kScalars = kAutomagicScalars + kDirectionScalars;
  if (scalars.element_type() != kDataType<T> || scalars.element_count() != kScalars) {
    return InvalidArgument("the scaling and direction kernel takes 21 scalars");
  }
  const T* values = static_cast<const T*>(scalars.untyped_data());
  const AutomagicScalars<T> s = AutomagicScalarsOf(values);
  const DirectionScalars<T> d = DirectionScalarsOf(s.early, values + kAutomagicScalars);
  const size_t slots = kSlots + 1;
  const size_t count = args.size() / (slots + kBodyArgs);
  if (args.size() != count * (slots + kBodyArgs) || rets.size() != count * (slots + kBodyRets)) {
    return InvalidArgument(
        "the scaling and direction kernel takes g, m, v_row, v_col, r_row, r_col, s per leaf, "
        "then g', w, H per leaf");
  }
  std::vector<LeafOptions<T>> options;
  if (ffi::Error error = ReadLeafOptions(leaf_options, count, &options); error.failure()) {
    return error;
  }
  std::vector<CameLeaf<T>> leaves;
  if (ffi::Error error = ReadAutomagicLeaves(args, rets, options, &leaves, count);
      error.failure()) {
    return error;
  }
  std::vector<DirectionLeaf<T>> directions(count);
  for (size_t l = 0; l < count; ++l) {
    const CameLeaf<T>& leaf = leaves[l];
    DirectionLeaf<T>& direction = directions[l];
    direction.batch = leaf.batch;
    direction.rows = leaf.rows;
    direction.cols = leaf.cols;
    const int64_t size = leaf.batch * leaf.rows * leaf.cols;
    if (size < 2) return InvalidArgument("the direction kernel takes two elements or more");
    const int64_t history_size = with_edge ? size : 0;
    const T* operands[kBodyArgs];
    for (size_t a = 0; a < kBodyArgs; ++a) {
      auto buffer = args.get<ffi::AnyBuffer>(count * slots + l * kBodyArgs + a);
      if (buffer.has_error()) return buffer.error();
      if (!Matches<T>(buffer->element_type(), buffer->element_count(),
                      a == 2 ? history_size : size)) {
        return InvalidArgument("an operand of the direction has the wrong dtype or size");
      }
      operands[a] = static_cast<const T*>(buffer->untyped_data());
    }
    auto history = rets.get<ffi::AnyBuffer>(count * slots + l);
    if (history.has_error()) return history.error();
    if (!Matches<T>((*history)->element_type(), (*history)->element_count(), history_size)) {
      return InvalidArgument("the edge history's result has the wrong dtype or size");
    }
    direction.g = operands[0];
    direction.w = operands[1];
    direction.history = with_edge ? operands[2] : nullptr;
    direction.new_history = with_edge ? static_cast<T*>((*history)->untyped_data()) : nullptr;
    direction.out = leaf.out[kGrad];
  }
  BodyStep(pool, s, d, with_edge, with_background, options, leaves, directions);
  return ffi::Error::Success();
}

ffi::Error BodyImpl(ffi::ThreadPool pool, ffi::AnyBuffer scalars, ffi::AnyBuffer leaf_options,
                    ffi::RemainingArgs args, ffi::RemainingRets rets, int64_t edge,
                    int64_t background) {
  return ByDtype(scalars.element_type(), [&](auto zero) {
    return BodyTyped<decltype(zero)>(pool, scalars, leaf_options, edge != 0, background != 0,
                                     args, rets);
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxoptAdvAutomagicBody, BodyImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  // the scaling's 12 scalars (automagic.h), then the
                                  // direction's 9 after its phase flag
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()  // per leaf: emphasis, per-row s
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int64_t>("edge")
                                  .Attr<int64_t>("background"));
