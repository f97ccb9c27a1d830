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
struct AdagradScalars : Maximize<T> {
  // step: -lr; lr_scale: 1 / (1 + (t - 1) lr_decay)
  T step, wd, eps, lr_scale;
  std::array<T*, 4> Fields() { return {&step, &wd, &eps, &lr_scale}; }
};

struct Adagrad : ElementwiseFamily<AdagradScalars, kAdagradVariants, 3> {
  // in: p, g, sum; out: p, sum.
  template <typename T, unsigned F>
  static void Run(const AdagradScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
    const auto [p_in, g_in, sum_in] = Inputs<3>(leaf);
    const auto [p_out, sum_out] = Outputs<2>(leaf);
#pragma GCC ivdep
    for (int64_t i = lo; i < hi; ++i) {
      const T p = p_in[i];
      const T g = Gradient<(F & kAdagradDecay) != 0>(s, p, g_in[i]);
      const T sum = Mad(g, g, sum_in[i]);
      sum_out[i] = sum;
      // torch's order: (decay * g) / (sqrt(sum) + eps), no reciprocal
      const T u = (s.lr_scale * g) / (std::sqrt(sum) + s.eps);
      p_out[i] = Mad(s.step, u, p);
    }
  }
};

}  // namespace

JAXOPT_ADV_ELEMENTWISE_HANDLER(JaxoptAdvAdagrad, Adagrad);
