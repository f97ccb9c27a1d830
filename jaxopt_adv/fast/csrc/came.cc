// CAME's scaling (jaxopt_adv.came.scale_by_came) of leaves with ndim >= 2 for XLA:CPU,
// called through the XLA FFI. XLA compiles the same step into five whole-leaf loops
// with g^2, u and the instability materialised (its reductions do not fuse their
// producers); here each leaf, seen as `batch` row-major matrices of rows x cols, takes
// four passes that materialise nothing:
//   1. row and column sums of g^2 + eps1                             reads g
//   2. sum of u^2, u = g rsqrt(R_i / mean R) rsqrt(C_j)               reads g
//   3. u / max(1, rms(u) / clip), the new momentum m, and the row
//      and column sums of the instability (u - m)^2 + eps2           reads g, m; writes m
//   4. out = m rsqrt(R'_i / mean R') rsqrt(C'_j)                      reads m; writes out
// with the row and column statistics (R, C: second moment; R', C': instability) updated
// in between. Sums are accumulated in double, per task of a fixed partition of the rows,
// and the task sums are added in task order: results do not depend on the thread count.
// The arithmetic is jaxopt_adv.came's, not XLA's code for it (whose reductions' order is
// its own), so results agree with the XLA path to rounding, not bit for bit.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common.h"

namespace {

// Rows are grouped into tasks of about this many elements.
constexpr int64_t kCameTask = int64_t{1} << 17;

template <typename T>
struct CameScalars {
  T b1, c1, b2, c2, b3, c3, eps1, eps2, clip;
};

// A leaf's operands (g, m and the statistics) and results (out in the gradient's slot, m
// and the statistics, which alias their operands when donated), by slot.
enum CameSlot : int {
  kGrad = 0,
  kMomentum,
  kRowMoment,
  kColMoment,
  kRowResidual,
  kColResidual,
  kSlots,
};

template <typename T>
struct CameLeaf {
  const T* in[kSlots];
  T* out[kSlots];
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

// Sums x(j) of every row of the task into row_sum and into the task's column sums;
// make_row(row) returns x (a function of the column j).
template <typename T, typename MakeRow>
void SumRowsAndColumns(CameLeaf<T>& leaf, const CameTask& t, double* partial, MakeRow make_row) {
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

template <typename T>
void Scale(ffi::ThreadPool& pool, const CameScalars<T>& s, std::vector<CameLeaf<T>>& leaves) {
  int64_t partial_size = 0;
  int64_t total = 0;
  const std::vector<CameTask> tasks = MakeTasks(leaves, &partial_size, &total);
  const int64_t n = static_cast<int64_t>(tasks.size());
  std::vector<double> partial(partial_size);

  // 1. second moment
  ParallelFor(pool, n, total, [&](int64_t k) {
    CameLeaf<T>& leaf = leaves[tasks[k].leaf];
    SumRowsAndColumns(leaf, tasks[k], partial.data(), [&](int64_t row) {
      const T* g = leaf.in[kGrad] + row * leaf.cols;
      const T eps1 = s.eps1;
      return [g, eps1](int64_t j) { return static_cast<double>(g[j] * g[j] + eps1); };
    });
  });
  AddColumns(leaves, tasks, partial);
  for (CameLeaf<T>& leaf : leaves) UpdateFactors(leaf, kRowMoment, kColMoment, s.b2, s.c2);

  // 2. rms of the scaled gradient
  std::vector<double> task_sum(n);
  ParallelFor(pool, n, total,
              [&](int64_t k) { task_sum[k] = SumOfSquares(leaves[tasks[k].leaf], tasks[k]); });
  std::vector<double> leaf_sum(leaves.size(), 0.0);
  for (int64_t k = 0; k < n; ++k) leaf_sum[tasks[k].leaf] += task_sum[k];
  for (size_t l = 0; l < leaves.size(); ++l) {
    CameLeaf<T>& leaf = leaves[l];
    const double size = static_cast<double>(leaf.batch * leaf.rows * leaf.cols);
    const T rms = std::sqrt(static_cast<T>(leaf_sum[l])) / static_cast<T>(std::sqrt(size));
    leaf.denom = XlaMax(T(1), rms / s.clip);
  }

  // 3. momentum and instability
  ParallelFor(pool, n, total, [&](int64_t k) {
    CameLeaf<T>& leaf = leaves[tasks[k].leaf];
    SumRowsAndColumns(leaf, tasks[k], partial.data(), [&](int64_t row) {
      const int64_t at = row * leaf.cols;
      const T rf = leaf.row_factor[row];
      const T* cf = leaf.col_factor.data() + (row / leaf.rows) * leaf.cols;
      const T* g = leaf.in[kGrad] + at;
      const T* m_in = leaf.in[kMomentum] + at;
      T* m_out = leaf.out[kMomentum] + at;
      const T denom = leaf.denom;
      return [rf, cf, g, m_in, m_out, denom, &s](int64_t j) {
        const T u = ((rf * cf[j]) * g[j]) / denom;
        const T m = s.b1 * m_in[j] + s.c1 * u;
        m_out[j] = m;
        const T d = u - m;
        return static_cast<double>(d * d + s.eps2);
      };
    });
  });
  AddColumns(leaves, tasks, partial);
  for (CameLeaf<T>& leaf : leaves) {
    UpdateFactors(leaf, kRowResidual, kColResidual, s.b3, s.c3);
  }

  // 4. confidence-scaled momentum
  ParallelFor(pool, n, total, [&](int64_t k) {
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

template <typename T>
ffi::Error ReadCameLeaves(const ffi::RemainingArgs& args, const ffi::RemainingRets& rets,
                          std::vector<CameLeaf<T>>* leaves) {
  if (args.size() % kSlots != 0 || rets.size() != args.size()) {
    return InvalidArgument("CAME takes g, m, v_row, v_col, r_row, r_col per leaf");
  }
  leaves->resize(args.size() / kSlots);
  for (size_t l = 0; l < leaves->size(); ++l) {
    CameLeaf<T>& leaf = (*leaves)[l];
    auto g = args.get<ffi::AnyBuffer>(l * kSlots);
    if (g.has_error()) return g.error();
    const auto dims = g->dimensions();
    if (dims.size() < 2) return InvalidArgument("CAME's kernel takes leaves with ndim >= 2");
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
    for (int a = 0; a < kSlots; ++a) {
      auto in = args.get<ffi::AnyBuffer>(l * kSlots + a);
      auto out = rets.get<ffi::AnyBuffer>(l * kSlots + a);
      if (in.has_error()) return in.error();
      if (out.has_error()) return out.error();
      if (!Matches<T>(in->element_type(), in->element_count(), expected[a]) ||
          !Matches<T>((*out)->element_type(), (*out)->element_count(), expected[a])) {
        return InvalidArgument("a CAME operand or result has the wrong dtype or size");
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

template <typename T>
ffi::Error CameTyped(ffi::ThreadPool& pool, const ffi::AnyBuffer* in, ffi::RemainingArgs args,
                     ffi::RemainingRets rets) {
  CameScalars<T> s;
  T* fields[] = {&s.b1, &s.c1, &s.b2, &s.c2, &s.b3, &s.c3, &s.eps1, &s.eps2, &s.clip};
  for (int k = 0; k < 9; ++k) {
    if (ffi::Error error = ReadScalar(in[k], fields[k]); error.failure()) return error;
  }
  std::vector<CameLeaf<T>> leaves;
  if (ffi::Error error = ReadCameLeaves<T>(args, rets, &leaves); error.failure()) return error;
  Scale(pool, s, leaves);
  return ffi::Error::Success();
}

ffi::Error CameImpl(ffi::ThreadPool pool, ffi::AnyBuffer b1, ffi::AnyBuffer c1, ffi::AnyBuffer b2,
                    ffi::AnyBuffer c2, ffi::AnyBuffer b3, ffi::AnyBuffer c3, ffi::AnyBuffer eps1,
                    ffi::AnyBuffer eps2, ffi::AnyBuffer clip, ffi::RemainingArgs args,
                    ffi::RemainingRets rets) {
  const ffi::AnyBuffer in[] = {b1, c1, b2, c2, b3, c3, eps1, eps2, clip};
  return ByDtype(b1.element_type(), [&](auto zero) {
    return CameTyped<decltype(zero)>(pool, in, args, rets);
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxoptAdvCame, CameImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // b1
                                  .Arg<ffi::AnyBuffer>()  // 1 - b1
                                  .Arg<ffi::AnyBuffer>()  // b2
                                  .Arg<ffi::AnyBuffer>()  // 1 - b2
                                  .Arg<ffi::AnyBuffer>()  // b3
                                  .Arg<ffi::AnyBuffer>()  // 1 - b3
                                  .Arg<ffi::AnyBuffer>()  // eps1
                                  .Arg<ffi::AnyBuffer>()  // eps2
                                  .Arg<ffi::AnyBuffer>()  // clip threshold
                                  .RemainingArgs()
                                  .RemainingRets());
