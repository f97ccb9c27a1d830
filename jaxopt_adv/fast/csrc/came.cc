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

#include <cmath>
#include <cstdint>
#include <vector>

#include "came.h"
#include "common.h"

namespace {

template <typename T>
struct CameScalars {
  T b1, c1, b2, c2, b3, c3, eps1, eps2, clip;
};

template <typename T>
void Scale(ffi::ThreadPool& pool, const CameScalars<T>& s, std::vector<CameLeaf<T>>& leaves) {
  int64_t partial_size = 0;
  int64_t total = 0;
  const std::vector<CameTask> tasks = MakeTasks(leaves, &partial_size, &total);
  const int64_t n = static_cast<int64_t>(tasks.size());
  std::vector<double> partial(partial_size);

  // 1. second moment
  UpdateSecondMoment(pool, tasks, total, s.eps1, s.b2, s.c2, partial, leaves);

  // 2. rms of the scaled gradient
  SetDenominators(pool, tasks, total, s.clip, leaves);

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
  ScaleMomentum(pool, tasks, total, leaves);
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
  if (ffi::Error error = ReadFactoredLeaves<T>(
          args, rets, kSlots, "CAME takes g, m, v_row, v_col, r_row, r_col per leaf",
          [](size_t, const CameLeaf<T>&) { return int64_t{0}; }, &leaves);
      error.failure()) {
    return error;
  }
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
