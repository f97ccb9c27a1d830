// Rprop (jaxopt_adv.torch.rprop): the one-pass step for XLA:CPU. Its arithmetic mirrors
// XLA's optimized code for the transform + optax.apply_updates; elementwise.h explains
// how, and holds the FFI plumbing that the family struct at the end plugs into.

#include <array>
#include <cmath>
#include <cstdint>

#include "elementwise.h"

namespace {

// Rprop has no variants: every product is either a single rounding (step * eta) or exact
// (sign(g) * step, with sign(g) in {-1, -0, +0, 1}), so no FMA contraction can change it.
constexpr unsigned kRpropVariants = 1;

template <typename T>
struct RpropScalars : Maximize<T> {
  // step_min, step_max: the bounds of the step sizes
  T eta_minus, eta_plus, step_min, step_max;
  std::array<T*, 4> Fields() { return {&eta_minus, &eta_plus, &step_min, &step_max}; }
};

struct Rprop : ElementwiseFamily<RpropScalars, kRpropVariants, 4> {
  // in: p, g, prev, step_size; out: p, prev, step_size.
  template <typename T, unsigned F>
  static void Run(const RpropScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
    const auto [p_in, g_in, prev_in, size_in] = Inputs<4>(leaf);
    const auto [p_out, prev_out, size_out] = Outputs<3>(leaf);
#pragma GCC ivdep
    for (int64_t i = lo; i < hi; ++i) {
      // Every comparison is made unconditionally and each select has one condition: GCC
      // does not if-convert (vectorize) a nested ternary, whose inner comparison may trap.
      T g = FlipSign(g_in[i], s.flip);
      // sign(g * prev) > 0 (< 0) exactly when the product is; NaN is neither
      const T agree = g * prev_in[i];
      const bool grew = agree > 0;
      const bool flipped = agree < 0;
      T factor = grew ? s.eta_plus : T(1);
      factor = flipped ? s.eta_minus : factor;
      // XLA's clamp(lo, x, hi) = min(max(lo, x), hi)
      const T size = XlaMin(XlaMax(s.step_min, size_in[i] * factor), s.step_max);
      g = flipped ? T(0) : g;
      // XLA's sign: +-1, and the operand itself for +-0 and NaN
      const bool positive = g > 0;
      const bool negative = g < 0;
      T sign = positive ? T(1) : g;
      sign = negative ? T(-1) : sign;
      p_out[i] = p_in[i] - sign * size;
      prev_out[i] = g;
      size_out[i] = size;
    }
  }
};

}  // namespace

JAXOPT_ADV_ELEMENTWISE_HANDLER(JaxoptAdvRprop, Rprop);
