// Selective projection decay (jaxopt_adv.automagic.spd.selective_projection_decay) of
// float leaves for XLA:CPU through the XLA FFI, as Automagic-CameAMP's last block. Per leaf,
// with the step d (optax sign), the params p, the raw gradient g and the anchor a (zeros
// when absent):
//   1. the sums of g (p - a), (p + d - a)^2 and (p - a)^2     reads d, p, g, a
//   2. only where the decay fires (active, and the first sum > 0):
//      out = d - (lambda r) (p + d - a), r = clip((|p + d - a| - |p - a|) / (|p + d - a| +
//      eps), 0, 1)                                             reads d, p, a; writes out
// out aliases d: a leaf the decay leaves alone is not written at all. XLA computes the
// three sums in separate loops and writes out on every step. Sums are accumulated in
// double (in a fixed order of tasks), so results agree with the XLA path to rounding.

#include <cmath>
#include <cstdint>
#include <vector>

#include "common.h"

namespace {

// Each task covers about this many elements of one leaf.
constexpr int64_t kSpdTask = int64_t{1} << 16;

template <typename T>
struct SpdLeaf {
  const T* d;
  const T* p;
  const T* g;
  const T* anchor;  // nullptr: zeros
  T* out;           // aliases d
  int64_t size;
  T decay;          // lambda (rank-aware factor included)
  T coefficient = 0;  // lambda r where the decay fires
  bool fire = false;
};

struct SpdTask {
  int64_t leaf, lo, hi;
};

template <typename T>
void SpdSums(const SpdLeaf<T>& leaf, const SpdTask& t, double* sums) {
  double gd = 0, moved = 0, here = 0;
  const T* d = leaf.d;
  const T* p = leaf.p;
  const T* g = leaf.g;
  if (leaf.anchor == nullptr) {
#pragma omp simd reduction(+ : gd, moved, here)
    for (int64_t k = t.lo; k < t.hi; ++k) {
      const T candidate = p[k] + d[k];
      gd += static_cast<double>(g[k] * p[k]);
      moved += static_cast<double>(candidate * candidate);
      here += static_cast<double>(p[k] * p[k]);
    }
  } else {
    const T* a = leaf.anchor;
#pragma omp simd reduction(+ : gd, moved, here)
    for (int64_t k = t.lo; k < t.hi; ++k) {
      const T diff = p[k] - a[k];
      const T away = (p[k] + d[k]) - a[k];
      gd += static_cast<double>(g[k] * diff);
      moved += static_cast<double>(away * away);
      here += static_cast<double>(diff * diff);
    }
  }
  sums[0] = gd;
  sums[1] = moved;
  sums[2] = here;
}

template <typename T>
void SpdDecay(SpdLeaf<T>& leaf, const SpdTask& t) {
  const T* d = leaf.d;
  const T* p = leaf.p;
  T* out = leaf.out;
  if (!leaf.fire) {
    if (out != d) std::copy(d + t.lo, d + t.hi, out + t.lo);
    return;
  }
  const T c = leaf.coefficient;
  if (leaf.anchor == nullptr) {
#pragma omp simd
    for (int64_t k = t.lo; k < t.hi; ++k) out[k] = d[k] - c * (p[k] + d[k]);
  } else {
    const T* a = leaf.anchor;
#pragma omp simd
    for (int64_t k = t.lo; k < t.hi; ++k) out[k] = d[k] - c * ((p[k] + d[k]) - a[k]);
  }
}

template <typename T>
void SpdStep(ffi::ThreadPool& pool, bool active, T eps, std::vector<SpdLeaf<T>>& leaves) {
  std::vector<SpdTask> tasks;
  int64_t total = 0;
  for (int64_t l = 0; l < static_cast<int64_t>(leaves.size()); ++l) {
    total += leaves[l].size;
    for (int64_t lo = 0; lo < leaves[l].size; lo += kSpdTask) {
      tasks.push_back({l, lo, std::min(leaves[l].size, lo + kSpdTask)});
    }
  }
  const int64_t n = static_cast<int64_t>(tasks.size());
  if (active) {
    std::vector<double> task_sums(3 * n);
    ParallelFor(pool, n, total,
                [&](int64_t k) { SpdSums(leaves[tasks[k].leaf], tasks[k], &task_sums[3 * k]); });
    std::vector<double> sums(3 * leaves.size(), 0.0);
    for (int64_t k = 0; k < n; ++k) {
      for (int i = 0; i < 3; ++i) sums[3 * tasks[k].leaf + i] += task_sums[3 * k + i];
    }
    for (size_t l = 0; l < leaves.size(); ++l) {
      SpdLeaf<T>& leaf = leaves[l];
      const T condition = -static_cast<T>(sums[3 * l]);
      const T new_norm = std::sqrt(static_cast<T>(sums[3 * l + 1]));
      const T old_norm = std::sqrt(static_cast<T>(sums[3 * l + 2]));
      const T denom = new_norm + eps;
      const T ratio = denom > T(0) ? (new_norm - old_norm) / denom : T(0);
      leaf.coefficient = leaf.decay * XlaMin(XlaMax(ratio, T(0)), T(1));
      leaf.fire = condition < T(0);
    }
  }
  ParallelFor(pool, n, total, [&](int64_t k) { SpdDecay(leaves[tasks[k].leaf], tasks[k]); });
}

template <typename T>
ffi::Error SpdTyped(ffi::ThreadPool& pool, const ffi::AnyBuffer& active_buffer,
                    const ffi::AnyBuffer& eps_buffer, const ffi::AnyBuffer& decays,
                    bool with_anchor, ffi::RemainingArgs args, ffi::RemainingRets rets) {
  T active = 0, eps = 0;
  if (ffi::Error error = ReadScalar(active_buffer, &active); error.failure()) return error;
  if (ffi::Error error = ReadScalar(eps_buffer, &eps); error.failure()) return error;
  const size_t per_leaf = with_anchor ? 4 : 3;
  const size_t count = args.size() / per_leaf;
  if (args.size() % per_leaf != 0 || rets.size() != count) {
    return InvalidArgument("SPD takes d, p, g (and the anchor) per leaf and gives the update");
  }
  if (decays.element_type() != kDataType<T> || decays.element_count() != count) {
    return InvalidArgument("SPD's decays must hold one value per leaf");
  }
  const T* decay = static_cast<const T*>(decays.untyped_data());
  std::vector<SpdLeaf<T>> leaves(count);
  for (size_t l = 0; l < count; ++l) {
    SpdLeaf<T>& leaf = leaves[l];
    const T* operands[4] = {nullptr, nullptr, nullptr, nullptr};
    for (size_t a = 0; a < per_leaf; ++a) {
      auto buffer = args.get<ffi::AnyBuffer>(l * per_leaf + a);
      if (buffer.has_error()) return buffer.error();
      if (a == 0) leaf.size = static_cast<int64_t>(buffer->element_count());
      if (buffer->element_type() != kDataType<T> ||
          static_cast<int64_t>(buffer->element_count()) != leaf.size) {
        return InvalidArgument("an operand of SPD has the wrong dtype or size");
      }
      operands[a] = static_cast<const T*>(buffer->untyped_data());
    }
    auto out = rets.get<ffi::AnyBuffer>(l);
    if (out.has_error()) return out.error();
    if ((*out)->element_type() != kDataType<T> ||
        static_cast<int64_t>((*out)->element_count()) != leaf.size) {
      return InvalidArgument("a result of SPD has the wrong dtype or size");
    }
    leaf.d = operands[0];
    leaf.p = operands[1];
    leaf.g = operands[2];
    leaf.anchor = operands[3];
    leaf.out = static_cast<T*>((*out)->untyped_data());
    leaf.decay = decay[l];
  }
  SpdStep(pool, active != T(0), eps, leaves);
  return ffi::Error::Success();
}

ffi::Error SpdImpl(ffi::ThreadPool pool, ffi::AnyBuffer active, ffi::AnyBuffer eps,
                   ffi::AnyBuffer decays, ffi::RemainingArgs args, ffi::RemainingRets rets,
                   int64_t anchor) {
  return ByDtype(eps.element_type(), [&](auto zero) {
    return SpdTyped<decltype(zero)>(pool, active, eps, decays, anchor != 0, args, rets);
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxoptAdvAutomagicSpd, SpdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // 1 while SPD acts, else 0
                                  .Arg<ffi::AnyBuffer>()  // eps of the ratio
                                  .Arg<ffi::AnyBuffer>()  // lambda per leaf
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int64_t>("anchor"));
