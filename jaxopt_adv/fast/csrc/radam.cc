// RAdam and RAdamW (jaxopt_adv.torch.radam): the one-pass step for XLA:CPU. Its arithmetic
// mirrors XLA's optimized code for the transform + optax.apply_updates; elementwise.h
// explains how, and holds the FFI plumbing that the family struct at the end plugs into.

#include <array>
#include <cmath>
#include <cstdint>

#include "elementwise.h"

namespace {

enum RadamFlags : unsigned {
  kRadamCoupledDecay = 1,
  kRadamDecoupledDecay = 2,
  kRadamFactoredMu = 4,
  // As Adam's kAdamReciprocalBc1: m * s1 (s1 = 1 / bc1), else m / s1 (s1 = bc1).
  kRadamReciprocalBc1 = 8,
  // As Adam's kAdamSquareFirst.
  kRadamSquareFirst = 16,
  // The learning rate is the constant 1 (StepByProduct; without decoupled decay, whose
  // addition comes last).
  kRadamUnitStep = 32,
  kRadamVariants = 64,
};

template <typename T>
struct RadamScalars : Maximize<T> {
  // step: -lr; s1: 1 / (1 - b1^t) or 1 - b1^t; rect: the rectification factor, 0 where
  // the variance is intractable (then the step is the bias-corrected momentum);
  // scale = rect * sqrt(1 - b2^t)
  T step, wd, b1, c1, b2, c2, eps, s1, rect, scale;
  std::array<T*, 10> Fields() {
    return {&step, &wd, &b1, &c1, &b2, &c2, &eps, &s1, &rect, &scale};
  }
};

// in: p, g, mu, nu; out: p, mu, nu. kRectified: the step of rho_t > 5 (XLA computes
// both sides of that select and keeps one; a loop per side gives the same values and
// vectorizes, where GCC keeps a select whose one side divides as a branch).
template <typename T, unsigned F, bool kRectified>
void RadamLoop(const RadamScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
  const auto [p_in, g_in, mu_in, nu_in] = Inputs<4>(leaf);
  const auto [p_out, mu_out, nu_out] = Outputs<3>(leaf);
#pragma GCC ivdep
  for (int64_t i = lo; i < hi; ++i) {
    const T p = p_in[i];
    const T g = Gradient<(F & kRadamCoupledDecay) != 0>(s, p, g_in[i]);
    T m, v;
    AdamMoments<(F & kRadamFactoredMu) != 0, (F & kRadamSquareFirst) != 0>(
        s.b1, s.c1, s.b2, s.c2, mu_in[i], nu_in[i], g, &m, &v);
    constexpr bool kUnitStep = (F & kRadamUnitStep) != 0;
    if constexpr ((F & kRadamDecoupledDecay) != 0) {
      T u = (F & kRadamReciprocalBc1) != 0 ? m * s.s1 : m / s.s1;
      if constexpr (kRectified) u = u * (s.scale / (std::sqrt(v) + s.eps));
      p_out[i] = Mad(s.step, Mad(s.wd, p, u), p);
    } else if constexpr (kRectified) {
      const T u = (F & kRadamReciprocalBc1) != 0 ? m * s.s1 : m / s.s1;
      p_out[i] = StepByProduct<kUnitStep>(s.step, u, s.scale / (std::sqrt(v) + s.eps), p);
    } else if constexpr ((F & kRadamReciprocalBc1) != 0) {
      p_out[i] = StepByProduct<kUnitStep>(s.step, m, s.s1, p);
    } else {
      p_out[i] = Mad(s.step, m / s.s1, p);
    }
    mu_out[i] = m;
    nu_out[i] = v;
  }
}

struct Radam : ElementwiseFamily<RadamScalars, kRadamVariants, 4> {
  // Combinations the Python side never asks for compile to an empty body.
  template <typename T, unsigned F>
  static void Run(const RadamScalars<T>& s, const Leaf<T>& l, int64_t lo, int64_t hi) {
    constexpr unsigned kBothDecays = kRadamCoupledDecay | kRadamDecoupledDecay;
    if constexpr ((F & kBothDecays) != kBothDecays) {
      if (s.rect > 0) {
        RadamLoop<T, F, true>(s, l, lo, hi);
      } else {
        RadamLoop<T, F, false>(s, l, lo, hi);
      }
    }
  }
};

}  // namespace

JAXOPT_ADV_ELEMENTWISE_HANDLER(JaxoptAdvRadam, Radam);
