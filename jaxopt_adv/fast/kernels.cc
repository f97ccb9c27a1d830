// One-pass torch-exact optimizer steps for XLA:CPU, called through the XLA FFI.
//
// Each call updates the leaves passed to it (float32 or float64, one dtype per call) in
// a single pass: it reads the parameter, the gradient and the state arrays once and
// writes the parameter and the state once (the outputs alias the inputs, so donated
// buffers are updated in place), split into chunks over XLA's CPU thread pool.
//
// The arithmetic is the arithmetic of XLA's *optimized* code for the same step
// (jaxopt_adv.torch.{adam,sgd,rmsprop,adagrad,adadelta,adamax,nadam,radam,rprop,asgd} +
// optax.apply_updates under
// jax.jit), operation for operation, so results are bit-identical:
//   * XLA rewrites a division by a broadcast scalar into a multiplication by its
//     reciprocal (m / bc1 -> m * (1 / bc1), sqrt(v) / sqrt(bc2) -> sqrt(v) * rsqrt(bc2))
//     only while the scalar has one use; otherwise (m / bc1) / d becomes m / (bc1 * d).
//     The Python side picks the form per leaf and computes the scalars with the same
//     XLA ops.
//   * XLA:CPU lets LLVM contract a multiply feeding an add into a fused multiply-add.
//     Mad() is that contraction, placed where XLA's machine code has it (of
//     `a * b + c * d` LLVM fuses one product, which one follows the operand order of
//     XLA's emitted add: fixed per site, read from the generated code, except where
//     noted); everything is compiled with -ffp-contract=off so that the compiler adds
//     no other. JAXOPT_ADV_FMA=0 builds the uncontracted variant for hosts where XLA
//     does not contract.
//   * XLA factors `A * C + B * C` into `(A + B) * C` when C is a constant power of two
//     (the "factored" flags, e.g. Adam's b1 = 0.5, RMSprop's alpha = 0.5).
//   * maximum() propagates NaN and orders -0 below +0, as XLA's does.
//
// Scalars that may be traced (learning rate, betas, eps, weight decay, bias corrections)
// are 0-d buffers; the options that change the code are bits of the `flags` attribute.
// A call's leaves come in one of two layouts (ReadLeaves): each leaf with its own state
// arrays, or (flat_state=True) each state field one flat array over all the leaves,
// addressed through per-leaf offsets.

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "common.h"

#ifndef JAXOPT_ADV_FMA
#define JAXOPT_ADV_FMA 1
#endif

namespace {

// Leaves are cut into chunks of this many elements, the thread pool's unit of work.
constexpr int64_t kChunk = int64_t{1} << 15;
// At most this many arrays per leaf (Adam with AMSGrad: p, g, mu, nu, nu_max).
constexpr int kMaxArrays = 5;

template <typename T>
inline T Mad(T a, T b, T c) {
#if JAXOPT_ADV_FMA
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

// p + step * (a * b). A learning rate that is the constant 1 makes step the constant -1:
// LLVM folds the multiplication by -1 into a subtraction and contracts that with the
// product, p - a b in one rounding (kUnitStep).
template <bool kUnitStep, typename T>
inline T StepByProduct(T step, T a, T b, T p) {
  if constexpr (kUnitStep) {
    return Mad(-a, b, p);
  } else {
    return Mad(step, a * b, p);
  }
}

// x with its sign bit XORed with `mask`: -x for maximize (mask = the sign bit), bit for
// bit like XLA's negate, and branch-free so that the loop vectorizes.
inline float FlipSign(float x, uint32_t mask) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  bits ^= mask;
  std::memcpy(&x, &bits, sizeof bits);
  return x;
}
inline double FlipSign(double x, uint64_t mask) {
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  bits ^= mask;
  std::memcpy(&x, &bits, sizeof bits);
  return x;
}

// One leaf: `in` holds p, g and the state arrays; `out` holds p and the state arrays.
template <typename T>
struct Leaf {
  const T* in[kMaxArrays];
  T* out[kMaxArrays];
  int64_t size;
};

struct Chunk {
  int64_t leaf;
  int64_t lo;
  int64_t hi;
};

// Runs fn(chunk) over every chunk (see ParallelFor in common.h).
template <typename Fn>
void RunChunks(ffi::ThreadPool& pool, std::vector<Chunk> chunks, int64_t total, Fn fn) {
  const int64_t n = static_cast<int64_t>(chunks.size());
  ParallelFor(pool, n, total,
              [chunks = std::move(chunks), fn = std::move(fn)](int64_t k) { fn(chunks[k]); });
}

template <typename T>
std::vector<Chunk> MakeChunks(const std::vector<Leaf<T>>& leaves, int64_t* total) {
  std::vector<Chunk> chunks;
  *total = 0;
  for (int64_t l = 0; l < static_cast<int64_t>(leaves.size()); ++l) {
    const int64_t size = leaves[l].size;
    *total += size;
    for (int64_t lo = 0; lo < size; lo += kChunk) {
      chunks.push_back({l, lo, std::min(size, lo + kChunk)});
    }
  }
  return chunks;
}

// ----------------------------------------------------------------------------- Adam

// Bit 0 of every kernel's `flags` is maximize (a runtime sign flip); the other bits,
// shifted down by one, select the compiled variant.
constexpr int64_t kMaximize = 1;

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

// Adam's moments, shared by Adam and NAdam: m = b1 mu + (1 - b1) g, or (mu + g) b1 when
// XLA factors a power-of-two b1 = 1 - b1; v = b2 nu + ((1 - b2) g) g, or b2 nu + (g g)
// (1 - b2) where XLA folds maximize's negations (1-element leaves).
template <bool kFactored, bool kSquareFirst, typename T>
inline void AdamMoments(T b1, T c1, T b2, T c2, T mu, T nu, T g, T* m, T* v) {
  if constexpr (kFactored) {
    *m = (mu + g) * b1;
  } else {
    *m = Mad(b1, mu, c1 * g);
  }
  T g2;
  if constexpr (kSquareFirst) {
    g2 = (g * g) * c2;
  } else {
    g2 = (c2 * g) * g;
  }
  *v = Mad(b2, nu, g2);
}

template <typename T>
struct AdamScalars {
  T step, wd, b1, c1, b2, c2, eps, s1, s2;
  typename SignMask<T>::Type flip;
};

// in: p, g, mu, nu[, nu_max]; out: p, mu, nu[, nu_max].
template <typename T, unsigned F>
void AdamRange(const AdamScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
  const T* p_in = leaf.in[0];
  const T* g_in = leaf.in[1];
  const T* mu_in = leaf.in[2];
  const T* nu_in = leaf.in[3];
  const T* vmax_in = leaf.in[4];
  T* p_out = leaf.out[0];
  T* mu_out = leaf.out[1];
  T* nu_out = leaf.out[2];
  T* vmax_out = leaf.out[3];
#pragma GCC ivdep
  for (int64_t i = lo; i < hi; ++i) {
    const T p = p_in[i];
    T g = g_in[i];
    g = FlipSign(g, s.flip);
    if constexpr ((F & kAdamCoupledDecay) != 0) g = Mad(s.wd, p, g);
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

// ------------------------------------------------------------------------------ SGD

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

// -------------------------------------------------------------------------- RMSprop

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
struct RmspropScalars {
  T step, wd, alpha, c, eps, momentum;
  typename SignMask<T>::Type flip;
};

// in: p, g, nu[, mu][, trace]; out: p, nu[, mu][, trace].
template <typename T, unsigned F>
void RmspropRange(const RmspropScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
  constexpr bool kCentered = (F & kRmsCentered) != 0;
  constexpr int kTrace = kCentered ? 4 : 3;
  const T* p_in = leaf.in[0];
  const T* g_in = leaf.in[1];
  const T* nu_in = leaf.in[2];
  const T* mu_in = leaf.in[3];
  const T* t_in = leaf.in[kTrace];
  T* p_out = leaf.out[0];
  T* nu_out = leaf.out[1];
  T* mu_out = leaf.out[2];
  T* t_out = leaf.out[kTrace - 1];
#pragma GCC ivdep
  for (int64_t i = lo; i < hi; ++i) {
    const T p = p_in[i];
    T g = g_in[i];
    g = FlipSign(g, s.flip);
    if constexpr ((F & kRmsDecay) != 0) g = Mad(s.wd, p, g);
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

// -------------------------------------------------------------------------- Adagrad

enum AdagradFlags : unsigned {
  kAdagradDecay = 1,
  kAdagradVariants = 2,
};

template <typename T>
struct AdagradScalars {
  T step, wd, eps, lr_scale;
  typename SignMask<T>::Type flip;
};

// in: p, g, sum; out: p, sum.
template <typename T, unsigned F>
void AdagradRange(const AdagradScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
  const T* p_in = leaf.in[0];
  const T* g_in = leaf.in[1];
  const T* sum_in = leaf.in[2];
  T* p_out = leaf.out[0];
  T* sum_out = leaf.out[1];
#pragma GCC ivdep
  for (int64_t i = lo; i < hi; ++i) {
    const T p = p_in[i];
    T g = g_in[i];
    g = FlipSign(g, s.flip);
    if constexpr ((F & kAdagradDecay) != 0) g = Mad(s.wd, p, g);
    const T sum = Mad(g, g, sum_in[i]);
    sum_out[i] = sum;
    // torch's order: (decay * g) / (sqrt(sum) + eps), no reciprocal
    const T u = (s.lr_scale * g) / (std::sqrt(sum) + s.eps);
    p_out[i] = Mad(s.step, u, p);
  }
}

// ------------------------------------------------------------------------- Adadelta

enum AdadeltaFlags : unsigned {
  kAdadeltaDecay = 1,
  // As Adam's kAdamSquareFirst: (g * g) * (1 - rho) (1-element leaves under maximize).
  kAdadeltaSquareFirst = 2,
  // The learning rate is the constant 1 (StepByProduct), torch's default.
  kAdadeltaUnitStep = 4,
  kAdadeltaVariants = 8,
};

template <typename T>
struct AdadeltaScalars {
  T step, wd, rho, c, eps;  // c = 1 - rho
  typename SignMask<T>::Type flip;
};

// in: p, g, e_g, e_x; out: p, e_g, e_x. The root of the quotient, as
// jaxopt_adv.torch.scale_by_adadelta takes it (no approximate rsqrt).
template <typename T, unsigned F>
void AdadeltaRange(const AdadeltaScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
  const T* p_in = leaf.in[0];
  const T* g_in = leaf.in[1];
  const T* eg_in = leaf.in[2];
  const T* ex_in = leaf.in[3];
  T* p_out = leaf.out[0];
  T* eg_out = leaf.out[1];
  T* ex_out = leaf.out[2];
#pragma GCC ivdep
  for (int64_t i = lo; i < hi; ++i) {
    const T p = p_in[i];
    T g = g_in[i];
    g = FlipSign(g, s.flip);
    if constexpr ((F & kAdadeltaDecay) != 0) g = Mad(s.wd, p, g);
    T g2;
    if constexpr ((F & kAdadeltaSquareFirst) != 0) {
      g2 = (g * g) * s.c;
    } else {
      g2 = (s.c * g) * g;
    }
    const T eg = Mad(s.rho, eg_in[i], g2);
    const T ex_old = ex_in[i];
    const T root = std::sqrt((ex_old + s.eps) / (eg + s.eps));
    const T delta = root * g;
    eg_out[i] = eg;
    ex_out[i] = Mad(s.rho, ex_old, (s.c * delta) * delta);
    p_out[i] = StepByProduct<(F & kAdadeltaUnitStep) != 0>(s.step, root, g, p);
  }
}

// --------------------------------------------------------------------------- Adamax

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
struct AdamaxScalars {
  T step, wd, b1, c1, b2, eps, s1;
  typename SignMask<T>::Type flip;
};

// in: p, g, mu, nu; out: p, mu, nu.
template <typename T, unsigned F>
void AdamaxRange(const AdamaxScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
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
    if constexpr ((F & kAdamaxDecay) != 0) g = Mad(s.wd, p, g);
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

// ---------------------------------------------------------------------------- NAdam

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

// ---------------------------------------------------------------------------- RAdam

enum RadamFlags : unsigned {
  kRadamCoupledDecay = 1,
  kRadamDecoupledDecay = 2,
  kRadamFactoredMu = 4,
  // As Adam's kAdamReciprocalBc1: m * s1 (s1 = 1 / bc1), else m / s1 (s1 = bc1).
  kRadamReciprocalBc1 = 8,
  // As Adam's kAdamSquareFirst.
  kRadamSquareFirst = 16,
  // The learning rate is the constant 1 (StepByProduct; without decoupled decay, whose
  // addition comes last).
  kRadamUnitStep = 32,
  kRadamVariants = 64,
};

template <typename T>
struct RadamScalars {
  // rect: the rectification factor, 0 where the variance is intractable (then the step
  // is the bias-corrected momentum); scale = rect * sqrt(1 - b2^t)
  T step, wd, b1, c1, b2, c2, eps, s1, rect, scale;
  typename SignMask<T>::Type flip;
};

// in: p, g, mu, nu; out: p, mu, nu. kRectified: the step of rho_t > 5 (XLA computes
// both sides of that select and keeps one; a loop per side gives the same values and
// vectorizes, where GCC keeps a select whose one side divides as a branch).
template <typename T, unsigned F, bool kRectified>
void RadamLoop(const RadamScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
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
    if constexpr ((F & kRadamCoupledDecay) != 0) g = Mad(s.wd, p, g);
    T m, v;
    AdamMoments<(F & kRadamFactoredMu) != 0, (F & kRadamSquareFirst) != 0>(
        s.b1, s.c1, s.b2, s.c2, mu_in[i], nu_in[i], g, &m, &v);
    constexpr bool kUnitStep = (F & kRadamUnitStep) != 0;
    if constexpr ((F & kRadamDecoupledDecay) != 0) {
      T u = (F & kRadamReciprocalBc1) != 0 ? m * s.s1 : m / s.s1;
      if constexpr (kRectified) u = u * (s.scale / (std::sqrt(v) + s.eps));
      p_out[i] = Mad(s.step, Mad(s.wd, p, u), p);
    } else if constexpr (kRectified) {
      const T u = (F & kRadamReciprocalBc1) != 0 ? m * s.s1 : m / s.s1;
      p_out[i] = StepByProduct<kUnitStep>(s.step, u, s.scale / (std::sqrt(v) + s.eps), p);
    } else if constexpr ((F & kRadamReciprocalBc1) != 0) {
      p_out[i] = StepByProduct<kUnitStep>(s.step, m, s.s1, p);
    } else {
      p_out[i] = Mad(s.step, m / s.s1, p);
    }
    mu_out[i] = m;
    nu_out[i] = v;
  }
}

template <typename T, unsigned F>
void RadamRange(const RadamScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
  if (s.rect > 0) {
    RadamLoop<T, F, true>(s, leaf, lo, hi);
  } else {
    RadamLoop<T, F, false>(s, leaf, lo, hi);
  }
}

// ---------------------------------------------------------------------------- Rprop

// Rprop has no variants: every product is either a single rounding (step * eta) or exact
// (sign(g) * step, with sign(g) in {-1, -0, +0, 1}), so no FMA contraction can change it.
constexpr unsigned kRpropVariants = 1;

template <typename T>
struct RpropScalars {
  T eta_minus, eta_plus, step_min, step_max;
  typename SignMask<T>::Type flip;
};

// in: p, g, prev, step_size; out: p, prev, step_size.
template <typename T, unsigned F>
void RpropRange(const RpropScalars<T>& s, const Leaf<T>& leaf, int64_t lo, int64_t hi) {
  const T* p_in = leaf.in[0];
  const T* g_in = leaf.in[1];
  const T* prev_in = leaf.in[2];
  const T* size_in = leaf.in[3];
  T* p_out = leaf.out[0];
  T* prev_out = leaf.out[1];
  T* size_out = leaf.out[2];
#pragma GCC ivdep
  for (int64_t i = lo; i < hi; ++i) {
    // Every comparison is made unconditionally and each select has one condition: GCC
    // does not if-convert (vectorize) a nested ternary, whose inner comparison may trap.
    T g = FlipSign(g_in[i], s.flip);
    // sign(g * prev) > 0 (< 0) exactly when the product is; NaN is neither
    const T agree = g * prev_in[i];
    const bool grew = agree > 0;
    const bool flipped = agree < 0;
    T factor = grew ? s.eta_plus : T(1);
    factor = flipped ? s.eta_minus : factor;
    // XLA's clamp(lo, x, hi) = min(max(lo, x), hi)
    const T size = XlaMin(XlaMax(s.step_min, size_in[i] * factor), s.step_max);
    g = flipped ? T(0) : g;
    // XLA's sign: +-1, and the operand itself for +-0 and NaN
    const bool positive = g > 0;
    const bool negative = g < 0;
    T sign = positive ? T(1) : g;
    sign = negative ? T(-1) : sign;
    p_out[i] = p_in[i] - sign * size;
    prev_out[i] = g;
    size_out[i] = size;
  }
}

// ----------------------------------------------------------------------------- ASGD

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

// ----------------------------------------------------------------- FFI plumbing

// Success when `buffer` holds T.
template <typename T>
ffi::Error CheckDtype(const ffi::AnyBuffer& buffer) {
  if (buffer.element_type() != kDataType<T>) {
    return InvalidArgument("every leaf and state array must have the scalars' dtype");
  }
  return ffi::Error::Success();
}

template <typename T>
T* Data(const ffi::AnyBuffer& buffer) {
  return static_cast<T*>(buffer.untyped_data());
}

// Decodes the leaves of a tree-layout call: `in_arity` operands (p, g, state arrays) and
// `in_arity - 1` results (p, state arrays) per leaf.
template <typename T>
ffi::Error ReadTreeLeaves(const ffi::RemainingArgs& args, const ffi::RemainingRets& rets,
                          int in_arity, std::vector<Leaf<T>>* leaves) {
  const int out_arity = in_arity - 1;
  if (args.size() % in_arity != 0 || rets.size() * in_arity != args.size() * out_arity) {
    return InvalidArgument("operand and result counts do not match the optimizer's state");
  }
  const size_t count = args.size() / in_arity;
  leaves->resize(count);
  for (size_t l = 0; l < count; ++l) {
    Leaf<T>& leaf = (*leaves)[l];
    for (int a = 0; a < in_arity; ++a) {
      auto buffer = args.get<ffi::AnyBuffer>(l * in_arity + a);
      if (buffer.has_error()) return buffer.error();
      if (ffi::Error error = CheckDtype<T>(*buffer); error.failure()) return error;
      if (a == 0) {
        leaf.size = static_cast<int64_t>(buffer->element_count());
      } else if (static_cast<int64_t>(buffer->element_count()) != leaf.size) {
        return InvalidArgument("a gradient or state array differs in size from its leaf");
      }
      leaf.in[a] = Data<T>(*buffer);
    }
    for (int r = 0; r < out_arity; ++r) {
      auto result = rets.get<ffi::AnyBuffer>(l * out_arity + r);
      if (result.has_error()) return result.error();
      if (ffi::Error error = CheckDtype<T>(**result); error.failure()) return error;
      if (static_cast<int64_t>((*result)->element_count()) != leaf.size) {
        return InvalidArgument("a result differs in size from its leaf");
      }
      leaf.out[r] = Data<T>(**result);
    }
  }
  return ffi::Error::Success();
}

// Decodes the leaves of a flat-state call: p and g per leaf, then the k = in_arity - 2
// state arrays of all the leaves (one flat buffer each), then a uint32 operand holding
// each leaf's offset into them as (low, high) 32-bit words (an operand that exists
// without jax_enable_x64); results: p per leaf, then the k flat buffers (aliased to the
// operands, so the elements of leaves outside this call keep their values).
template <typename T>
ffi::Error ReadFlatLeaves(const ffi::RemainingArgs& args, const ffi::RemainingRets& rets,
                          int in_arity, std::vector<Leaf<T>>* leaves) {
  const size_t k = static_cast<size_t>(in_arity - 2);
  auto offsets_buffer = args.get<ffi::AnyBuffer>(args.size() - 1);
  if (offsets_buffer.has_error()) return offsets_buffer.error();
  const size_t count = offsets_buffer->element_count() / 2;
  if (offsets_buffer->element_count() % 2 != 0 || args.size() != 2 * count + k + 1 ||
      rets.size() != count + k) {
    return InvalidArgument("operand and result counts do not match the optimizer's state");
  }
  const auto* words = static_cast<const uint32_t*>(offsets_buffer->untyped_data());
  std::vector<int64_t> offsets(count);
  for (size_t l = 0; l < count; ++l) {
    const auto high = static_cast<int64_t>(words[2 * l + 1]);
    offsets[l] = static_cast<int64_t>(words[2 * l]) | (high << 32);
  }
  std::array<const T*, kMaxArrays> flat_in{};
  std::array<T*, kMaxArrays> flat_out{};
  int64_t flat_size = 0;
  for (size_t j = 0; j < k; ++j) {
    auto buffer = args.get<ffi::AnyBuffer>(2 * count + j);
    auto result = rets.get<ffi::AnyBuffer>(count + j);
    if (buffer.has_error()) return buffer.error();
    if (result.has_error()) return result.error();
    if (ffi::Error error = CheckDtype<T>(*buffer); error.failure()) return error;
    if (ffi::Error error = CheckDtype<T>(**result); error.failure()) return error;
    const auto size = static_cast<int64_t>(buffer->element_count());
    if (j > 0 && size != flat_size) {
      return InvalidArgument("the flat state arrays differ in size");
    }
    if (static_cast<int64_t>((*result)->element_count()) != size) {
      return InvalidArgument("a flat state result differs in size from its operand");
    }
    flat_size = size;
    flat_in[j] = Data<T>(*buffer);
    flat_out[j] = Data<T>(**result);
  }
  leaves->resize(count);
  for (size_t l = 0; l < count; ++l) {
    Leaf<T>& leaf = (*leaves)[l];
    auto p = args.get<ffi::AnyBuffer>(2 * l);
    auto g = args.get<ffi::AnyBuffer>(2 * l + 1);
    auto p_out = rets.get<ffi::AnyBuffer>(l);
    if (p.has_error()) return p.error();
    if (g.has_error()) return g.error();
    if (p_out.has_error()) return p_out.error();
    for (const ffi::AnyBuffer* buffer : {&*p, &*g, &**p_out}) {
      if (ffi::Error error = CheckDtype<T>(*buffer); error.failure()) return error;
    }
    leaf.size = static_cast<int64_t>(p->element_count());
    if (static_cast<int64_t>(g->element_count()) != leaf.size ||
        static_cast<int64_t>((*p_out)->element_count()) != leaf.size) {
      return InvalidArgument("a gradient or result differs in size from its leaf");
    }
    if (leaf.size > 0 && offsets[l] > flat_size - leaf.size) {
      return InvalidArgument("a leaf's offset lies outside the flat state");
    }
    leaf.in[0] = Data<T>(*p);
    leaf.in[1] = Data<T>(*g);
    leaf.out[0] = Data<T>(**p_out);
    for (size_t j = 0; j < k; ++j) {
      leaf.in[2 + j] = flat_in[j] + offsets[l];
      leaf.out[1 + j] = flat_out[j] + offsets[l];
    }
  }
  return ffi::Error::Success();
}

// Decodes the leaves of a call in either layout: a last operand of dtype uint32 (the
// leaves' offsets) marks the flat-state layout.
template <typename T>
ffi::Error ReadLeaves(const ffi::RemainingArgs& args, const ffi::RemainingRets& rets,
                      int in_arity, std::vector<Leaf<T>>* leaves) {
  bool flat = false;
  if (args.size() > 0) {
    auto last = args.get<ffi::AnyBuffer>(args.size() - 1);
    if (last.has_error()) return last.error();
    flat = last->element_type() == ffi::DataType::U32;
  }
  const ffi::Error error = flat ? ReadFlatLeaves<T>(args, rets, in_arity, leaves)
                                : ReadTreeLeaves<T>(args, rets, in_arity, leaves);
  if (error.failure()) return error;
  for (Leaf<T>& leaf : *leaves) {
    for (int a = in_arity; a < kMaxArrays; ++a) leaf.in[a] = nullptr;
    for (int r = in_arity - 1; r < kMaxArrays; ++r) leaf.out[r] = nullptr;
  }
  return ffi::Error::Success();
}

// A table of Range<T, F> for every flag combination F < N, indexed by the flags.
template <typename T, typename S, template <typename, unsigned> class K, size_t... Fs>
constexpr auto MakeTable(std::index_sequence<Fs...>) {
  using Fn = void (*)(const S&, const Leaf<T>&, int64_t, int64_t);
  return std::array<Fn, sizeof...(Fs)>{&K<T, static_cast<unsigned>(Fs)>::Run...};
}

// Combinations the Python side never asks for compile to an empty body.
template <typename T, unsigned F>
struct AdamKernel {
  static void Run(const AdamScalars<T>& s, const Leaf<T>& l, int64_t lo, int64_t hi) {
    constexpr unsigned kBothDecays = kAdamCoupledDecay | kAdamDecoupledDecay;
    if constexpr ((F & kBothDecays) != kBothDecays) AdamRange<T, F>(s, l, lo, hi);
  }
};
template <typename T, unsigned F>
struct SgdKernel {
  static void Run(const SgdScalars<T>& s, const Leaf<T>& l, int64_t lo, int64_t hi) {
    constexpr bool kValid = (F & kSgdMomentum) != 0 || (F & ~kSgdDecay) == 0u;
    if constexpr (kValid) SgdRange<T, F>(s, l, lo, hi);
  }
};
template <typename T, unsigned F>
struct RmspropKernel {
  static void Run(const RmspropScalars<T>& s, const Leaf<T>& l, int64_t lo, int64_t hi) {
    RmspropRange<T, F>(s, l, lo, hi);
  }
};

template <typename T, unsigned F>
struct AdagradKernel {
  static void Run(const AdagradScalars<T>& s, const Leaf<T>& l, int64_t lo, int64_t hi) {
    AdagradRange<T, F>(s, l, lo, hi);
  }
};

template <typename T, unsigned F>
struct NadamKernel {
  static void Run(const NadamScalars<T>& s, const Leaf<T>& l, int64_t lo, int64_t hi) {
    constexpr unsigned kBothDecays = kNadamCoupledDecay | kNadamDecoupledDecay;
    if constexpr ((F & kBothDecays) != kBothDecays) NadamRange<T, F>(s, l, lo, hi);
  }
};

template <typename T, unsigned F>
struct AdadeltaKernel {
  static void Run(const AdadeltaScalars<T>& s, const Leaf<T>& l, int64_t lo, int64_t hi) {
    AdadeltaRange<T, F>(s, l, lo, hi);
  }
};

template <typename T, unsigned F>
struct AdamaxKernel {
  static void Run(const AdamaxScalars<T>& s, const Leaf<T>& l, int64_t lo, int64_t hi) {
    AdamaxRange<T, F>(s, l, lo, hi);
  }
};

template <typename T, unsigned F>
struct RadamKernel {
  static void Run(const RadamScalars<T>& s, const Leaf<T>& l, int64_t lo, int64_t hi) {
    constexpr unsigned kBothDecays = kRadamCoupledDecay | kRadamDecoupledDecay;
    if constexpr ((F & kBothDecays) != kBothDecays) RadamRange<T, F>(s, l, lo, hi);
  }
};

template <typename T, unsigned F>
struct RpropKernel {
  static void Run(const RpropScalars<T>& s, const Leaf<T>& l, int64_t lo, int64_t hi) {
    RpropRange<T, F>(s, l, lo, hi);
  }
};

template <typename T, unsigned F>
struct AsgdKernel {
  static void Run(const AsgdScalars<T>& s, const Leaf<T>& l, int64_t lo, int64_t hi) {
    AsgdRange<T, F>(s, l, lo, hi);
  }
};

// Decodes the leaves, picks the compiled variant for `flags` and runs it over all leaves.
template <typename T, typename S, template <typename, unsigned> class K, unsigned N>
ffi::Error RunKernel(ffi::ThreadPool& pool, S scalars, const ffi::RemainingArgs& args,
                     const ffi::RemainingRets& rets, int in_arity, int64_t flags) {
  const int64_t variant = flags >> 1;
  if (flags < 0 || variant >= static_cast<int64_t>(N)) return InvalidArgument("bad flags");
  scalars.flip = (flags & kMaximize) != 0 ? SignMask<T>::kValue : 0;
  std::vector<Leaf<T>> leaves;
  if (ffi::Error error = ReadLeaves<T>(args, rets, in_arity, &leaves); error.failure()) {
    return error;
  }
  static constexpr auto kTable = MakeTable<T, S, K>(std::make_index_sequence<N>());
  const auto kernel = kTable[static_cast<size_t>(variant)];
  int64_t total = 0;
  std::vector<Chunk> chunks = MakeChunks(leaves, &total);
  RunChunks(pool, std::move(chunks), total,
            [kernel, scalars, leaves = std::move(leaves)](const Chunk& c) {
              kernel(scalars, leaves[c.leaf], c.lo, c.hi);
            });
  return ffi::Error::Success();
}

// Reads the 0-d scalar operands into `fields`, in order.
template <typename T, size_t K>
ffi::Error ReadScalars(const ffi::AnyBuffer* in, const std::array<T*, K>& fields) {
  for (size_t k = 0; k < K; ++k) {
    if (ffi::Error error = ReadScalar(in[k], fields[k]); error.failure()) return error;
  }
  return ffi::Error::Success();
}

template <typename T>
ffi::Error AdamTyped(ffi::ThreadPool& pool, const ffi::AnyBuffer* in, ffi::RemainingArgs args,
                     ffi::RemainingRets rets, int64_t flags) {
  AdamScalars<T> s;
  std::array<T*, 9> fields = {&s.step, &s.wd, &s.b1, &s.c1, &s.b2, &s.c2, &s.eps, &s.s1, &s.s2};
  if (ffi::Error error = ReadScalars(in, fields); error.failure()) return error;
  const int in_arity = ((flags >> 1) & kAdamAmsgrad) != 0 ? 5 : 4;
  return RunKernel<T, AdamScalars<T>, AdamKernel, kAdamVariants>(pool, s, args, rets, in_arity,
                                                                 flags);
}

template <typename T>
ffi::Error SgdTyped(ffi::ThreadPool& pool, const ffi::AnyBuffer* in, ffi::RemainingArgs args,
                    ffi::RemainingRets rets, int64_t flags) {
  SgdScalars<T> s;
  std::array<T*, 4> fields = {&s.step, &s.wd, &s.momentum, &s.coef};
  if (ffi::Error error = ReadScalars(in, fields); error.failure()) return error;
  const int in_arity = ((flags >> 1) & kSgdMomentum) != 0 ? 3 : 2;
  if (((flags >> 1) & kSgdMaybeZeroMomentum) != 0 && s.momentum != T(0)) {
    flags &= ~(int64_t{kSgdMaybeZeroMomentum} << 1);
  }
  return RunKernel<T, SgdScalars<T>, SgdKernel, kSgdVariants>(pool, s, args, rets, in_arity,
                                                              flags);
}

template <typename T>
ffi::Error RmspropTyped(ffi::ThreadPool& pool, const ffi::AnyBuffer* in, ffi::RemainingArgs args,
                        ffi::RemainingRets rets, int64_t flags) {
  RmspropScalars<T> s;
  std::array<T*, 6> fields = {&s.step, &s.wd, &s.alpha, &s.c, &s.eps, &s.momentum};
  if (ffi::Error error = ReadScalars(in, fields); error.failure()) return error;
  const int64_t variant = flags >> 1;
  const int in_arity =
      3 + ((variant & kRmsCentered) != 0 ? 1 : 0) + ((variant & kRmsMomentum) != 0 ? 1 : 0);
  return RunKernel<T, RmspropScalars<T>, RmspropKernel, kRmsVariants>(pool, s, args, rets,
                                                                      in_arity, flags);
}

template <typename T>
ffi::Error AdagradTyped(ffi::ThreadPool& pool, const ffi::AnyBuffer* in, ffi::RemainingArgs args,
                        ffi::RemainingRets rets, int64_t flags) {
  AdagradScalars<T> s;
  std::array<T*, 4> fields = {&s.step, &s.wd, &s.eps, &s.lr_scale};
  if (ffi::Error error = ReadScalars(in, fields); error.failure()) return error;
  return RunKernel<T, AdagradScalars<T>, AdagradKernel, kAdagradVariants>(pool, s, args, rets, 3,
                                                                          flags);
}

template <typename T>
ffi::Error AdadeltaTyped(ffi::ThreadPool& pool, const ffi::AnyBuffer* in,
                         ffi::RemainingArgs args, ffi::RemainingRets rets, int64_t flags) {
  AdadeltaScalars<T> s;
  std::array<T*, 5> fields = {&s.step, &s.wd, &s.rho, &s.c, &s.eps};
  if (ffi::Error error = ReadScalars(in, fields); error.failure()) return error;
  return RunKernel<T, AdadeltaScalars<T>, AdadeltaKernel, kAdadeltaVariants>(pool, s, args,
                                                                             rets, 4, flags);
}

ffi::Error AdadeltaImpl(ffi::ThreadPool pool, ffi::AnyBuffer step, ffi::AnyBuffer wd,
                        ffi::AnyBuffer rho, ffi::AnyBuffer c, ffi::AnyBuffer eps,
                        ffi::RemainingArgs args, ffi::RemainingRets rets, int64_t flags) {
  const ffi::AnyBuffer in[] = {step, wd, rho, c, eps};
  return ByDtype(step.element_type(), [&](auto zero) {
    return AdadeltaTyped<decltype(zero)>(pool, in, args, rets, flags);
  });
}

template <typename T>
ffi::Error AdamaxTyped(ffi::ThreadPool& pool, const ffi::AnyBuffer* in, ffi::RemainingArgs args,
                       ffi::RemainingRets rets, int64_t flags) {
  AdamaxScalars<T> s;
  std::array<T*, 7> fields = {&s.step, &s.wd, &s.b1, &s.c1, &s.b2, &s.eps, &s.s1};
  if (ffi::Error error = ReadScalars(in, fields); error.failure()) return error;
  return RunKernel<T, AdamaxScalars<T>, AdamaxKernel, kAdamaxVariants>(pool, s, args, rets, 4,
                                                                       flags);
}

template <typename T>
ffi::Error NadamTyped(ffi::ThreadPool& pool, const ffi::AnyBuffer* in, ffi::RemainingArgs args,
                      ffi::RemainingRets rets, int64_t flags) {
  NadamScalars<T> s;
  std::array<T*, 10> fields = {&s.step, &s.wd, &s.b1, &s.c1, &s.b2,
                               &s.c2,   &s.eps, &s.s2, &s.gc, &s.mc};
  if (ffi::Error error = ReadScalars(in, fields); error.failure()) return error;
  return RunKernel<T, NadamScalars<T>, NadamKernel, kNadamVariants>(pool, s, args, rets, 4,
                                                                    flags);
}

template <typename T>
ffi::Error RadamTyped(ffi::ThreadPool& pool, const ffi::AnyBuffer* in, ffi::RemainingArgs args,
                      ffi::RemainingRets rets, int64_t flags) {
  RadamScalars<T> s;
  std::array<T*, 10> fields = {&s.step, &s.wd,  &s.b1, &s.c1,   &s.b2,
                               &s.c2,   &s.eps, &s.s1, &s.rect, &s.scale};
  if (ffi::Error error = ReadScalars(in, fields); error.failure()) return error;
  return RunKernel<T, RadamScalars<T>, RadamKernel, kRadamVariants>(pool, s, args, rets, 4,
                                                                    flags);
}

ffi::Error RadamImpl(ffi::ThreadPool pool, ffi::AnyBuffer step, ffi::AnyBuffer wd,
                     ffi::AnyBuffer b1, ffi::AnyBuffer c1, ffi::AnyBuffer b2, ffi::AnyBuffer c2,
                     ffi::AnyBuffer eps, ffi::AnyBuffer s1, ffi::AnyBuffer rect,
                     ffi::AnyBuffer scale, ffi::RemainingArgs args, ffi::RemainingRets rets,
                     int64_t flags) {
  const ffi::AnyBuffer in[] = {step, wd, b1, c1, b2, c2, eps, s1, rect, scale};
  return ByDtype(step.element_type(), [&](auto zero) {
    return RadamTyped<decltype(zero)>(pool, in, args, rets, flags);
  });
}

template <typename T>
ffi::Error RpropTyped(ffi::ThreadPool& pool, const ffi::AnyBuffer* in, ffi::RemainingArgs args,
                      ffi::RemainingRets rets, int64_t flags) {
  RpropScalars<T> s;
  std::array<T*, 4> fields = {&s.eta_minus, &s.eta_plus, &s.step_min, &s.step_max};
  if (ffi::Error error = ReadScalars(in, fields); error.failure()) return error;
  return RunKernel<T, RpropScalars<T>, RpropKernel, kRpropVariants>(pool, s, args, rets, 4,
                                                                    flags);
}

ffi::Error RpropImpl(ffi::ThreadPool pool, ffi::AnyBuffer eta_minus, ffi::AnyBuffer eta_plus,
                     ffi::AnyBuffer step_min, ffi::AnyBuffer step_max, ffi::RemainingArgs args,
                     ffi::RemainingRets rets, int64_t flags) {
  const ffi::AnyBuffer in[] = {eta_minus, eta_plus, step_min, step_max};
  return ByDtype(eta_minus.element_type(), [&](auto zero) {
    return RpropTyped<decltype(zero)>(pool, in, args, rets, flags);
  });
}

template <typename T>
ffi::Error AsgdTyped(ffi::ThreadPool& pool, const ffi::AnyBuffer* in, ffi::RemainingArgs args,
                     ffi::RemainingRets rets, int64_t flags) {
  AsgdScalars<T> s;
  std::array<T*, 5> fields = {&s.wd, &s.decay, &s.eta, &s.mu, &s.whole};
  if (ffi::Error error = ReadScalars(in, fields); error.failure()) return error;
  return RunKernel<T, AsgdScalars<T>, AsgdKernel, kAsgdVariants>(pool, s, args, rets, 3, flags);
}

ffi::Error AsgdImpl(ffi::ThreadPool pool, ffi::AnyBuffer wd, ffi::AnyBuffer decay,
                    ffi::AnyBuffer eta, ffi::AnyBuffer mu, ffi::AnyBuffer whole,
                    ffi::RemainingArgs args, ffi::RemainingRets rets, int64_t flags) {
  const ffi::AnyBuffer in[] = {wd, decay, eta, mu, whole};
  return ByDtype(wd.element_type(), [&](auto zero) {
    return AsgdTyped<decltype(zero)>(pool, in, args, rets, flags);
  });
}

ffi::Error NadamImpl(ffi::ThreadPool pool, ffi::AnyBuffer step, ffi::AnyBuffer wd,
                     ffi::AnyBuffer b1, ffi::AnyBuffer c1, ffi::AnyBuffer b2, ffi::AnyBuffer c2,
                     ffi::AnyBuffer eps, ffi::AnyBuffer s2, ffi::AnyBuffer gc, ffi::AnyBuffer mc,
                     ffi::RemainingArgs args, ffi::RemainingRets rets, int64_t flags) {
  const ffi::AnyBuffer in[] = {step, wd, b1, c1, b2, c2, eps, s2, gc, mc};
  return ByDtype(step.element_type(), [&](auto zero) {
    return NadamTyped<decltype(zero)>(pool, in, args, rets, flags);
  });
}

ffi::Error AdamImpl(ffi::ThreadPool pool, ffi::AnyBuffer step, ffi::AnyBuffer wd, ffi::AnyBuffer b1,
                    ffi::AnyBuffer c1, ffi::AnyBuffer b2, ffi::AnyBuffer c2, ffi::AnyBuffer eps,
                    ffi::AnyBuffer s1, ffi::AnyBuffer s2, ffi::RemainingArgs args,
                    ffi::RemainingRets rets, int64_t flags) {
  const ffi::AnyBuffer in[] = {step, wd, b1, c1, b2, c2, eps, s1, s2};
  return ByDtype(step.element_type(), [&](auto zero) {
    return AdamTyped<decltype(zero)>(pool, in, args, rets, flags);
  });
}

ffi::Error SgdImpl(ffi::ThreadPool pool, ffi::AnyBuffer step, ffi::AnyBuffer wd,
                   ffi::AnyBuffer momentum, ffi::AnyBuffer coef, ffi::RemainingArgs args,
                   ffi::RemainingRets rets, int64_t flags) {
  const ffi::AnyBuffer in[] = {step, wd, momentum, coef};
  return ByDtype(step.element_type(), [&](auto zero) {
    return SgdTyped<decltype(zero)>(pool, in, args, rets, flags);
  });
}

ffi::Error RmspropImpl(ffi::ThreadPool pool, ffi::AnyBuffer step, ffi::AnyBuffer wd,
                       ffi::AnyBuffer alpha, ffi::AnyBuffer c, ffi::AnyBuffer eps,
                       ffi::AnyBuffer momentum, ffi::RemainingArgs args, ffi::RemainingRets rets,
                       int64_t flags) {
  const ffi::AnyBuffer in[] = {step, wd, alpha, c, eps, momentum};
  return ByDtype(step.element_type(), [&](auto zero) {
    return RmspropTyped<decltype(zero)>(pool, in, args, rets, flags);
  });
}

ffi::Error AdagradImpl(ffi::ThreadPool pool, ffi::AnyBuffer step, ffi::AnyBuffer wd,
                       ffi::AnyBuffer eps, ffi::AnyBuffer lr_scale, ffi::RemainingArgs args,
                       ffi::RemainingRets rets, int64_t flags) {
  const ffi::AnyBuffer in[] = {step, wd, eps, lr_scale};
  return ByDtype(step.element_type(), [&](auto zero) {
    return AdagradTyped<decltype(zero)>(pool, in, args, rets, flags);
  });
}

ffi::Error AdamaxImpl(ffi::ThreadPool pool, ffi::AnyBuffer step, ffi::AnyBuffer wd,
                      ffi::AnyBuffer b1, ffi::AnyBuffer c1, ffi::AnyBuffer b2, ffi::AnyBuffer eps,
                      ffi::AnyBuffer s1, ffi::RemainingArgs args, ffi::RemainingRets rets,
                      int64_t flags) {
  const ffi::AnyBuffer in[] = {step, wd, b1, c1, b2, eps, s1};
  return ByDtype(step.element_type(), [&](auto zero) {
    return AdamaxTyped<decltype(zero)>(pool, in, args, rets, flags);
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxoptAdvAdam, AdamImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // step = -lr
                                  .Arg<ffi::AnyBuffer>()  // weight decay
                                  .Arg<ffi::AnyBuffer>()  // b1
                                  .Arg<ffi::AnyBuffer>()  // 1 - b1
                                  .Arg<ffi::AnyBuffer>()  // b2
                                  .Arg<ffi::AnyBuffer>()  // 1 - b2
                                  .Arg<ffi::AnyBuffer>()  // eps
                                  .Arg<ffi::AnyBuffer>()  // 1 / (1 - b1^t)
                                  .Arg<ffi::AnyBuffer>()  // 1 / sqrt(1 - b2^t)
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int64_t>("flags"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxoptAdvSgd, SgdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // step = -lr
                                  .Arg<ffi::AnyBuffer>()  // weight decay
                                  .Arg<ffi::AnyBuffer>()  // momentum
                                  .Arg<ffi::AnyBuffer>()  // gradient coefficient
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int64_t>("flags"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxoptAdvRmsprop, RmspropImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // step = -lr
                                  .Arg<ffi::AnyBuffer>()  // weight decay
                                  .Arg<ffi::AnyBuffer>()  // alpha
                                  .Arg<ffi::AnyBuffer>()  // 1 - alpha
                                  .Arg<ffi::AnyBuffer>()  // eps
                                  .Arg<ffi::AnyBuffer>()  // momentum
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int64_t>("flags"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxoptAdvAdagrad, AdagradImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // step = -lr
                                  .Arg<ffi::AnyBuffer>()  // weight decay
                                  .Arg<ffi::AnyBuffer>()  // eps
                                  .Arg<ffi::AnyBuffer>()  // 1 / (1 + (t - 1) lr_decay)
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int64_t>("flags"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxoptAdvAdamax, AdamaxImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // step = -lr
                                  .Arg<ffi::AnyBuffer>()  // weight decay
                                  .Arg<ffi::AnyBuffer>()  // b1
                                  .Arg<ffi::AnyBuffer>()  // 1 - b1
                                  .Arg<ffi::AnyBuffer>()  // b2
                                  .Arg<ffi::AnyBuffer>()  // eps
                                  .Arg<ffi::AnyBuffer>()  // 1 / (1 - b1^t) or 1 - b1^t
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int64_t>("flags"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxoptAdvNadam, NadamImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // step = -lr
                                  .Arg<ffi::AnyBuffer>()  // weight decay
                                  .Arg<ffi::AnyBuffer>()  // b1
                                  .Arg<ffi::AnyBuffer>()  // 1 - b1
                                  .Arg<ffi::AnyBuffer>()  // b2
                                  .Arg<ffi::AnyBuffer>()  // 1 - b2
                                  .Arg<ffi::AnyBuffer>()  // eps
                                  .Arg<ffi::AnyBuffer>()  // 1 / (1 - b2^t) or 1 - b2^t
                                  .Arg<ffi::AnyBuffer>()  // gradient coefficient
                                  .Arg<ffi::AnyBuffer>()  // momentum coefficient
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int64_t>("flags"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxoptAdvRprop, RpropImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // eta_minus
                                  .Arg<ffi::AnyBuffer>()  // eta_plus
                                  .Arg<ffi::AnyBuffer>()  // minimal step size
                                  .Arg<ffi::AnyBuffer>()  // maximal step size
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int64_t>("flags"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxoptAdvRadam, RadamImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // step = -lr
                                  .Arg<ffi::AnyBuffer>()  // weight decay
                                  .Arg<ffi::AnyBuffer>()  // b1
                                  .Arg<ffi::AnyBuffer>()  // 1 - b1
                                  .Arg<ffi::AnyBuffer>()  // b2
                                  .Arg<ffi::AnyBuffer>()  // 1 - b2
                                  .Arg<ffi::AnyBuffer>()  // eps
                                  .Arg<ffi::AnyBuffer>()  // 1 / (1 - b1^t) or 1 - b1^t
                                  .Arg<ffi::AnyBuffer>()  // rectification factor (0: none)
                                  .Arg<ffi::AnyBuffer>()  // rect * sqrt(1 - b2^t)
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int64_t>("flags"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxoptAdvAdadelta, AdadeltaImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // step = -lr
                                  .Arg<ffi::AnyBuffer>()  // weight decay
                                  .Arg<ffi::AnyBuffer>()  // rho
                                  .Arg<ffi::AnyBuffer>()  // 1 - rho
                                  .Arg<ffi::AnyBuffer>()  // eps
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int64_t>("flags"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxoptAdvAsgd, AsgdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // weight decay
                                  .Arg<ffi::AnyBuffer>()  // 1 - lambd * eta
                                  .Arg<ffi::AnyBuffer>()  // eta
                                  .Arg<ffi::AnyBuffer>()  // mu
                                  .Arg<ffi::AnyBuffer>()  // 1 where mu == 1, else 0
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int64_t>("flags"));
