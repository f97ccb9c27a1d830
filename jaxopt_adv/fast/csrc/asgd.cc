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
struct AsgdScalars {
  // decay = 1 - lambd * eta; whole != 0: the average restarts at the new parameters
  // (mu == 1), as XLA's select takes them
  T wd, decay, eta, mu, whole;
  typename SignMask<T>::Type flip;
};

// in: p, g, ax; out: p, ax.
template <typename T, unsigned F, bool kWhole>
void AsgdLoop(const AsgdScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
  const T* p_in = leaf.in[0];
  const T* g_in = leaf.in[1];
  const T* ax_in = leaf.in[2];
  T* p_out = leaf.out[0];
  T* ax_out = leaf.out[1];
#pragma GCC ivdep
  for (int64_t i = lo; i < hi; ++i) {
    const T p = p_in[i];
    T g = FlipSign(g_in[i], s.flip);
    if constexpr ((F & kAsgdDecay) != 0) g = Mad(s.wd, p, g);
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

template <typename T, unsigned F>
void AsgdRange(const AsgdScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
  if (s.whole != T(0)) {
    AsgdLoop<T, F, true>(s, leaf, lo, hi);
  } else {
    AsgdLoop<T, F, false>(s, leaf, lo, hi);
  }
}

// The scalar operands, in order:
//   wd: weight decay
//   decay: 1 - lambd * eta
//   eta
//   mu
//   whole: 1 where mu == 1, else 0
struct Asgd {
  static constexpr size_t kScalars = 5;
  static constexpr unsigned kVariants = kAsgdVariants;
  template <typename T>
  using Scalars = AsgdScalars<T>;

  template <typename T>
  static std::array<T*, kScalars> Fields(Scalars<T>& s) {
    return {&s.wd, &s.decay, &s.eta, &s.mu, &s.whole};
  }

  static int InArity(int64_t variant) { return 3; }

  template <typename T, unsigned F>
  static void Run(const Scalars<T>& s, const Leaf<T>& l, int64_t lo, int64_t hi) {
    AsgdRange<T, F>(s, l, lo, hi);
  }
};

}  // namespace

JAXOPT_ADV_ELEMENTWISE_HANDLER(JaxoptAdvAsgd, Asgd);
