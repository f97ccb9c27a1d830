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
struct SparseAdamScalars : Maximize<T> {
  // step = -lr, c1 = 1 - b1, c2 = 1 - b2, factor = sqrt(1 - b2^t) / (1 - b1^t)
  T step, c1, c2, eps, factor;
  std::array<T*, 5> Fields() { return {&step, &c1, &c2, &eps, &factor}; }
};

struct SparseAdam : ElementwiseFamily<SparseAdamScalars, kSparseAdamVariants, 4> {
  // in: p, g, mu, nu; out: p, mu, nu.
  template <typename T, unsigned F>
  static void Run(const SparseAdamScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
    const auto [p_in, g_in, mu_in, nu_in] = Inputs<4>(leaf);
    const auto [p_out, mu_out, nu_out] = Outputs<3>(leaf);
#pragma GCC ivdep
    for (int64_t i = lo; i < hi; ++i) {
      const T p = p_in[i];
      const T g = FlipSign(g_in[i], s.flip);
      const T mu = mu_in[i];
      const T nu = nu_in[i];
      const bool active = g != T(0);  // NaN takes part, as in the transform
      // m + (g - m) (1 - b1) and v + (g g - v) (1 - b2), torch's in-place lerp order;
      // LLVM contracts the square into its subtraction
      const T m = Mad(g - mu, s.c1, mu);
      const T v = Mad(Mad(g, g, -nu), s.c2, nu);
      const T u = s.factor * (m / (std::sqrt(v) + s.eps));
      p_out[i] = Mad(active ? u : T(0), s.step, p);
      mu_out[i] = active ? m : mu;
      nu_out[i] = active ? v : nu;
    }
  }
};

}  // namespace

JAXOPT_ADV_ELEMENTWISE_HANDLER(JaxoptAdvSparseAdam, SparseAdam);
