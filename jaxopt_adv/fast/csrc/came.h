// CAME's factored second-moment machinery for XLA:CPU kernels of leaves with ndim >= 2,
// shared by came.cc (jaxopt_adv.came.scale_by_came) and automagic.cc (Automagic-CameAMP's
// scaling): a leaf seen as `batch` row-major matrices of rows x cols, its tasks (a fixed
// partition of the rows), the row and column sums of a function of each element in one
// pass (double, task sums added in task order: results do not depend on the thread
// count), the factored EMA and its inverse-root factors, the RMS clip's denominator and
// the final confidence scaling. Everything is in an anonymous namespace (common.h).
#ifndef JAXOPT_ADV_FAST_CAME_H_
#define JAXOPT_ADV_FAST_CAME_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common.h"

namespace {

// Rows are grouped into tasks of about this many elements.
constexpr int64_t kCameTask = int64_t{1} << 17;

// A leaf's operands (g, m and the statistics) and results (out in the gradient's slot, m
// and the statistics, which alias their operands when donated), by slot.
enum CameSlot : int {
  kGrad = 0,
  kMomentum,
  kRowMoment,
  kColMoment,
  kRowResidual,
  kColResidual,
  kSlots,              // CAME's six
  kCorrelation = kSlots,  // Automagic's TAM correlation s (automagic.cc)
  kMaxSlots,
};

template <typename T>
struct CameLeaf {
  const T* in[kMaxSlots];
  T* out[kMaxSlots];
  int64_t batch = 0, rows = 0, cols = 0;
  std::vector<double> row_sum, col_sum;   // batch * rows, batch * cols
  std::vector<T> row_factor, col_factor;  // batch * rows, batch * cols
  T denom = 1;                            // max(1, rms(u) / clip)
};

// Rows [lo, hi) of a leaf's batch * rows rows: part of one matrix, or whole matrices.
// Its column sums go to partial[offset, offset + matrices * cols).
struct CameTask {
  int64_t leaf, lo, hi, offset;
};

template <typename T>
int64_t FirstMatrix(const CameLeaf<T>& leaf, const CameTask& t) {
  return t.lo / leaf.rows;
}

template <typename T>
int64_t Matrices(const CameLeaf<T>& leaf, const CameTask& t) {
  return (t.hi - 1) / leaf.rows - FirstMatrix(leaf, t) + 1;
}

template <typename T>
std::vector<CameTask> MakeTasks(const std::vector<CameLeaf<T>>& leaves, int64_t* partial_size,
                                int64_t* total) {
  std::vector<CameTask> tasks;
  *partial_size = 0;
  *total = 0;
  for (int64_t l = 0; l < static_cast<int64_t>(leaves.size()); ++l) {
    const CameLeaf<T>& leaf = leaves[l];
    const int64_t matrix = leaf.rows * leaf.cols;
    *total += leaf.batch * matrix;
    if (matrix >= kCameTask) {
      const int64_t step = std::max<int64_t>(1, kCameTask / leaf.cols);
      for (int64_t b = 0; b < leaf.batch; ++b) {
        for (int64_t r = 0; r < leaf.rows; r += step) {
          const int64_t lo = b * leaf.rows + r;
          tasks.push_back({l, lo, lo + std::min(step, leaf.rows - r), *partial_size});
          *partial_size += leaf.cols;
        }
      }
    } else {
      const int64_t step = std::max<int64_t>(1, kCameTask / matrix);
      for (int64_t b = 0; b < leaf.batch; b += step) {
        const int64_t end = std::min(leaf.batch, b + step);
        tasks.push_back({l, b * leaf.rows, end * leaf.rows, *partial_size});
        *partial_size += (end - b) * leaf.cols;
      }
    }
  }
  return tasks;
}

// A row hook that does nothing.
struct NoRowHook {
  void operator()(int64_t) const {}
};

// Sums x(j) of every row of the task into row_sum and into the task's column sums;
// make_row(row) returns x (a function of the column j); after_row(row) runs once the
// row is summed (its results still in cache).
template <typename T, typename MakeRow, typename AfterRow = NoRowHook>
void SumRowsAndColumns(CameLeaf<T>& leaf, const CameTask& t, double* partial, MakeRow make_row,
                       AfterRow after_row = AfterRow()) {
  const int64_t cols = leaf.cols;
  const int64_t first = FirstMatrix(leaf, t);
  double* columns = partial + t.offset;
  std::fill(columns, columns + Matrices(leaf, t) * cols, 0.0);
  for (int64_t row = t.lo; row < t.hi; ++row) {
    double* col = columns + (row / leaf.rows - first) * cols;
    const auto x = make_row(row);
    double sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < cols; ++j) {
      const double value = x(j);
      sum += value;
      col[j] += value;
    }
    leaf.row_sum[row] = sum;
    after_row(row);
  }
}

// The tasks' column sums, added in task order into each leaf's col_sum.
template <typename T>
void AddColumns(std::vector<CameLeaf<T>>& leaves, const std::vector<CameTask>& tasks,
                const std::vector<double>& partial) {
  for (CameLeaf<T>& leaf : leaves) std::fill(leaf.col_sum.begin(), leaf.col_sum.end(), 0.0);
  for (const CameTask& t : tasks) {
    CameLeaf<T>& leaf = leaves[t.leaf];
    double* out = leaf.col_sum.data() + FirstMatrix(leaf, t) * leaf.cols;
    const double* in = partial.data() + t.offset;
    const int64_t n = Matrices(leaf, t) * leaf.cols;
    for (int64_t k = 0; k < n; ++k) out[k] += in[k];
  }
}

// update_factored_moment: row <- b row + c mean_j x, col <- b col + c mean_i x (from the
// sums of x); then factored_rsqrt's factors rsqrt(row / mean(row)) and rsqrt(col).
template <typename T>
void UpdateFactors(CameLeaf<T>& leaf, int row_slot, int col_slot, T b, T c) {
  const T* row_in = leaf.in[row_slot];
  const T* col_in = leaf.in[col_slot];
  T* row_out = leaf.out[row_slot];
  T* col_out = leaf.out[col_slot];
  for (int64_t k = 0; k < leaf.batch; ++k) {
    double row_total = 0;
    for (int64_t i = k * leaf.rows; i < (k + 1) * leaf.rows; ++i) {
      const T mean = static_cast<T>(leaf.row_sum[i] / static_cast<double>(leaf.cols));
      row_out[i] = b * row_in[i] + c * mean;
      row_total += row_out[i];
    }
    const T row_mean = static_cast<T>(row_total / static_cast<double>(leaf.rows));
    for (int64_t i = k * leaf.rows; i < (k + 1) * leaf.rows; ++i) {
      leaf.row_factor[i] = T(1) / std::sqrt(row_out[i] / row_mean);
    }
    for (int64_t j = k * leaf.cols; j < (k + 1) * leaf.cols; ++j) {
      const T mean = static_cast<T>(leaf.col_sum[j] / static_cast<double>(leaf.rows));
      col_out[j] = b * col_in[j] + c * mean;
      leaf.col_factor[j] = T(1) / std::sqrt(col_out[j]);
    }
  }
}

// Pass 2 over a task's rows: the sum of squares of (R factor * C factor) * g.
template <typename T>
double SumOfSquares(const CameLeaf<T>& leaf, const CameTask& t) {
  double sum = 0;
  for (int64_t row = t.lo; row < t.hi; ++row) {
    const T rf = leaf.row_factor[row];
    const T* cf = leaf.col_factor.data() + (row / leaf.rows) * leaf.cols;
    const T* g = leaf.in[kGrad] + row * leaf.cols;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < leaf.cols; ++j) {
      const double u = (rf * cf[j]) * g[j];
      sum += u * u;
    }
  }
  return sum;
}

// Pass 1 over every leaf: the row and column sums of g^2 + eps1, and the second moment's
// factors updated from them (b: its decay, c = 1 - b).
template <typename T>
void UpdateSecondMoment(ffi::ThreadPool& pool, const std::vector<CameTask>& tasks,
                        int64_t total, T eps1, T b, T c, std::vector<double>& partial,
                        std::vector<CameLeaf<T>>& leaves) {
  ParallelFor(pool, static_cast<int64_t>(tasks.size()), total, [&](int64_t k) {
    CameLeaf<T>& leaf = leaves[tasks[k].leaf];
    SumRowsAndColumns(leaf, tasks[k], partial.data(), [&](int64_t row) {
      const T* g = leaf.in[kGrad] + row * leaf.cols;
      return [g, eps1](int64_t j) { return static_cast<double>(g[j] * g[j] + eps1); };
    });
  });
  AddColumns(leaves, tasks, partial);
  for (CameLeaf<T>& leaf : leaves) UpdateFactors(leaf, kRowMoment, kColMoment, b, c);
}

// max(1, rms(u) / clip) of a leaf whose scaled gradient u has this sum of squares.
template <typename T>
T ClipDenominator(const CameLeaf<T>& leaf, double sum_of_squares, T clip) {
  const double size = static_cast<double>(leaf.batch * leaf.rows * leaf.cols);
  const T rms = std::sqrt(static_cast<T>(sum_of_squares)) / static_cast<T>(std::sqrt(size));
  return XlaMax(T(1), rms / clip);
}

// Pass 2 over every leaf: each leaf's denom = max(1, rms(u) / clip) of its scaled
// gradient u = (R factor * C factor) * g (task sums added in task order).
template <typename T>
void SetDenominators(ffi::ThreadPool& pool, const std::vector<CameTask>& tasks, int64_t total,
                     T clip, std::vector<CameLeaf<T>>& leaves) {
  const int64_t n = static_cast<int64_t>(tasks.size());
  std::vector<double> task_sum(n);
  ParallelFor(pool, n, total,
              [&](int64_t k) { task_sum[k] = SumOfSquares(leaves[tasks[k].leaf], tasks[k]); });
  std::vector<double> leaf_sum(leaves.size(), 0.0);
  for (int64_t k = 0; k < n; ++k) leaf_sum[tasks[k].leaf] += task_sum[k];
  for (size_t l = 0; l < leaves.size(); ++l) {
    leaves[l].denom = ClipDenominator(leaves[l], leaf_sum[l], clip);
  }
}

// Pass 4: out = (R' factor * C' factor) * m, from the new momentum.
template <typename T>
void ScaleMomentum(ffi::ThreadPool& pool, const std::vector<CameTask>& tasks, int64_t total,
                   std::vector<CameLeaf<T>>& leaves) {
  ParallelFor(pool, static_cast<int64_t>(tasks.size()), total, [&](int64_t k) {
    const CameTask& t = tasks[k];
    CameLeaf<T>& leaf = leaves[t.leaf];
    for (int64_t row = t.lo; row < t.hi; ++row) {
      const int64_t at = row * leaf.cols;
      const T rf = leaf.row_factor[row];
      const T* cf = leaf.col_factor.data() + (row / leaf.rows) * leaf.cols;
      const T* m = leaf.out[kMomentum] + at;
      T* out = leaf.out[kGrad] + at;
#pragma omp simd
      for (int64_t j = 0; j < leaf.cols; ++j) out[j] = (rf * cf[j]) * m[j];
    }
  });
}

// Checks one buffer's dtype and element count.
template <typename T>
bool Matches(ffi::DataType type, size_t count, int64_t expected) {
  return type == kDataType<T> && static_cast<int64_t>(count) == expected;
}

// Reads `slots` operands and results per leaf (CAME's six, then automagic.cc's s), in
// slot order; extra_size(l, leaf) is the element count of leaf l's slots past kSlots.
// With a `count`, the first count * slots operands and results are the leaves' and more
// may follow (automagic_body.cc's); without, every operand and result is a leaf's.
template <typename T, typename ExtraSize>
ffi::Error ReadFactoredLeaves(const ffi::RemainingArgs& args, const ffi::RemainingRets& rets,
                              int slots, const char* layout, ExtraSize extra_size,
                              std::vector<CameLeaf<T>>* leaves, size_t count = 0) {
  if (count == 0) {
    if (args.size() % slots != 0 || rets.size() != args.size()) return InvalidArgument(layout);
    count = args.size() / slots;
  } else if (args.size() < count * slots || rets.size() < count * slots) {
    return InvalidArgument(layout);
  }
  leaves->resize(count);
  for (size_t l = 0; l < leaves->size(); ++l) {
    CameLeaf<T>& leaf = (*leaves)[l];
    auto g = args.get<ffi::AnyBuffer>(l * slots);
    if (g.has_error()) return g.error();
    const auto dims = g->dimensions();
    if (dims.size() < 2) return InvalidArgument("the factored kernels take leaves with ndim >= 2");
    leaf.rows = dims[dims.size() - 2];
    leaf.cols = dims[dims.size() - 1];
    leaf.batch = 1;
    for (size_t d = 0; d + 2 < dims.size(); ++d) leaf.batch *= dims[d];
    if (leaf.batch * leaf.rows * leaf.cols == 0) return InvalidArgument("empty leaf");
    const int64_t size = leaf.batch * leaf.rows * leaf.cols;
    const int64_t expected[kSlots] = {size,
                                      size,
                                      leaf.batch * leaf.rows,
                                      leaf.batch * leaf.cols,
                                      leaf.batch * leaf.rows,
                                      leaf.batch * leaf.cols};
    for (int a = 0; a < slots; ++a) {
      auto in = args.get<ffi::AnyBuffer>(l * slots + a);
      auto out = rets.get<ffi::AnyBuffer>(l * slots + a);
      if (in.has_error()) return in.error();
      if (out.has_error()) return out.error();
      const int64_t want = a < kSlots ? expected[a] : extra_size(l, leaf);
      if (!Matches<T>(in->element_type(), in->element_count(), want) ||
          !Matches<T>((*out)->element_type(), (*out)->element_count(), want)) {
        return InvalidArgument("an operand or result has the wrong dtype or size");
      }
      leaf.in[a] = static_cast<const T*>(in->untyped_data());
      leaf.out[a] = static_cast<T*>((*out)->untyped_data());
    }
    leaf.row_sum.resize(leaf.batch * leaf.rows);
    leaf.row_factor.resize(leaf.batch * leaf.rows);
    leaf.col_sum.resize(leaf.batch * leaf.cols);
    leaf.col_factor.resize(leaf.batch * leaf.cols);
  }
  return ffi::Error::Success();
}

}  // namespace

#endif  // JAXOPT_ADV_FAST_CAME_H_
