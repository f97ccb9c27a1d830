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
struct RpropScalars {
  T eta_minus, eta_plus, step_min, step_max;
  typename SignMask<T>::Type flip;
};

// in: p, g, prev, step_size; out: p, prev, step_size.
template <typename T, unsigned F>
void RpropRange(const RpropScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
  const T* p_in = leaf.in[0];
  const T* g_in = leaf.in[1];
  const T* prev_in = leaf.in[2];
  const T* size_in = leaf.in[3];
  T* p_out = leaf.out[0];
  T* prev_out = leaf.out[1];
  T* size_out = leaf.out[2];
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

// The scalar operands, in order:
//   eta_minus
//   eta_plus
//   step_min: minimal step size
//   step_max: maximal step size
struct Rprop {
  static constexpr size_t kScalars = 4;
  static constexpr unsigned kVariants = kRpropVariants;
  template <typename T>
  using Scalars = RpropScalars<T>;

  template <typename T>
  static std::array<T*, kScalars> Fields(Scalars<T>& s) {
    return {&s.eta_minus, &s.eta_plus, &s.step_min, &s.step_max};
  }

  static int InArity(int64_t variant) { return 4; }

  template <typename T, unsigned F>
  static void Run(const Scalars<T>& s, const Leaf<T>& l, int64_t lo, int64_t hi) {
    RpropRange<T, F>(s, l, lo, hi);
  }
};

}  // namespace

JAXOPT_ADV_ELEMENTWISE_HANDLER(JaxoptAdvRprop, Rprop);
