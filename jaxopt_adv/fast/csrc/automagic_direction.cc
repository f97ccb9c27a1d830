// Automagic-CameAMP's direction control (jaxopt_adv.automagic.body.automagic_direction) of
// leaves with ndim >= 2 and more than one element, for XLA:CPU through the XLA FFI. XLA
// compiles both phases' directions for every step and selects one (a dozen whole-leaf
// loops and reductions); here a leaf takes only its phase's passes (automagic_direction.h):
//   early (Grams, edge damping, OrthoGrad):
//     1. Grams, the edge damping and OrthoGrad's sums   reads u, g, w, H; writes out, H'
//     2. out = c' unchanged, or (c' - w p) |c'| / (|c' - w p| + eps)   reads out, w
//        (and before it, for a leaf whose c' is mostly along w, |c' - w p|: reads out, w)
//   later (Cautious, background halving):
//     1. the count of u g > 0, the sums of g - g0 and (g - g0)^2 (g0: the leaf's first
//        element; the unbiased variance)                          reads u, g
//     2. out = u ((1[u g > 0] / max(mean, floor)) (factor if var < threshold))
// Sums are accumulated in double (in a fixed order of tasks: the results do not depend on
// the thread count), so results agree with the XLA path to rounding, not bit for bit.

#include <algorithm>
#include <cstdint>
#include <vector>

#include "automagic_direction.h"
#include "common.h"

namespace {

// Rows are grouped into tasks of about this many elements.
constexpr int64_t kDirectionTask = int64_t{1} << 16;

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

template <typename T>
void GramsRow(const DirectionLeaf<T>& leaf, int64_t row, T* c) {
  const T* u = leaf.u + row * leaf.cols;
  const T* g = leaf.g + row * leaf.cols;
#pragma omp simd
  for (int64_t j = 0; j < leaf.cols; ++j) c[j] = Grams(u[j], g[j]);
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
  for (int64_t k = 0; k < n; ++k) out[k] = CautiousElement(u[k], g[k], denom, background, factor);
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
      DirectionLeaf<T>& leaf = leaves[tasks[k].leaf];
      const auto grams_row = [&leaf](int64_t r, T* c) { GramsRow(leaf, r, c); };
      EarlyFirstPass(s, with_edge, leaf, tasks[k], grams_row, task_sums.data() + 3 * k);
    });
    OrthogonalizeLeaves(pool, s, tasks, total, task_sums, leaves);
    return;
  }
  ParallelFor(pool, n, total, [&](int64_t k) {
    CautiousSums(leaves[tasks[k].leaf], tasks[k], task_sums.data() + 3 * k);
    if (with_edge) CopyHistory(leaves[tasks[k].leaf], tasks[k]);
  });
  SetCautiousMasks(s, with_background, tasks, task_sums, leaves);
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
