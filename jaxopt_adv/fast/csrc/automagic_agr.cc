// Adaptive gradient regularisation (jaxopt_adv.automagic.agr.agr) of float leaves for
// XLA:CPU through the XLA FFI, as Automagic-CameAMP's first block: given the sum S of |g|
// over the leaf's scope (XLA's reduction), one pass per leaf that reads g once and writes
//   out = g (1 - min(|g| / (S + eps) (1 + E(g)), cap))
// with E the Laplacian edge strength over the last two axes (edge suppression; rows are
// read again for their neighbours, from cache) and cap = 1 - 1/n (cap_alpha). XLA builds
// the Laplacian in separate loops and materialises it. The arithmetic is XLA's operation
// for operation (no sums), so the results are the JAX path's to rounding of its
// multiply-adds.

#include <cmath>
#include <cstdint>
#include <vector>

#include "common.h"

namespace {

// Each task covers about this many elements (whole rows) of one leaf.
constexpr int64_t kAgrTask = int64_t{1} << 16;

template <typename T>
struct AgrScalars {
  T denom;  // S + eps, or 1 where it is 0 (alpha is then 0)
  T safe;   // 1 where S + eps != 0, else 0
  T edge_threshold, edge_scale, cap;
};

template <typename T>
struct AgrLeaf {
  const T* g;
  T* out;
  int64_t batch, rows, cols;
};

struct AgrTask {
  int64_t leaf, lo, hi;  // rows
};

// One row: alpha = |g| / denom (0 where not safe), times 1 + E(lap) (edge), capped.
template <typename T>
void AgrRow(const AgrScalars<T>& s, bool edge, bool cap, const AgrLeaf<T>& leaf, int64_t row,
            T* lap) {
  const int64_t cols = leaf.cols;
  const T* g = leaf.g + row * cols;
  T* out = leaf.out + row * cols;
  const bool safe = s.safe != T(0);
  if (edge) {
    const int64_t i = row % leaf.rows;
    if (leaf.rows > 2 && i >= 1 && i + 1 < leaf.rows) {
      const T* prev = g - cols;
      const T* next = g + cols;
#pragma omp simd
      for (int64_t j = 0; j < cols; ++j) lap[j] = T(0) + ((next[j] - T(2) * g[j]) + prev[j]);
    } else {
      std::fill(lap, lap + cols, T(0));
    }
#pragma omp simd
    for (int64_t j = 1; j < cols - 1; ++j) lap[j] = lap[j] + ((g[j + 1] - T(2) * g[j]) + g[j - 1]);
  }
  const T denom = s.denom;
  const T threshold = s.edge_threshold;
  const T scale = s.edge_scale;
  const T limit = s.cap;
#pragma omp simd
  for (int64_t j = 0; j < cols; ++j) {
    const T x = g[j];
    T alpha = safe ? std::fabs(x) / denom : T(0);
    if (edge) {
      const T magnitude = std::fabs(lap[j]);
      const T strength = magnitude > threshold ? magnitude * scale : T(0);
      alpha = alpha * (T(1) + strength);
    }
    if (cap) alpha = XlaMin(alpha, limit);
    out[j] = x * (T(1) - alpha);
  }
}

template <typename T>
ffi::Error AgrTyped(ffi::ThreadPool& pool, const ffi::AnyBuffer* in, bool edge, bool cap,
                    ffi::RemainingArgs args, ffi::RemainingRets rets) {
  AgrScalars<T> s;
  T* fields[] = {&s.denom, &s.safe, &s.edge_threshold, &s.edge_scale, &s.cap};
  for (int k = 0; k < 5; ++k) {
    if (ffi::Error error = ReadScalar(in[k], fields[k]); error.failure()) return error;
  }
  if (rets.size() != args.size()) return InvalidArgument("AGR takes g and gives out per leaf");
  std::vector<AgrLeaf<T>> leaves(args.size());
  std::vector<AgrTask> tasks;
  int64_t total = 0;
  int64_t widest = 0;
  for (size_t l = 0; l < leaves.size(); ++l) {
    AgrLeaf<T>& leaf = leaves[l];
    auto g = args.get<ffi::AnyBuffer>(l);
    auto out = rets.get<ffi::AnyBuffer>(l);
    if (g.has_error()) return g.error();
    if (out.has_error()) return out.error();
    const auto dims = g->dimensions();
    leaf.cols = dims.size() >= 1 ? dims[dims.size() - 1] : 1;
    leaf.rows = dims.size() >= 2 ? dims[dims.size() - 2] : 1;
    leaf.batch = 1;
    for (size_t d = 0; d + 2 < dims.size(); ++d) leaf.batch *= dims[d];
    const int64_t size = static_cast<int64_t>(g->element_count());
    if (g->element_type() != kDataType<T> || (*out)->element_type() != kDataType<T> ||
        static_cast<int64_t>((*out)->element_count()) != size || size == 0) {
      return InvalidArgument("an operand or result of AGR has the wrong dtype or size");
    }
    if (edge && dims.size() < 2) return InvalidArgument("AGR's edge factor needs ndim >= 2");
    leaf.g = static_cast<const T*>(g->untyped_data());
    leaf.out = static_cast<T*>((*out)->untyped_data());
    total += size;
    widest = std::max(widest, leaf.cols);
    const int64_t all_rows = leaf.batch * leaf.rows;
    const int64_t step = std::max<int64_t>(1, kAgrTask / leaf.cols);
    for (int64_t lo = 0; lo < all_rows; lo += step) {
      tasks.push_back({static_cast<int64_t>(l), lo, std::min(all_rows, lo + step)});
    }
  }
  ParallelFor(pool, static_cast<int64_t>(tasks.size()), total, [&](int64_t k) {
    const AgrTask& t = tasks[k];
    std::vector<T> lap(edge ? widest : 0);
    for (int64_t row = t.lo; row < t.hi; ++row) AgrRow(s, edge, cap, leaves[t.leaf], row, lap.data());
  });
  return ffi::Error::Success();
}

ffi::Error AgrImpl(ffi::ThreadPool pool, ffi::AnyBuffer denom, ffi::AnyBuffer safe,
                   ffi::AnyBuffer edge_threshold, ffi::AnyBuffer edge_scale, ffi::AnyBuffer cap,
                   ffi::RemainingArgs args, ffi::RemainingRets rets, int64_t edge,
                   int64_t capped) {
  const ffi::AnyBuffer in[] = {denom, safe, edge_threshold, edge_scale, cap};
  return ByDtype(denom.element_type(), [&](auto zero) {
    return AgrTyped<decltype(zero)>(pool, in, edge != 0, capped != 0, args, rets);
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxoptAdvAutomagicAgr, AgrImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // S + eps (1 where that is 0)
                                  .Arg<ffi::AnyBuffer>()  // 1 where S + eps != 0, else 0
                                  .Arg<ffi::AnyBuffer>()  // edge threshold
                                  .Arg<ffi::AnyBuffer>()  // edge scale
                                  .Arg<ffi::AnyBuffer>()  // cap of alpha
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int64_t>("edge")
                                  .Attr<int64_t>("cap"));
