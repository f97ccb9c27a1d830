// RMSprop (jaxopt_adv.torch.rmsprop): the one-pass step for XLA:CPU. Its arithmetic
// mirrors XLA's optimized code for the transform + optax.apply_updates; elementwise.h
// explains how, and holds the FFI plumbing that the family struct at the end plugs into.

#include <array>
#include <cmath>
#include <cstdint>

#include "elementwise.h"

namespace {

enum RmspropFlags : unsigned {
  kRmsDecay = 1,
  kRmsCentered = 2,
  kRmsMomentum = 4,
  kRmsFactored = 8,
  // Of `scale * g + momentum * buf`, LLVM fuses the momentum product -- unless the
  // momentum is traced and XLA splits the leaf's one-dimensional loop into parallel
  // tasks of unequal size, which emits the add's operands in the other order (the
  // Python side models the split: _xla_loop_is_ragged in step.py).
  kRmsFuseMomentumProduct = 16,
  // The learning rate is the constant 1 (StepByProduct; without momentum).
  kRmsUnitStep = 32,
  // Of the centered mean's `(1 - alpha) * g + alpha * mu` LLVM fuses the gradient's
  // product, but the mean's under maximize without a weight-decay block.
  kRmsFuseMeanProduct = 64,
  kRmsVariants = 128,
};

template <typename T>
struct RmspropScalars : Maximize<T> {
  T step, wd, alpha, c, eps, momentum;  // step = -lr, c = 1 - alpha
  std::array<T*, 6> Fields() { return {&step, &wd, &alpha, &c, &eps, &momentum}; }
};

// in: p, g, nu[, mu][, trace]; out: p, nu[, mu][, trace].
template <typename T, unsigned F>
void RmspropRange(const RmspropScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
  constexpr bool kCentered = (F & kRmsCentered) != 0;
  constexpr int kTrace = kCentered ? 4 : 3;
  const auto [p_in, g_in, nu_in, mu_in] = Inputs<4>(leaf);
  const auto [p_out, nu_out, mu_out] = Outputs<3>(leaf);
  const T* t_in = leaf.in[kTrace];
  T* t_out = leaf.out[kTrace - 1];
#pragma GCC ivdep
  for (int64_t i = lo; i < hi; ++i) {
    const T p = p_in[i];
    const T g = Gradient<(F & kRmsDecay) != 0>(s, p, g_in[i]);
    // torch's order, ((1 - alpha) g) g: g^2 alone may overflow
    const T v = Mad(s.alpha, nu_in[i], (s.c * g) * g);
    nu_out[i] = v;
    T root;
    if constexpr (kCentered) {
      T m;
      if constexpr ((F & kRmsFactored) != 0) {
        m = (g + mu_in[i]) * s.alpha;  // XLA's factored form of alpha = 1 - alpha = 1/2
      } else if constexpr ((F & kRmsFuseMeanProduct) != 0) {
        m = Mad(s.alpha, mu_in[i], s.c * g);
      } else {
        m = Mad(g, s.c, mu_in[i] * s.alpha);
      }
      root = std::sqrt(Mad(-m, m, v));
      mu_out[i] = m;
    } else {
      root = std::sqrt(v);
    }
    const T scale = T(1) / (root + s.eps);
    T d;
    if constexpr ((F & kRmsMomentum) != 0) {
      if constexpr ((F & kRmsFuseMomentumProduct) != 0) {
        d = Mad(s.momentum, t_in[i], scale * g);
      } else {
        d = Mad(scale, g, t_in[i] * s.momentum);
      }
      t_out[i] = d;
      p_out[i] = Mad(s.step, d, p);
    } else {
      p_out[i] = StepByProduct<(F & kRmsUnitStep) != 0>(s.step, scale, g, p);
    }
  }
}

struct Rmsprop : ElementwiseFamily<RmspropScalars, kRmsVariants> {
  static int InArity(int64_t variant) {
    return 3 + ((variant & kRmsCentered) != 0 ? 1 : 0) + ((variant & kRmsMomentum) != 0 ? 1 : 0);
  }

  template <typename T, unsigned F>
  static void Run(const RmspropScalars<T>& s, const Leaf<T>& l, int64_t lo, int64_t hi) {
    RmspropRange<T, F>(s, l, lo, hi);
  }
};

}  // namespace

JAXOPT_ADV_ELEMENTWISE_HANDLER(JaxoptAdvRmsprop, Rmsprop);
