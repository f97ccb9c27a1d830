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
struct AdadeltaScalars : Maximize<T> {
  T step, wd, rho, c, eps;  // step = -lr, c = 1 - rho
  std::array<T*, 5> Fields() { return {&step, &wd, &rho, &c, &eps}; }
};

struct Adadelta : ElementwiseFamily<AdadeltaScalars, kAdadeltaVariants, 4> {
  // in: p, g, e_g, e_x; out: p, e_g, e_x. The root of the quotient, as
  // jaxopt_adv.torch.scale_by_adadelta takes it (no approximate rsqrt).
  template <typename T, unsigned F>
  static void Run(const AdadeltaScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
    const auto [p_in, g_in, eg_in, ex_in] = Inputs<4>(leaf);
    const auto [p_out, eg_out, ex_out] = Outputs<3>(leaf);
#pragma GCC ivdep
    for (int64_t i = lo; i < hi; ++i) {
      const T p = p_in[i];
      const T g = Gradient<(F & kAdadeltaDecay) != 0>(s, p, g_in[i]);
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
};

}  // namespace

JAXOPT_ADV_ELEMENTWISE_HANDLER(JaxoptAdvAdadelta, Adadelta);
