// Adam and AdamW (jaxopt_adv.torch.adam / adamw): the one-pass step for XLA:CPU. Its
// arithmetic mirrors XLA's optimized code for the transform + optax.apply_updates;
// elementwise.h explains how, and holds the FFI plumbing that the family struct at the end
// plugs into.

#include <array>
#include <cmath>
#include <cstdint>

#include "elementwise.h"

namespace {

enum AdamFlags : unsigned {
  kAdamCoupledDecay = 1,
  kAdamDecoupledDecay = 2,
  kAdamAmsgrad = 4,
  kAdamFactoredMu = 8,
  // XLA rewrites `x / broadcast(s)` into `x * broadcast(1 / s)` only while the scalar s
  // has one use (one leaf of the tree uses it, or it was converted for this leaf's
  // dtype); otherwise `(m / bc1) / denom` becomes `m / (bc1 * denom)` and
  // `sqrt(v) / sqrt(bc2)` stays a division. The Python side picks the form per leaf:
  //   kAdamReciprocalBc1: m * s1 / denom    (s1 = 1 / bc1), else m / (s1 * denom) (s1 = bc1)
  //   kAdamReciprocalBc2: sqrt(v) * s2 + eps (s2 = 1 / sqrt(bc2)), else sqrt(v) / s2 + eps
  kAdamReciprocalBc1 = 16,
  kAdamReciprocalBc2 = 32,
  // 0-d and 1-element leaves under maximize: XLA folds the two negations of
  // `(1 - b2) * (-g) * (-g)` into `(g * g) * (1 - b2)`.
  kAdamSquareFirst = 64,
  kAdamVariants = 128,
};

template <typename T>
struct AdamScalars : Maximize<T> {
  // step: -lr; s1: 1 / (1 - b1^t) or 1 - b1^t; s2: 1 / sqrt(1 - b2^t) or sqrt(1 - b2^t)
  T step, wd, b1, c1, b2, c2, eps, s1, s2;
  std::array<T*, 9> Fields() { return {&step, &wd, &b1, &c1, &b2, &c2, &eps, &s1, &s2}; }
};

// in: p, g, mu, nu[, nu_max]; out: p, mu, nu[, nu_max].
template <typename T, unsigned F>
void AdamRange(const AdamScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
  const auto [p_in, g_in, mu_in, nu_in, vmax_in] = Inputs<5>(leaf);
  const auto [p_out, mu_out, nu_out, vmax_out] = Outputs<4>(leaf);
#pragma GCC ivdep
  for (int64_t i = lo; i < hi; ++i) {
    const T p = p_in[i];
    const T g = Gradient<(F & kAdamCoupledDecay) != 0>(s, p, g_in[i]);
    T m, v;
    AdamMoments<(F & kAdamFactoredMu) != 0, (F & kAdamSquareFirst) != 0>(
        s.b1, s.c1, s.b2, s.c2, mu_in[i], nu_in[i], g, &m, &v);
    T v_hat = v;
    if constexpr ((F & kAdamAmsgrad) != 0) {
      v_hat = XlaMax(vmax_in[i], v);
      vmax_out[i] = v_hat;
    }
    T denom;
    if constexpr ((F & kAdamReciprocalBc2) != 0) {
      denom = Mad(std::sqrt(v_hat), s.s2, s.eps);
    } else {
      denom = std::sqrt(v_hat) / s.s2 + s.eps;
    }
    T u;
    if constexpr ((F & kAdamReciprocalBc1) != 0) {
      u = (m * s.s1) / denom;
    } else {
      u = m / (s.s1 * denom);
    }
    if constexpr ((F & kAdamDecoupledDecay) != 0) u = Mad(s.wd, p, u);
    p_out[i] = Mad(s.step, u, p);
    mu_out[i] = m;
    nu_out[i] = v;
  }
}

struct Adam : ElementwiseFamily<AdamScalars, kAdamVariants> {
  static int InArity(int64_t variant) { return (variant & kAdamAmsgrad) != 0 ? 5 : 4; }

  // Combinations the Python side never asks for compile to an empty body.
  template <typename T, unsigned F>
  static void Run(const AdamScalars<T>& s, const Leaf<T>& l, int64_t lo, int64_t hi) {
    constexpr unsigned kBothDecays = kAdamCoupledDecay | kAdamDecoupledDecay;
    if constexpr ((F & kBothDecays) != kBothDecays) AdamRange<T, F>(s, l, lo, hi);
  }
};

}  // namespace

JAXOPT_ADV_ELEMENTWISE_HANDLER(JaxoptAdvAdam, Adam);
