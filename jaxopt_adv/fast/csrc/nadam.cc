// NAdam and NAdamW (jaxopt_adv.torch.nadam): the one-pass step for XLA:CPU. Its arithmetic
// mirrors XLA's optimized code for the transform + optax.apply_updates; elementwise.h
// explains how, and holds the FFI plumbing that the family struct at the end plugs into.

#include <array>
#include <cmath>
#include <cstdint>

#include "elementwise.h"

namespace {

enum NadamFlags : unsigned {
  kNadamCoupledDecay = 1,
  kNadamDecoupledDecay = 2,
  kNadamFactoredMu = 4,
  // As Adam's reciprocal forms: sqrt(v * s2) (s2 = 1 / bc2) while XLA's scalar has one
  // use, else sqrt(v / s2) (s2 = bc2).
  kNadamReciprocalBc2 = 8,
  // Of `grad_coef * g + mom_coef * m` LLVM fuses the gradient's product (else the
  // moment's).
  kNadamFuseGradProduct = 16,
  // As Adam's kAdamSquareFirst: (g * g) * (1 - b2).
  kNadamSquareFirst = 32,
  kNadamVariants = 64,
};

template <typename T>
struct NadamScalars : Maximize<T> {
  // step: -lr; s2: 1 / (1 - b2^t) or 1 - b2^t; gc, mc: the gradient's and the
  // moment's coefficients
  T step, wd, b1, c1, b2, c2, eps, s2, gc, mc;
  std::array<T*, 10> Fields() { return {&step, &wd, &b1, &c1, &b2, &c2, &eps, &s2, &gc, &mc}; }
};

// in: p, g, mu, nu; out: p, mu, nu.
template <typename T, unsigned F>
void NadamRange(const NadamScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
  const auto [p_in, g_in, mu_in, nu_in] = Inputs<4>(leaf);
  const auto [p_out, mu_out, nu_out] = Outputs<3>(leaf);
#pragma GCC ivdep
  for (int64_t i = lo; i < hi; ++i) {
    const T p = p_in[i];
    const T g = Gradient<(F & kNadamCoupledDecay) != 0>(s, p, g_in[i]);
    T m, v;
    AdamMoments<(F & kNadamFactoredMu) != 0, (F & kNadamSquareFirst) != 0>(
        s.b1, s.c1, s.b2, s.c2, mu_in[i], nu_in[i], g, &m, &v);
    T denom;
    if constexpr ((F & kNadamReciprocalBc2) != 0) {
      denom = std::sqrt(v * s.s2) + s.eps;
    } else {
      denom = std::sqrt(v / s.s2) + s.eps;
    }
    T num;
    if constexpr ((F & kNadamFuseGradProduct) != 0) {
      num = Mad(s.gc, g, s.mc * m);
    } else {
      num = Mad(s.mc, m, s.gc * g);
    }
    T u = num / denom;
    if constexpr ((F & kNadamDecoupledDecay) != 0) u = Mad(s.wd, p, u);
    p_out[i] = Mad(s.step, u, p);
    mu_out[i] = m;
    nu_out[i] = v;
  }
}

struct Nadam : ElementwiseFamily<NadamScalars, kNadamVariants, 4> {
  // Combinations the Python side never asks for compile to an empty body.
  template <typename T, unsigned F>
  static void Run(const NadamScalars<T>& s, const Leaf<T>& l, int64_t lo, int64_t hi) {
    constexpr unsigned kBothDecays = kNadamCoupledDecay | kNadamDecoupledDecay;
    if constexpr ((F & kBothDecays) != kBothDecays) NadamRange<T, F>(s, l, lo, hi);
  }
};

}  // namespace

JAXOPT_ADV_ELEMENTWISE_HANDLER(JaxoptAdvNadam, Nadam);
