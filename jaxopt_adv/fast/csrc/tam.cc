// Torque-aware momentum (jaxopt_adv.tam.tam: scale_by_tam and scale_by_adatam) for
// XLA:CPU, called through the XLA FFI.
//
// A leaf's correlation c between the momentum m and the gradient g is one of
//   dim0:   normalize(m, dim=0) * normalize(g, dim=0), elementwise, from column norms;
//   cosine: one cosine <m, g> / ((|m| + 1e-10)(|g| + 1e-10)) per leaf;
//   row:    that cosine per row (last axis) of a leaf with ndim >= 2;
//   clamped: <m, g> / (max(|m|, 1e-8) max(|g|, 1e-8)) per leaf (torch's cosine_similarity);
// "auto" picks cosine, row or clamped by size. XLA compiles a TAM step into a reduction
// and then several whole-leaf loops with intermediates materialised; here a leaf takes
//   1. the sums (dim0: per column; cosine, clamped: per leaf)          reads m, g
//   2. the new s, m (and v for AdaTAM)               reads g, m, s (v); writes m, s (v)
// and the row rule does both for each row while the row is in cache. AdaTAM's update
// m / (sqrt(v) + eps) is left to XLA, which fuses it into the parameters' update. Sums are taken in
// double per task of a fixed partition and added in task order: results do not depend on
// the thread count. The arithmetic is jaxopt_adv.tam.tam's, not XLA's code for it, so the
// results agree with the XLA path to rounding, not bit for bit.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common.h"

namespace {

// A task of the elementwise pass covers about this many elements, a task of a leaf's
// sums about kSumTask, and a task of column sums about kColumnTask elements in at most
// kSumCols columns of whole rows (it keeps its own column sums, so it is larger; rows
// read whole stream fastest). Column sums add kBlockRows rows in the leaf's dtype before
// adding them into double.
constexpr int64_t kTask = int64_t{1} << 16;
constexpr int64_t kSumTask = int64_t{1} << 18;
constexpr int64_t kColumnTask = int64_t{1} << 20;
constexpr int64_t kSumCols = int64_t{1} << 14;
constexpr int64_t kBlockRows = 8;

constexpr double kNormalizeEps = 1e-12;  // torch.nn.functional.normalize's clamp
constexpr double kClampedEps = 1e-8;     // F.cosine_similarity's clamp

// Python's CORRELATIONS order.
enum Rule : int64_t { kRuleDim0 = 0, kRuleCosine, kRuleRowCosine, kRuleAuto };

// How a leaf's correlation is formed.
enum Form { kColumns, kUnit, kCosine, kClamped, kRows };

template <typename T>
struct TamScalars {
  T b1, keep, eps, b2, c2, first;  // keep = 1 - decay_rate, c2 = 1 - b2
};

template <typename T>
struct TamLeaf {
  const T *g, *m, *s, *v;  // m is g on TAM's first step; v only for AdaTAM
  T *m_out, *s_out, *v_out;
  int64_t rows = 1, cols = 1;  // the view the form works on
  Form form = kCosine;
  std::vector<T> m_scale, g_scale;  // kColumns: max(norm, 1e-12) per column, a divisor
  T m_unit = 1, g_unit = 1;         // kUnit: the same for the one norm
  T corr = 0;                       // kCosine, kClamped
};

// Rows [r0, r1) x columns [c0, c1) of a leaf's rows x cols view; the column sums of a
// task of the first pass go to partial[offset, offset + 2 (c1 - c0)), its leaf sums to
// partial[offset, offset + 3).
struct TamTask {
  int64_t leaf, r0, r1, c0, c1, offset;
};

// The elementwise step of one element with correlation c.
template <typename T, bool kAdaptive>
inline void Step(const TamScalars<T>& s, const TamLeaf<T>& l, int64_t i, T c) {
  const T g = l.g[i];
  const T s_bar = l.s[i] + s.keep * (c - l.s[i]);
  const T d = ((T(1) + s_bar) * T(0.5) + s.eps) * g;
  const T m = s.b1 * l.m[i] + d;
  l.m_out[i] = m;
  l.s_out[i] = s_bar;
  if constexpr (kAdaptive) {
    l.v_out[i] = s.b2 * l.v[i] + (s.c2 * g) * g;
  }
}

// The sums of m^2, g^2 and m g over [lo, hi) of flat indices.
template <typename T>
void Sums(const TamLeaf<T>& l, int64_t lo, int64_t hi, double* mm, double* gg, double* mg) {
  double a = 0, b = 0, c = 0;
  const T* m = l.m;
  const T* g = l.g;
#pragma omp simd reduction(+ : a, b, c)
  for (int64_t i = lo; i < hi; ++i) {
    const double x = m[i], y = g[i];
    a += x * x;
    b += y * y;
    c += x * y;
  }
  *mm = a;
  *gg = b;
  *mg = c;
}

// torch's normalize divides by max(norm, 1e-12): a product with the reciprocal differs by
// an ulp (x * (1 / x) is not 1 for ~14% of floats), and a column of one element must give
// exactly +-1 (with decay_rate = 0, 1 + s is then exactly 0).
template <typename T>
T Divisor(double sum_of_squares) {
  const T norm = static_cast<T>(std::sqrt(sum_of_squares));
  return XlaMax(norm, static_cast<T>(kNormalizeEps));
}

double Clamped(double mm, double gg, double mg) {
  return mg / (XlaMax(std::sqrt(mm), kClampedEps) * XlaMax(std::sqrt(gg), kClampedEps));
}

// Pass 1 of a task: its column sums (kColumns) or leaf sums (kUnit, kCosine, kClamped).
template <typename T>
void SumTask(const TamLeaf<T>& l, const TamTask& t, double* partial) {
  double* out = partial + t.offset;
  if (l.form != kColumns) {
    Sums(l, t.r0 * l.cols + t.c0, (t.r1 - 1) * l.cols + t.c1, out, out + 1, out + 2);
    return;
  }
  const int64_t width = t.c1 - t.c0;
  double* mm = out;
  double* gg = out + width;
  std::fill(out, out + 2 * width, 0.0);
  std::vector<T> block(2 * width);
  T* bm = block.data();
  T* bg = bm + width;
  for (int64_t r0 = t.r0; r0 < t.r1; r0 += kBlockRows) {
    std::fill(block.begin(), block.end(), T(0));
    for (int64_t r = r0; r < std::min(t.r1, r0 + kBlockRows); ++r) {
      const T* m = l.m + r * l.cols + t.c0;
      const T* g = l.g + r * l.cols + t.c0;
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) {
        bm[j] += m[j] * m[j];
        bg[j] += g[j] * g[j];
      }
    }
#pragma omp simd
    for (int64_t j = 0; j < width; ++j) {
      mm[j] += bm[j];
      gg[j] += bg[j];
    }
  }
}

// Pass 2 of a task: the elementwise step (the row form takes its sums first, row by row).
template <typename T, bool kAdaptive>
void StepTask(const TamScalars<T>& s, const TamLeaf<T>& l, const TamTask& t) {
  for (int64_t r = t.r0; r < t.r1; ++r) {
    const int64_t lo = r * l.cols + t.c0;
    const int64_t hi = r * l.cols + t.c1;
    switch (l.form) {
      case kColumns: {
        const T* ms = l.m_scale.data() + t.c0;
        const T* gs = l.g_scale.data() + t.c0;
#pragma omp simd
        for (int64_t j = 0; j < hi - lo; ++j) {
          Step<T, kAdaptive>(s, l, lo + j, (l.m[lo + j] / ms[j]) * (l.g[lo + j] / gs[j]));
        }
        break;
      }
      case kUnit: {
        const T mu = l.m_unit, gu = l.g_unit;
#pragma omp simd
        for (int64_t i = lo; i < hi; ++i) Step<T, kAdaptive>(s, l, i, (l.m[i] / mu) * (l.g[i] / gu));
        break;
      }
      default: {  // one correlation for the row (kRows) or the leaf
        T c = l.corr;
        if (l.form == kRows) {
          double mm, gg, mg;
          Sums(l, lo, hi, &mm, &gg, &mg);
          c = static_cast<T>(Cosine(mm, gg, mg));
        }
#pragma omp simd
        for (int64_t i = lo; i < hi; ++i) Step<T, kAdaptive>(s, l, i, c);
      }
    }
  }
}

// The tasks of a pass over a leaf's rows x cols view: blocks of `width` columns (at most)
// and as many whole rows as make about `task` elements.
template <typename T>
void AddTasks(const TamLeaf<T>& l, int64_t leaf, int64_t task, int64_t width,
              std::vector<TamTask>* tasks, int64_t* offset, int64_t sums_per_column) {
  width = std::min(width, l.cols);
  const int64_t height = std::max<int64_t>(1, task / width);
  for (int64_t r = 0; r < l.rows; r += height) {
    for (int64_t c = 0; c < l.cols; c += width) {
      const int64_t c1 = std::min(l.cols, c + width);
      tasks->push_back({leaf, r, std::min(l.rows, r + height), c, c1, *offset});
      *offset += sums_per_column > 0 ? sums_per_column * (c1 - c) : 3;
    }
  }
}

template <typename T, bool kAdaptive>
void Run(ffi::ThreadPool& pool, const TamScalars<T>& s, std::vector<TamLeaf<T>>& leaves) {
  int64_t total = 0;
  for (const TamLeaf<T>& l : leaves) total += l.rows * l.cols;

  // 1. column and leaf sums
  std::vector<TamTask> sums;
  int64_t partial_size = 0;
  for (int64_t k = 0; k < static_cast<int64_t>(leaves.size()); ++k) {
    const TamLeaf<T>& l = leaves[k];
    if (l.form == kColumns) {
      AddTasks(l, k, kColumnTask, kSumCols, &sums, &partial_size, 2);
    } else if (l.form != kRows) {
      AddTasks(l, k, kSumTask, kSumTask, &sums, &partial_size, 0);
    }
  }
  std::vector<double> partial(partial_size);
  ParallelFor(pool, static_cast<int64_t>(sums.size()), total,
              [&](int64_t k) { SumTask(leaves[sums[k].leaf], sums[k], partial.data()); });
  std::vector<std::vector<double>> leaf_sums(leaves.size());
  for (size_t k = 0; k < leaves.size(); ++k) {
    leaf_sums[k].assign(leaves[k].form == kColumns ? 2 * leaves[k].cols : 3, 0.0);
  }
  for (const TamTask& t : sums) {  // in task order
    std::vector<double>& out = leaf_sums[t.leaf];
    const double* in = partial.data() + t.offset;
    if (leaves[t.leaf].form == kColumns) {
      const int64_t width = t.c1 - t.c0, cols = leaves[t.leaf].cols;
      for (int64_t j = 0; j < width; ++j) {
        out[t.c0 + j] += in[j];
        out[cols + t.c0 + j] += in[width + j];
      }
    } else {
      for (int k = 0; k < 3; ++k) out[k] += in[k];
    }
  }
  for (size_t k = 0; k < leaves.size(); ++k) {
    TamLeaf<T>& l = leaves[k];
    const std::vector<double>& sum = leaf_sums[k];
    switch (l.form) {
      case kColumns:
        l.m_scale.resize(l.cols);
        l.g_scale.resize(l.cols);
        for (int64_t j = 0; j < l.cols; ++j) {
          l.m_scale[j] = Divisor<T>(sum[j]);
          l.g_scale[j] = Divisor<T>(sum[l.cols + j]);
        }
        break;
      case kUnit:
        l.m_unit = Divisor<T>(sum[0]);
        l.g_unit = Divisor<T>(sum[1]);
        break;
      case kCosine:
        l.corr = static_cast<T>(Cosine(sum[0], sum[1], sum[2]));
        break;
      case kClamped:
        l.corr = static_cast<T>(Clamped(sum[0], sum[1], sum[2]));
        break;
      case kRows:
        break;
    }
  }

  // 2. the step (rows: whole rows per task)
  std::vector<TamTask> steps;
  int64_t unused = 0;
  for (int64_t k = 0; k < static_cast<int64_t>(leaves.size()); ++k) {
    const TamLeaf<T>& l = leaves[k];
    AddTasks(l, k, kTask, l.form == kRows ? l.cols : kTask, &steps, &unused, 0);
  }
  ParallelFor(pool, static_cast<int64_t>(steps.size()), total, [&](int64_t k) {
    StepTask<T, kAdaptive>(s, leaves[steps[k].leaf], steps[k]);
  });
}

// The form and view of a leaf of the given shape under `rule`; `small` is auto's
// numel <= threshold.
template <typename T>
void SetForm(TamLeaf<T>& l, ffi::Span<const int64_t> dims, int64_t size, Rule rule,
             bool small) {
  const int64_t ndim = static_cast<int64_t>(dims.size());
  if (rule == kRuleAuto) {
    if (small) {
      rule = kRuleCosine;
    } else if (ndim >= 2) {
      rule = kRuleRowCosine;
    } else {
      l.form = size > 1000 ? kClamped : kCosine;
      l.rows = 1;
      l.cols = size;
      return;
    }
  }
  if (rule == kRuleDim0) {
    l.rows = ndim == 0 ? 1 : dims[0];
    l.cols = size / l.rows;
    if (l.cols > 1) {
      l.form = kColumns;
      return;
    }
    l.form = kUnit;  // one column: the leaf's norm
  } else if (rule == kRuleRowCosine && ndim >= 2) {
    l.form = kRows;
    l.cols = dims[ndim - 1];
    l.rows = size / l.cols;
    return;
  } else {
    l.form = kCosine;
  }
  l.rows = 1;
  l.cols = size;
}

template <typename T>
ffi::Error ReadTamLeaves(const ffi::RemainingArgs& args, const ffi::RemainingRets& rets,
                         const TamScalars<T>& s, const ffi::AnyBuffer& small, Rule rule,
                         bool adaptive, std::vector<TamLeaf<T>>* leaves) {
  const int kIn = adaptive ? 4 : 3;  // g, m, (v,) s
  const int kOut = kIn - 1;           // m, (v,) s
  if (args.size() % kIn != 0 || rets.size() * kIn != args.size() * kOut) {
    return InvalidArgument("TAM takes g, m, s (AdaTAM g, m, v, s) per leaf");
  }
  const size_t count = args.size() / kIn;
  if (small.element_type() != kDataType<T> || small.element_count() != count) {
    return InvalidArgument("the auto rule's flags must hold one value per leaf");
  }
  const T* small_flags = static_cast<const T*>(small.untyped_data());
  leaves->resize(count);
  for (size_t k = 0; k < count; ++k) {
    TamLeaf<T>& l = (*leaves)[k];
    const T* in[4] = {};
    T* out[3] = {};
    auto grad = args.get<ffi::AnyBuffer>(k * kIn);
    if (grad.has_error()) return grad.error();
    const auto dims = grad->dimensions();
    const int64_t size = static_cast<int64_t>(grad->element_count());
    for (int a = 0; a < kIn; ++a) {
      auto buffer = args.get<ffi::AnyBuffer>(k * kIn + a);
      if (buffer.has_error()) return buffer.error();
      if (buffer->element_type() != kDataType<T> ||
          static_cast<int64_t>(buffer->element_count()) != size) {
        return InvalidArgument("TAM's state must share the gradient's dtype and size");
      }
      in[a] = static_cast<const T*>(buffer->untyped_data());
    }
    for (int r = 0; r < kOut; ++r) {
      auto result = rets.get<ffi::AnyBuffer>(k * kOut + r);
      if (result.has_error()) return result.error();
      if ((*result)->element_type() != kDataType<T> ||
          static_cast<int64_t>((*result)->element_count()) != size) {
        return InvalidArgument("a TAM result differs in dtype or size from its leaf");
      }
      out[r] = static_cast<T*>((*result)->untyped_data());
    }
    if (size == 0) return InvalidArgument("empty leaf");
    l.g = in[0];
    l.m = s.first != T(0) ? in[0] : in[1];  // TAM's momentum starts at the gradient
    l.m_out = out[0];
    if (adaptive) {
      l.v = in[2];
      l.s = in[3];
      l.v_out = out[1];
      l.s_out = out[2];
    } else {
      l.v = nullptr;
      l.s = in[2];
      l.v_out = nullptr;
      l.s_out = out[1];
    }
    SetForm(l, dims, size, rule, small_flags[k] != T(0));
  }
  return ffi::Error::Success();
}

template <typename T>
ffi::Error TamTyped(ffi::ThreadPool& pool, const ffi::AnyBuffer* in, const ffi::AnyBuffer& small,
                    ffi::RemainingArgs args, ffi::RemainingRets rets, int64_t rule,
                    bool adaptive) {
  if (rule < kRuleDim0 || rule > kRuleAuto) return InvalidArgument("unknown correlation");
  TamScalars<T> s;
  T* fields[] = {&s.b1, &s.keep, &s.eps, &s.b2, &s.c2, &s.first};
  for (int k = 0; k < 6; ++k) {
    if (ffi::Error error = ReadScalar(in[k], fields[k]); error.failure()) return error;
  }
  std::vector<TamLeaf<T>> leaves;
  if (ffi::Error error =
          ReadTamLeaves<T>(args, rets, s, small, static_cast<Rule>(rule), adaptive, &leaves);
      error.failure()) {
    return error;
  }
  if (adaptive) {
    Run<T, true>(pool, s, leaves);
  } else {
    Run<T, false>(pool, s, leaves);
  }
  return ffi::Error::Success();
}

ffi::Error TamImpl(ffi::ThreadPool pool, ffi::AnyBuffer b1, ffi::AnyBuffer keep,
                   ffi::AnyBuffer eps, ffi::AnyBuffer b2, ffi::AnyBuffer c2, ffi::AnyBuffer first,
                   ffi::AnyBuffer small, ffi::RemainingArgs args, ffi::RemainingRets rets,
                   int64_t rule, int64_t adaptive) {
  const ffi::AnyBuffer in[] = {b1, keep, eps, b2, c2, first};
  return ByDtype(b1.element_type(), [&](auto zero) {
    return TamTyped<decltype(zero)>(pool, in, small, args, rets, rule, adaptive != 0);
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxoptAdvTam, TamImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // b1
                                  .Arg<ffi::AnyBuffer>()  // 1 - decay_rate
                                  .Arg<ffi::AnyBuffer>()  // eps
                                  .Arg<ffi::AnyBuffer>()  // b2 (AdaTAM)
                                  .Arg<ffi::AnyBuffer>()  // 1 - b2 (AdaTAM)
                                  .Arg<ffi::AnyBuffer>()  // 1 on TAM's first step, else 0
                                  .Arg<ffi::AnyBuffer>()  // per leaf: 1 if numel <= threshold
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int64_t>("rule")
                                  .Attr<int64_t>("adaptive"));
