// Adadelta (jaxopt_adv.torch.adadelta): the one-pass step for XLA:CPU. Its arithmetic
// mirrors XLA's optimized code for the transform + optax.apply_updates; elementwise.h
// explains how, and holds the FFI plumbing that the family struct at the end plugs into.

#include <array>
#include <cmath>
#include <cstdint>

#include "elementwise.h"

namespace {

enum AdadeltaFlags : unsigned {
  kAdadeltaDecay = 1,
  // As Adam's kAdamSquareFirst: (g * g) * (1 - rho) (1-element leaves under maximize).
  kAdadeltaSquareFirst = 2,
  // The learning rate is the constant 1 (StepByProduct), torch's default.
  kAdadeltaUnitStep = 4,
  kAdadeltaVariants = 8,
};

template <typename T>
struct AdadeltaScalars {
  T step, wd, rho, c, eps;  // c = 1 - rho
  typename SignMask<T>::Type flip;
};

// in: p, g, e_g, e_x; out: p, e_g, e_x. The root of the quotient, as
// jaxopt_adv.torch.scale_by_adadelta takes it (no approximate rsqrt).
template <typename T, unsigned F>
void AdadeltaRange(const AdadeltaScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
  const T* p_in = leaf.in[0];
  const T* g_in = leaf.in[1];
  const T* eg_in = leaf.in[2];
  const T* ex_in = leaf.in[3];
  T* p_out = leaf.out[0];
  T* eg_out = leaf.out[1];
  T* ex_out = leaf.out[2];
#pragma GCC ivdep
  for (int64_t i = lo; i < hi; ++i) {
    const T p = p_in[i];
    T g = g_in[i];
    g = FlipSign(g, s.flip);
    if constexpr ((F & kAdadeltaDecay) != 0) g = Mad(s.wd, p, g);
    T g2;
    if constexpr ((F & kAdadeltaSquareFirst) != 0) {
      g2 = (g * g) * s.c;
    } else {
      g2 = (s.c * g) * g;
    }
    const T eg = Mad(s.rho, eg_in[i], g2);
    const T ex_old = ex_in[i];
    const T root = std::sqrt((ex_old + s.eps) / (eg + s.eps));
    const T delta = root * g;
    eg_out[i] = eg;
    ex_out[i] = Mad(s.rho, ex_old, (s.c * delta) * delta);
    p_out[i] = StepByProduct<(F & kAdadeltaUnitStep) != 0>(s.step, root, g, p);
  }
}

// The scalar operands, in order:
//   step: -lr
//   wd: weight decay
//   rho
//   c: 1 - rho
//   eps
struct Adadelta {
  static constexpr size_t kScalars = 5;
  static constexpr unsigned kVariants = kAdadeltaVariants;
  template <typename T>
  using Scalars = AdadeltaScalars<T>;

  template <typename T>
  static std::array<T*, kScalars> Fields(Scalars<T>& s) {
    return {&s.step, &s.wd, &s.rho, &s.c, &s.eps};
  }

  static int InArity(int64_t variant) { return 4; }

  template <typename T, unsigned F>
  static void Run(const Scalars<T>& s, const Leaf<T>& l, int64_t lo, int64_t hi) {
    AdadeltaRange<T, F>(s, l, lo, hi);
  }
};

}  // namespace

JAXOPT_ADV_ELEMENTWISE_HANDLER(JaxoptAdvAdadelta, Adadelta);
