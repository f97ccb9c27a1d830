// SparseAdam (jaxopt_adv.torch.sparse_adam): the one-pass step for XLA:CPU. An element
// takes part in a step where its gradient is nonzero; elsewhere its moments and its
// parameter keep their values (a `mask=` argument and a constant learning rate are left
// to the XLA path). Its arithmetic
// mirrors XLA's optimized code for the transform + optax.apply_updates, which computes
// every element's step and selects; elementwise.h explains how, and holds the FFI
// plumbing that the family struct at the end plugs into.

#include <array>
#include <cmath>
#include <cstdint>

#include "elementwise.h"

namespace {

// No variants: the step is a traced scalar (a schedule or inject_hyperparams; the Python
// side sends a constant learning rate to the XLA path), and LLVM contracts XLA's
// select(active, u, 0) * step + p into one FMA. (With a constant step it folds the
// product into the select's arms first, in some loops of a leaf and not in others.)
// b1 = 0 or b2 = 0 make XLA drop a multiplication by 1, which changes no value
// (Mad(x, 1, y) rounds x + y once, as XLA's addition does).
constexpr unsigned kSparseAdamVariants = 1;

template <typename T>
struct SparseAdamScalars {
  // factor = sqrt(1 - b2^t) / (1 - b1^t)
  T step, c1, c2, eps, factor;
  typename SignMask<T>::Type flip;
};

// in: p, g, mu, nu; out: p, mu, nu.
template <typename T, unsigned F>
void SparseAdamRange(const SparseAdamScalars<T>& s, const Leaf<T>& leaf, int64_t lo,
                     int64_t hi) {
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
    const T g = FlipSign(g_in[i], s.flip);
    const T mu = mu_in[i];
    const T nu = nu_in[i];
    const bool active = g != T(0);  // NaN takes part, as in the transform
    // m + (g - m) (1 - b1) and v + (g g - v) (1 - b2), torch's in-place lerp order; LLVM
    // contracts the square into its subtraction
    const T m = Mad(g - mu, s.c1, mu);
    const T v = Mad(Mad(g, g, -nu), s.c2, nu);
    const T u = s.factor * (m / (std::sqrt(v) + s.eps));
    p_out[i] = Mad(active ? u : T(0), s.step, p);
    mu_out[i] = active ? m : mu;
    nu_out[i] = active ? v : nu;
  }
}

// The scalar operands, in order:
//   step: -lr
//   c1: 1 - b1
//   c2: 1 - b2
//   eps
//   factor: sqrt(1 - b2^t) / (1 - b1^t)
struct SparseAdam {
  static constexpr size_t kScalars = 5;
  static constexpr unsigned kVariants = kSparseAdamVariants;
  template <typename T>
  using Scalars = SparseAdamScalars<T>;

  template <typename T>
  static std::array<T*, kScalars> Fields(Scalars<T>& s) {
    return {&s.step, &s.c1, &s.c2, &s.eps, &s.factor};
  }

  static int InArity(int64_t variant) { return 4; }

  template <typename T, unsigned F>
  static void Run(const Scalars<T>& s, const Leaf<T>& l, int64_t lo, int64_t hi) {
    SparseAdamRange<T, F>(s, l, lo, hi);
  }
};

}  // namespace

JAXOPT_ADV_ELEMENTWISE_HANDLER(JaxoptAdvSparseAdam, SparseAdam);
