// ASGD (jaxopt_adv.torch.asgd): the one-pass step for XLA:CPU. Its arithmetic mirrors
// XLA's optimized code for the transform + optax.apply_updates; elementwise.h explains
// how, and holds the FFI plumbing that the family struct at the end plugs into.

#include <array>
#include <cmath>
#include <cstdint>

#include "elementwise.h"

namespace {

enum AsgdFlags : unsigned {
  kAsgdDecay = 1,
  // Of `p * decay - eta * g`, LLVM fuses the gradient product (else the parameter's).
  // XLA computes the new parameters twice, for the parameters and for the average; the
  // two agree wherever the Python side sends ASGD here (see _asgd_plan in step.py).
  kAsgdFuseGradProduct = 2,
  kAsgdVariants = 4,
};

template <typename T>
struct AsgdScalars : Maximize<T> {
  // decay = 1 - lambd * eta; whole != 0 (where mu == 1): the average restarts at the
  // new parameters, as XLA's select takes them
  T wd, decay, eta, mu, whole;
  std::array<T*, 5> Fields() { return {&wd, &decay, &eta, &mu, &whole}; }
};

// in: p, g, ax; out: p, ax.
template <typename T, unsigned F, bool kWhole>
void AsgdLoop(const AsgdScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
  const auto [p_in, g_in, ax_in] = Inputs<3>(leaf);
  const auto [p_out, ax_out] = Outputs<2>(leaf);
#pragma GCC ivdep
  for (int64_t i = lo; i < hi; ++i) {
    const T p = p_in[i];
    const T g = Gradient<(F & kAsgdDecay) != 0>(s, p, g_in[i]);
    T new_p;
    if constexpr ((F & kAsgdFuseGradProduct) != 0) {
      new_p = Mad(-s.eta, g, p * s.decay);
    } else {
      new_p = Mad(p, s.decay, -(s.eta * g));
    }
    // the transform returns new_p - p, which optax.apply_updates adds back
    p_out[i] = p + (new_p - p);
    if constexpr (kWhole) {
      ax_out[i] = new_p;
    } else {
      const T ax = ax_in[i];
      ax_out[i] = Mad(new_p - ax, s.mu, ax);
    }
  }
}

struct Asgd : ElementwiseFamily<AsgdScalars, kAsgdVariants, 3> {
  template <typename T, unsigned F>
  static void Run(const AsgdScalars<T>& s, const Leaf<T>& l, int64_t lo, int64_t hi) {
    if (s.whole != T(0)) {
      AsgdLoop<T, F, true>(s, l, lo, hi);
    } else {
      AsgdLoop<T, F, false>(s, l, lo, hi);
    }
  }
};

}  // namespace

JAXOPT_ADV_ELEMENTWISE_HANDLER(JaxoptAdvAsgd, Asgd);
