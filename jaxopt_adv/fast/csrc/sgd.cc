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
struct SgdScalars {
  T step, wd, momentum, coef;
  typename SignMask<T>::Type flip;
};

// in: p, g[, buf]; out: p[, buf].
template <typename T, unsigned F>
void SgdRange(const SgdScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
  const T* p_in = leaf.in[0];
  const T* g_in = leaf.in[1];
  const T* b_in = leaf.in[2];
  T* p_out = leaf.out[0];
  T* b_out = leaf.out[1];
#pragma GCC ivdep
  for (int64_t i = lo; i < hi; ++i) {
    const T p = p_in[i];
    T g = g_in[i];
    g = FlipSign(g, s.flip);
    if constexpr ((F & kSgdDecay) != 0) g = Mad(s.wd, p, g);
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

// The scalar operands, in order:
//   step: -lr
//   wd: weight decay
//   momentum
//   coef: gradient coefficient
struct Sgd {
  static constexpr size_t kScalars = 4;
  static constexpr unsigned kVariants = kSgdVariants;
  template <typename T>
  using Scalars = SgdScalars<T>;

  template <typename T>
  static std::array<T*, kScalars> Fields(Scalars<T>& s) {
    return {&s.step, &s.wd, &s.momentum, &s.coef};
  }

  static int InArity(int64_t variant) { return (variant & kSgdMomentum) != 0 ? 3 : 2; }

  // Combinations the Python side never asks for compile to an empty body.
  template <typename T, unsigned F>
  static void Run(const Scalars<T>& s, const Leaf<T>& l, int64_t lo, int64_t hi) {
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
