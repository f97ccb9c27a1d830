// SGD (jaxopt_adv.torch.sgd): the one-pass step for XLA:CPU. Its arithmetic mirrors XLA's
// optimized code for the transform + optax.apply_updates; elementwise.h explains how, and
// holds the FFI plumbing that the family struct at the end plugs into.

#include <array>
#include <cmath>
#include <cstdint>

#include "elementwise.h"

namespace {

enum SgdFlags : unsigned {
  kSgdDecay = 1,
  kSgdMomentum = 2,
  kSgdNesterov = 4,
  // From Python: the momentum may be 0 at run time (it is traced); the variant below is
  // picked when it is.
  kSgdMaybeZeroMomentum = 8,
  // Compiled variant: momentum 0, so the direction is the gradient (torch keeps no
  // buffer then; optax's select keeps the buffer's update).
  kSgdGradientDirection = 8,
  kSgdVariants = 16,
};

template <typename T>
struct SgdScalars : Maximize<T> {
  // step: -lr; coef: the gradient's coefficient in the buffer
  T step, wd, momentum, coef;
  std::array<T*, 4> Fields() { return {&step, &wd, &momentum, &coef}; }
};

// in: p, g[, buf]; out: p[, buf].
template <typename T, unsigned F>
void SgdRange(const SgdScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
  const auto [p_in, g_in, b_in] = Inputs<3>(leaf);
  const auto [p_out, b_out] = Outputs<2>(leaf);
#pragma GCC ivdep
  for (int64_t i = lo; i < hi; ++i) {
    const T p = p_in[i];
    const T g = Gradient<(F & kSgdDecay) != 0>(s, p, g_in[i]);
    T d = g;
    if constexpr ((F & kSgdMomentum) != 0) {
      const T b = Mad(s.momentum, b_in[i], s.coef * g);
      b_out[i] = b;
      if constexpr ((F & kSgdGradientDirection) != 0) {
        d = g;
      } else if constexpr ((F & kSgdNesterov) != 0) {
        d = Mad(s.momentum, b, g);
      } else {
        d = b;
      }
    }
    p_out[i] = Mad(s.step, d, p);
  }
}

struct Sgd : ElementwiseFamily<SgdScalars, kSgdVariants> {
  static int InArity(int64_t variant) { return (variant & kSgdMomentum) != 0 ? 3 : 2; }

  // Combinations the Python side never asks for compile to an empty body.
  template <typename T, unsigned F>
  static void Run(const SgdScalars<T>& s, const Leaf<T>& l, int64_t lo, int64_t hi) {
    if constexpr ((F & kSgdMaybeZeroMomentum) != 0) {
      if (s.momentum != T(0)) {  // a nonzero momentum at run time: the buffer's direction
        Run<T, F & ~unsigned{kSgdMaybeZeroMomentum}>(s, l, lo, hi);
        return;
      }
    }
    constexpr bool kValid = (F & kSgdMomentum) != 0 || (F & ~kSgdDecay) == 0u;
    if constexpr (kValid) SgdRange<T, F>(s, l, lo, hi);
  }
};

}  // namespace

JAXOPT_ADV_ELEMENTWISE_HANDLER(JaxoptAdvSgd, Sgd);
