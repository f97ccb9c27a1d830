// Automagic-CameAMP's scaling (jaxopt_adv.automagic.body.scale_by_automagic_came, factored,
// CAME on) up to the new momentum, shared by automagic.cc (the scaling's kernel) and
// automagic_body.cc (the scaling and direction control in one kernel): the scalars, the
// per-leaf options and the first three passes over a leaf:
//   1. row and column sums of g^2 + eps1                            reads g
//   2. sum of u^2 (early, one cosine per leaf: also m u and m^2)     reads g (m)
//   3. the new momentum and s (a row cosine: the row's sums first,
//      the row in cache), the sums of the instability (u - m')^2     reads g, m; writes m
// then the residual's factors. TAM's correlation is the cosine of the old momentum and the
// clipped u, one per leaf (s holds one value) or one per row (s holds one per row); its
// smoothed value s_bar forms d = ((1 + e s_bar) / 2 + eps1) u and m' = b_tam m + d, with
// the emphasis e given per leaf. Later m' = b1_t m + (1 - b1_t) u. Sums are accumulated
// in double, so results agree with the XLA path to rounding, not bit for bit.
#ifndef JAXOPT_ADV_FAST_AUTOMAGIC_H_
#define JAXOPT_ADV_FAST_AUTOMAGIC_H_

#include <cmath>
#include <cstdint>
#include <vector>

#include "came.h"
#include "common.h"

namespace {

// A call over fewer elements runs on the calling thread: its passes are too short to pay
// for waking the pool's threads four times (LoRA factors of a few thousand elements).
constexpr int64_t kAutomagicParallel = int64_t{1} << 19;

// The scaling's scalars, in their operand order.
constexpr int kAutomagicScalars = 12;

template <typename T>
struct AutomagicScalars {
  T early;                          // 1 in the early (TAM) phase, else 0
  T b1, c1;                         // the EMA's b1_t and 1 - b1_t
  T b2, c2, b3, c3, eps1, eps2, clip;
  T tam_b1, keep;                   // TAM's momentum and 1 - its correlation decay
};

template <typename T>
AutomagicScalars<T> AutomagicScalarsOf(const T* v) {
  return {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11]};
}

// Per leaf: TAM's emphasis and whether s holds one value per row (else one per leaf).
template <typename T>
struct LeafOptions {
  T emphasis;
  bool per_row;
};

// The per-leaf options of `count` leaves, two values each (emphasis, per-row s).
template <typename T>
ffi::Error ReadLeafOptions(const ffi::AnyBuffer& buffer, size_t count,
                           std::vector<LeafOptions<T>>* options) {
  if (buffer.element_type() != kDataType<T> || buffer.element_count() != 2 * count) {
    return InvalidArgument("Automagic's leaf options must hold two values per leaf");
  }
  const T* flat = static_cast<const T*>(buffer.untyped_data());
  options->resize(count);
  for (size_t l = 0; l < count; ++l) (*options)[l] = {flat[2 * l], flat[2 * l + 1] != T(0)};
  return ffi::Error::Success();
}

// The leaves' g, m, v_row, v_col, r_row, r_col, s: every operand and result, or (a
// `count` of leaves) the first 7 count.
template <typename T>
ffi::Error ReadAutomagicLeaves(const ffi::RemainingArgs& args, const ffi::RemainingRets& rets,
                               const std::vector<LeafOptions<T>>& options,
                               std::vector<CameLeaf<T>>* leaves, size_t count = 0) {
  const auto s_size = [&](size_t l, const CameLeaf<T>& leaf) {
    return options[l].per_row ? leaf.batch * leaf.rows : int64_t{1};
  };
  return ReadFactoredLeaves<T>(args, rets, kSlots + 1,
                               "Automagic takes g, m, v_row, v_col, r_row, r_col, s per leaf",
                               s_size, leaves, count);
}

// Pass 2 of a task: the sums of u^2 (unclipped u), and for a per-leaf cosine in the early
// phase those of m u and m^2 too, into sums[0..3).
template <typename T>
void TaskSums(const CameLeaf<T>& leaf, const CameTask& t, bool with_momentum, double* sums) {
  if (!with_momentum) {
    sums[0] = SumOfSquares(leaf, t);
    sums[1] = sums[2] = 0;
    return;
  }
  double uu = 0, mu = 0, mm = 0;
  for (int64_t row = t.lo; row < t.hi; ++row) {
    const T rf = leaf.row_factor[row];
    const T* cf = leaf.col_factor.data() + (row / leaf.rows) * leaf.cols;
    const T* g = leaf.in[kGrad] + row * leaf.cols;
    const T* m = leaf.in[kMomentum] + row * leaf.cols;
#pragma omp simd reduction(+ : uu, mu, mm)
    for (int64_t j = 0; j < leaf.cols; ++j) {
      const double u = (rf * cf[j]) * g[j];
      const double x = m[j];
      uu += u * u;
      mu += x * u;
      mm += x * x;
    }
  }
  sums[0] = uu;
  sums[1] = mu;
  sums[2] = mm;
}

// TAM's smoothed correlation s + (1 - decay) (c - s).
template <typename T>
T Smoothed(const AutomagicScalars<T>& s, T old, double cosine) {
  return old + s.keep * (static_cast<T>(cosine) - old);
}

// The tasks of a call (came.h) and the size of their column sums; *total is the number
// of elements, 0 below the threading threshold (ParallelFor's "too small to split").
template <typename T>
std::vector<CameTask> AutomagicTasks(const std::vector<CameLeaf<T>>& leaves,
                                     int64_t* partial_size, int64_t* total) {
  std::vector<CameTask> tasks = MakeTasks(leaves, partial_size, total);
  if (*total < kAutomagicParallel) *total = 0;
  return tasks;
}

// A hook of pass 3 that does nothing.
struct NoMomentumHook {
  void operator()(int64_t, int64_t) const {}
};

// Passes 1 to 3 over every leaf and the residual's factors: the momentum results hold
// m', the factors those of CAME's confidence. hook(k, row) runs after task k's row has
// its m' written (the row still in cache).
template <typename T, typename Hook = NoMomentumHook>
void ScaleToMomentum(ffi::ThreadPool& pool, const AutomagicScalars<T>& s,
                     const std::vector<LeafOptions<T>>& options,
                     const std::vector<CameTask>& tasks, int64_t partial_size, int64_t total,
                     std::vector<CameLeaf<T>>& leaves, Hook hook = Hook()) {
  const int64_t n = static_cast<int64_t>(tasks.size());
  std::vector<double> partial(partial_size);
  const bool early = s.early != T(0);

  // 1. second moment
  UpdateSecondMoment(pool, tasks, total, s.eps1, s.b2, s.c2, partial, leaves);

  // 2. rms of the scaled gradient (and a per-leaf cosine's sums)
  std::vector<double> task_sums(3 * n);
  ParallelFor(pool, n, total, [&](int64_t k) {
    const bool with_momentum = early && !options[tasks[k].leaf].per_row;
    TaskSums(leaves[tasks[k].leaf], tasks[k], with_momentum, task_sums.data() + 3 * k);
  });
  std::vector<double> leaf_sums(3 * leaves.size(), 0.0);
  for (int64_t k = 0; k < n; ++k) {
    for (int i = 0; i < 3; ++i) leaf_sums[3 * tasks[k].leaf + i] += task_sums[3 * k + i];
  }
  // one factor (1 + e s_bar) / 2 + eps1 per leaf with a per-leaf cosine
  std::vector<T> leaf_factor(leaves.size(), T(0));
  for (size_t l = 0; l < leaves.size(); ++l) {
    CameLeaf<T>& leaf = leaves[l];
    const double* sum = leaf_sums.data() + 3 * l;
    leaf.denom = ClipDenominator(leaf, sum[0], s.clip);
    if (options[l].per_row) continue;
    const T old = leaf.in[kCorrelation][0];
    if (!early) {
      leaf.out[kCorrelation][0] = old;
      continue;
    }
    // the cosine of m and u = u_unclipped / denom
    const double denom = static_cast<double>(leaf.denom);
    const T s_bar = Smoothed(s, old, Cosine(sum[2], sum[0] / (denom * denom), sum[1] / denom));
    leaf.out[kCorrelation][0] = s_bar;
    leaf_factor[l] = (T(1) + options[l].emphasis * s_bar) * T(0.5) + s.eps1;
  }

  // 3. momentum, s and instability
  ParallelFor(pool, n, total, [&](int64_t k) {
    const int64_t index = tasks[k].leaf;
    CameLeaf<T>& leaf = leaves[index];
    const LeafOptions<T>& option = options[index];
    const auto after_row = [&hook, k](int64_t row) { hook(k, row); };
    SumRowsAndColumns(leaf, tasks[k], partial.data(), [&](int64_t row) {
      const int64_t at = row * leaf.cols;
      const T rf = leaf.row_factor[row];
      const T* cf = leaf.col_factor.data() + (row / leaf.rows) * leaf.cols;
      const T* g = leaf.in[kGrad] + at;
      const T* m_in = leaf.in[kMomentum] + at;
      T* m_out = leaf.out[kMomentum] + at;
      const T denom = leaf.denom;
      // early: m' = tam_b1 m + factor u; later: m' = b1_t m + (1 - b1_t) u
      T keep_m = s.b1, take_u = s.c1;
      if (early) {
        keep_m = s.tam_b1;
        take_u = leaf_factor[index];
      }
      if (option.per_row) {
        const T old = leaf.in[kCorrelation][row];
        T s_new = old;
        if (early) {
          double mm = 0, uu = 0, mu = 0;
#pragma omp simd reduction(+ : mm, uu, mu)
          for (int64_t j = 0; j < leaf.cols; ++j) {
            const double u = ((rf * cf[j]) * g[j]) / denom;
            const double x = m_in[j];
            mm += x * x;
            uu += u * u;
            mu += x * u;
          }
          s_new = Smoothed(s, old, Cosine(mm, uu, mu));
          take_u = (T(1) + option.emphasis * s_new) * T(0.5) + s.eps1;
        }
        leaf.out[kCorrelation][row] = s_new;
      }
      const T eps2 = s.eps2;
      return [rf, cf, g, m_in, m_out, denom, keep_m, take_u, eps2](int64_t j) {
        const T u = ((rf * cf[j]) * g[j]) / denom;
        const T m = keep_m * m_in[j] + take_u * u;
        m_out[j] = m;
        const T d = u - m;
        return static_cast<double>(d * d + eps2);
      };
    }, after_row);
  });
  AddColumns(leaves, tasks, partial);
  for (CameLeaf<T>& leaf : leaves) {
    UpdateFactors(leaf, kRowResidual, kColResidual, s.b3, s.c3);
  }
}

}  // namespace

#endif  // JAXOPT_ADV_FAST_AUTOMAGIC_H_
