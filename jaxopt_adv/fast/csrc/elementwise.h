// The plumbing of the one-pass torch-exact optimizer steps for XLA:CPU (one source file
// per optimizer family: adam.cc, sgd.cc, ...), called through the XLA FFI.
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

#ifndef JAXOPT_ADV_FAST_ELEMENTWISE_H_
#define JAXOPT_ADV_FAST_ELEMENTWISE_H_

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
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
template <typename T>
inline T FlipSign(T x, typename SignMask<T>::Type mask) {
  return BitCast<T>(BitCast<typename SignMask<T>::Type>(x) ^ mask);
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

// Bit 0 of every kernel's `flags` is maximize (a runtime sign flip); the other bits,
// shifted down by one, select the compiled variant.
constexpr int64_t kMaximize = 1;

// Adam's moments, shared by Adam, NAdam and RAdam: m = b1 mu + (1 - b1) g, or (mu + g) b1 when
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

// The gradient a step uses: g with its sign flipped under maximize, plus wd * p where
// kDecay (torch's coupled, L2 weight decay).
template <bool kDecay, typename S, typename T>
inline T Gradient(const S& s, T p, T g) {
  g = FlipSign(g, s.flip);
  if constexpr (kDecay) g = Mad(s.wd, p, g);
  return g;
}

// The first N input arrays of a leaf (p, g, then the state arrays), for a structured
// binding: `const auto [p_in, g_in] = Inputs<2>(leaf);`.
template <size_t N, typename T>
std::array<const T*, N> Inputs(const Leaf<T>& leaf) {
  std::array<const T*, N> in{};
  for (size_t k = 0; k < N; ++k) in[k] = leaf.in[k];
  return in;
}

// The first N output arrays of a leaf (p, then the state arrays).
template <size_t N, typename T>
std::array<T*, N> Outputs(const Leaf<T>& leaf) {
  std::array<T*, N> out{};
  for (size_t k = 0; k < N; ++k) out[k] = leaf.out[k];
  return out;
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

// Reads the 0-d scalar operands into `fields`, in order.
template <typename T, size_t K>
ffi::Error ReadScalars(const ffi::AnyBuffer* in, const std::array<T*, K>& fields) {
  for (size_t k = 0; k < K; ++k) {
    if (ffi::Error error = ReadScalar(in[k], fields[k]); error.failure()) return error;
  }
  return ffi::Error::Success();
}

// The base of a family's scalar operands: `flip`, the sign mask of maximize (set by
// RunKernel from the flags; not an operand).
template <typename T>
struct Maximize {
  typename SignMask<T>::Type flip;
};

// A family is a struct deriving from ElementwiseFamily<ScalarsT, kVariants[, kArity]>:
//   ScalarsT<T>          derives from Maximize<T>; its Fields() are pointers to the 0-d
//                        scalar operands' fields, in operand order (their number is
//                        kScalars);
//   kVariants            the number of compiled variants (flags >> 1 < kVariants);
//   InArity(variant)     the arrays per leaf in (p, g, then the state arrays): kArity,
//                        unless the family defines its own;
// and the family defines
//   Run<T, F>(s, leaf, lo, hi)   variant F's step of the elements [lo, hi) of a leaf.
// JAXOPT_ADV_ELEMENTWISE_HANDLER(Symbol, Family) exports its FFI handler as `Symbol`.
template <template <typename> class ScalarsT, unsigned Variants, int Arity = 0>
struct ElementwiseFamily {
  template <typename T>
  using Scalars = ScalarsT<T>;
  static constexpr unsigned kVariants = Variants;
  static constexpr size_t kScalars =
      std::tuple_size<decltype(std::declval<ScalarsT<float>&>().Fields())>::value;
  static int InArity(int64_t) { return Arity; }
};

// A table of Family::Run<T, F> for every flag combination F < kVariants, indexed by F.
template <typename Family, typename T, size_t... Fs>
constexpr auto MakeTable(std::index_sequence<Fs...>) {
  using S = typename Family::template Scalars<T>;
  using Fn = void (*)(const S&, const Leaf<T>&, int64_t, int64_t);
  return std::array<Fn, sizeof...(Fs)>{&Family::template Run<T, static_cast<unsigned>(Fs)>...};
}

// Reads the scalars, decodes the leaves, picks the compiled variant for `flags` and runs
// it over all leaves.
template <typename Family, typename T>
ffi::Error RunKernel(ffi::ThreadPool& pool, const ffi::AnyBuffer* in,
                     const ffi::RemainingArgs& args, const ffi::RemainingRets& rets,
                     int64_t flags) {
  typename Family::template Scalars<T> scalars;
  if (ffi::Error error = ReadScalars(in, scalars.Fields()); error.failure()) {
    return error;
  }
  const int64_t variant = flags >> 1;
  const int in_arity = Family::InArity(variant);
  if (flags < 0 || variant >= static_cast<int64_t>(Family::kVariants)) {
    return InvalidArgument("bad flags");
  }
  scalars.flip = (flags & kMaximize) != 0 ? SignMask<T>::kValue : 0;
  std::vector<Leaf<T>> leaves;
  if (ffi::Error error = ReadLeaves<T>(args, rets, in_arity, &leaves); error.failure()) {
    return error;
  }
  static constexpr auto kTable =
      MakeTable<Family, T>(std::make_index_sequence<Family::kVariants>());
  const auto kernel = kTable[static_cast<size_t>(variant)];
  int64_t total = 0;
  std::vector<Chunk> chunks = MakeChunks(leaves, &total);
  RunChunks(pool, std::move(chunks), total,
            [kernel, scalars, leaves = std::move(leaves)](const Chunk& c) {
              kernel(scalars, leaves[c.leaf], c.lo, c.hi);
            });
  return ffi::Error::Success();
}

// The FFI handler of a family: its kScalars scalar operands, then the leaves' arrays;
// the scalars' dtype picks the float32 or float64 instantiation.
template <typename Family, typename Indices = std::make_index_sequence<Family::kScalars>>
struct ElementwiseHandler;

template <typename Family, size_t... Is>
struct ElementwiseHandler<Family, std::index_sequence<Is...>> {
  template <size_t>
  using Scalar = ffi::AnyBuffer;

  ffi::Error operator()(ffi::ThreadPool pool, Scalar<Is>... scalars, ffi::RemainingArgs args,
                        ffi::RemainingRets rets, int64_t flags) const {
    const ffi::AnyBuffer in[] = {scalars...};
    return ByDtype(in[0].element_type(), [&](auto zero) {
      return RunKernel<Family, decltype(zero)>(pool, in, args, rets, flags);
    });
  }
};

// `binding` completed with N more buffer arguments (N >= 1: the scalars), the leaves'
// arrays and the `flags` attribute. (An FFI binding cannot be moved: each step returns
// a new one.)
template <size_t N, typename Binding>
auto BindOperands(Binding binding) {
  if constexpr (N == 1) {
    return std::move(binding)
        .template Arg<ffi::AnyBuffer>()
        .RemainingArgs()
        .RemainingRets()
        .template Attr<int64_t>("flags");
  } else {
    return BindOperands<N - 1>(std::move(binding).template Arg<ffi::AnyBuffer>());
  }
}

// The FFI signature of ElementwiseHandler<Family>.
template <typename Family>
auto ElementwiseBinding() {
  static_assert(Family::kScalars >= 1, "the first scalar operand gives the dtype");
  return BindOperands<Family::kScalars>(ffi::Ffi::Bind().Ctx<ffi::ThreadPool>());
}

}  // namespace

#define JAXOPT_ADV_ELEMENTWISE_HANDLER(symbol, Family) \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(symbol, ElementwiseHandler<Family>(), ElementwiseBinding<Family>())

#endif  // JAXOPT_ADV_FAST_ELEMENTWISE_H_
