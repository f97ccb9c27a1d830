// Adagrad (jaxopt_adv.torch.adagrad): the one-pass step for XLA:CPU. Its arithmetic
// mirrors XLA's optimized code for the transform + optax.apply_updates; elementwise.h
// explains how, and holds the FFI plumbing that the family struct at the end plugs into.

#include <array>
#include <cmath>
#include <cstdint>

#include "elementwise.h"

namespace {

enum AdagradFlags : unsigned {
  kAdagradDecay = 1,
  kAdagradVariants = 2,
};

template <typename T>
struct AdagradScalars {
  T step, wd, eps, lr_scale;
  typename SignMask<T>::Type flip;
};

// in: p, g, sum; out: p, sum.
template <typename T, unsigned F>
void AdagradRange(const AdagradScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
  const T* p_in = leaf.in[0];
  const T* g_in = leaf.in[1];
  const T* sum_in = leaf.in[2];
  T* p_out = leaf.out[0];
  T* sum_out = leaf.out[1];
#pragma GCC ivdep
  for (int64_t i = lo; i < hi; ++i) {
    const T p = p_in[i];
    T g = g_in[i];
    g = FlipSign(g, s.flip);
    if constexpr ((F & kAdagradDecay) != 0) g = Mad(s.wd, p, g);
    const T sum = Mad(g, g, sum_in[i]);
    sum_out[i] = sum;
    // torch's order: (decay * g) / (sqrt(sum) + eps), no reciprocal
    const T u = (s.lr_scale * g) / (std::sqrt(sum) + s.eps);
    p_out[i] = Mad(s.step, u, p);
  }
}

// The scalar operands, in order:
//   step: -lr
//   wd: weight decay
//   eps
//   lr_scale: 1 / (1 + (t - 1) lr_decay)
struct Adagrad {
  static constexpr size_t kScalars = 4;
  static constexpr unsigned kVariants = kAdagradVariants;
  template <typename T>
  using Scalars = AdagradScalars<T>;

  template <typename T>
  static std::array<T*, kScalars> Fields(Scalars<T>& s) {
    return {&s.step, &s.wd, &s.eps, &s.lr_scale};
  }

  static int InArity(int64_t variant) { return 3; }

  template <typename T, unsigned F>
  static void Run(const Scalars<T>& s, const Leaf<T>& l, int64_t lo, int64_t hi) {
    AdagradRange<T, F>(s, l, lo, hi);
  }
};

}  // namespace

JAXOPT_ADV_ELEMENTWISE_HANDLER(JaxoptAdvAdagrad, Adagrad);
