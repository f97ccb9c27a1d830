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
struct NadamScalars {
  T step, wd, b1, c1, b2, c2, eps, s2, gc, mc;
  typename SignMask<T>::Type flip;
};

// in: p, g, mu, nu; out: p, mu, nu.
template <typename T, unsigned F>
void NadamRange(const NadamScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
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
    if constexpr ((F & kNadamCoupledDecay) != 0) g = Mad(s.wd, p, g);
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

// The scalar operands, in order:
//   step: -lr
//   wd: weight decay
//   b1
//   c1: 1 - b1
//   b2
//   c2: 1 - b2
//   eps
//   s2: 1 / (1 - b2^t) or 1 - b2^t
//   gc: gradient coefficient
//   mc: momentum coefficient
struct Nadam {
  static constexpr size_t kScalars = 10;
  static constexpr unsigned kVariants = kNadamVariants;
  template <typename T>
  using Scalars = NadamScalars<T>;

  template <typename T>
  static std::array<T*, kScalars> Fields(Scalars<T>& s) {
    return {&s.step, &s.wd, &s.b1, &s.c1, &s.b2, &s.c2, &s.eps, &s.s2, &s.gc, &s.mc};
  }

  static int InArity(int64_t variant) { return 4; }

  // Combinations the Python side never asks for compile to an empty body.
  template <typename T, unsigned F>
  static void Run(const Scalars<T>& s, const Leaf<T>& l, int64_t lo, int64_t hi) {
    constexpr unsigned kBothDecays = kNadamCoupledDecay | kNadamDecoupledDecay;
    if constexpr ((F & kBothDecays) != kBothDecays) NadamRange<T, F>(s, l, lo, hi);
  }
};

}  // namespace

JAXOPT_ADV_ELEMENTWISE_HANDLER(JaxoptAdvNadam, Nadam);
