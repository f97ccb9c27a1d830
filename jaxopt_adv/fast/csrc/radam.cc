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
struct RadamScalars {
  // rect: the rectification factor, 0 where the variance is intractable (then the step
  // is the bias-corrected momentum); scale = rect * sqrt(1 - b2^t)
  T step, wd, b1, c1, b2, c2, eps, s1, rect, scale;
  typename SignMask<T>::Type flip;
};

// in: p, g, mu, nu; out: p, mu, nu. kRectified: the step of rho_t > 5 (XLA computes
// both sides of that select and keeps one; a loop per side gives the same values and
// vectorizes, where GCC keeps a select whose one side divides as a branch).
template <typename T, unsigned F, bool kRectified>
void RadamLoop(const RadamScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
  const T* p_in = leaf.in[0];
  const T* g_in = leaf.in[1];
  const T* mu_in = leaf.in[2];
  const T* nu_in = leaf.in[3];
  T* p_out = leaf.out[0];
  T* mu_out = leaf.out[1];
  T* nu_out = leaf.out[2];
#pragma GCC ivdep
  for (int64_t i = lo; i < hi; ++i) {
    const T p = p_in[i];
    T g = g_in[i];
    g = FlipSign(g, s.flip);
    if constexpr ((F & kRadamCoupledDecay) != 0) g = Mad(s.wd, p, g);
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

template <typename T, unsigned F>
void RadamRange(const RadamScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
  if (s.rect > 0) {
    RadamLoop<T, F, true>(s, leaf, lo, hi);
  } else {
    RadamLoop<T, F, false>(s, leaf, lo, hi);
  }
}

// The scalar operands, in order:
//   step: -lr
//   wd: weight decay
//   b1
//   c1: 1 - b1
//   b2
//   c2: 1 - b2
//   eps
//   s1: 1 / (1 - b1^t) or 1 - b1^t
//   rect: rectification factor (0: none)
//   scale: rect * sqrt(1 - b2^t)
struct Radam {
  static constexpr size_t kScalars = 10;
  static constexpr unsigned kVariants = kRadamVariants;
  template <typename T>
  using Scalars = RadamScalars<T>;

  template <typename T>
  static std::array<T*, kScalars> Fields(Scalars<T>& s) {
    return {&s.step, &s.wd, &s.b1, &s.c1, &s.b2, &s.c2, &s.eps, &s.s1, &s.rect, &s.scale};
  }

  static int InArity(int64_t variant) { return 4; }

  // Combinations the Python side never asks for compile to an empty body.
  template <typename T, unsigned F>
  static void Run(const Scalars<T>& s, const Leaf<T>& l, int64_t lo, int64_t hi) {
    constexpr unsigned kBothDecays = kRadamCoupledDecay | kRadamDecoupledDecay;
    if constexpr ((F & kBothDecays) != kBothDecays) RadamRange<T, F>(s, l, lo, hi);
  }
};

}  // namespace

JAXOPT_ADV_ELEMENTWISE_HANDLER(JaxoptAdvRadam, Radam);
