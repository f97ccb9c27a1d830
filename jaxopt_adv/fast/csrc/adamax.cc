// Adamax (jaxopt_adv.torch.adamax): the one-pass step for XLA:CPU. Its arithmetic mirrors
// XLA's optimized code for the transform + optax.apply_updates; elementwise.h explains
// how, and holds the FFI plumbing that the family struct at the end plugs into.

#include <array>
#include <cmath>
#include <cstdint>

#include "elementwise.h"

namespace {

enum AdamaxFlags : unsigned {
  kAdamaxDecay = 1,
  kAdamaxFactoredMu = 2,
  // As Adam's kAdamReciprocalBc1: m * s1 / u (s1 = 1 / bc1), else m / (s1 * u) (s1 = bc1).
  kAdamaxReciprocalBc1 = 4,
  // Of `(1 - b1) * g + b1 * mu` LLVM fuses the gradient's product, except under
  // maximize, where it fuses the moment's -- unless the hyperparameters are traced
  // and XLA splits the leaf's loop into unequal parallel tasks (the Python side
  // models the split: _xla_loop_is_ragged in step.py); 1-element leaves differ too.
  kAdamaxFuseGradProduct = 8,
  kAdamaxVariants = 16,
};

template <typename T>
struct AdamaxScalars : Maximize<T> {
  // step: -lr; s1: 1 / (1 - b1^t) or 1 - b1^t
  T step, wd, b1, c1, b2, eps, s1;
  std::array<T*, 7> Fields() { return {&step, &wd, &b1, &c1, &b2, &eps, &s1}; }
};

struct Adamax : ElementwiseFamily<AdamaxScalars, kAdamaxVariants, 4> {
  // in: p, g, mu, nu; out: p, mu, nu.
  template <typename T, unsigned F>
  static void Run(const AdamaxScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
    const auto [p_in, g_in, mu_in, nu_in] = Inputs<4>(leaf);
    const auto [p_out, mu_out, nu_out] = Outputs<3>(leaf);
#pragma GCC ivdep
    for (int64_t i = lo; i < hi; ++i) {
      const T p = p_in[i];
      const T g = Gradient<(F & kAdamaxDecay) != 0>(s, p, g_in[i]);
      T m;
      if constexpr ((F & kAdamaxFactoredMu) != 0) {
        m = (mu_in[i] + g) * s.b1;
      } else if constexpr ((F & kAdamaxFuseGradProduct) != 0) {
        m = Mad(s.c1, g, s.b1 * mu_in[i]);
      } else {
        m = Mad(s.b1, mu_in[i], s.c1 * g);
      }
      // optax's infinity moment: max(|g| + eps, b2 * nu), XLA's maximum
      const T u = XlaMax(std::fabs(g) + s.eps, s.b2 * nu_in[i]);
      T d;
      if constexpr ((F & kAdamaxReciprocalBc1) != 0) {
        d = (m * s.s1) / u;
      } else {
        d = m / (s.s1 * u);
      }
      p_out[i] = Mad(s.step, d, p);
      mu_out[i] = m;
      nu_out[i] = u;
    }
  }
};

}  // namespace

JAXOPT_ADV_ELEMENTWISE_HANDLER(JaxoptAdvAdamax, Adamax);
