// Automagic's per-element learning-rate mask (jaxopt_adv.automagic.lr_mask) in one pass per
// leaf, for XLA:CPU through the XLA FFI.
//
// XLA compiles the mask step of a leaf into four whole-leaf loops (the new mask, the new
// polarity, the scaled update, the sum for avg_lr) plus a copy of the polarity; this
// kernel reads the update, the sign source, the mask and the polarity once and writes
// the scaled update, the mask and the polarity once, and sums the effective learning
// rate on the way. The elementwise arithmetic has no multiply-add to contract (a sum, a
// select, a clamp and products), so the outputs are XLA's bit for bit; the sum is taken
// in double per fixed chunk, so avg_lr agrees with XLA's mean to rounding and does not
// depend on the thread count.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "common.h"

namespace {

// The thread pool's unit of work, and of the sum's fixed order.
constexpr int64_t kMaskChunk = int64_t{1} << 15;

template <typename T>
struct MaskScalars {
  // warm != 0: a warmup step (the mask adapts); else the mask is frozen and scaled
  T warm, increase, ratio, min_lr, max_lr;
};

// in: u, source (absent when the sign source is u itself), mask, polarity, bump (one
// per row of `cols` elements); out: u * lr, mask, polarity, and the sum of lr.
template <typename T>
struct MaskLeaf {
  const T* u;
  const T* source;
  const T* mask;
  const bool* polarity;
  const T* bump;
  int64_t size;
  int64_t cols;
  T* out;
  T* new_mask;
  bool* new_polarity;
  T* sum;
};

struct MaskChunk {
  int64_t leaf;
  int64_t lo;
  int64_t hi;
};

// XLA's clamp, minimum(max_lr, maximum(min_lr, x)): NaN stays NaN, and of two equal
// operands maximum takes the AND of the bits (+0 over -0), minimum the OR. kExactClamp
// spells that out with XlaMax / XlaMin; otherwise (min_lr and max_lr not NaN, min_lr not
// -0, max_lr not 0, as every validated setting) three selects give the same bits at a
// third of the cost.
template <typename T, bool kExactClamp>
inline T Clamp(T x, T min_lr, T max_lr) {
  if constexpr (kExactClamp) {
    return XlaMin(max_lr, XlaMax(min_lr, x));
  } else {
    T r = x > min_lr ? x : min_lr;
    r = r < max_lr ? r : max_lr;
    return x != x ? x : r;
  }
}

// One row's elements (they share a bump) in warmup: the mask adapts.
template <typename T, bool kExactClamp>
double WarmRow(const MaskScalars<T>& s, const MaskLeaf<T>& l, T bump, int64_t lo, int64_t hi) {
  // locals, so that the compiler need not reload them after every store
  const T* u = l.u;
  const T* source = l.source;
  const T* mask_in = l.mask;
  const bool* polarity_in = l.polarity;
  T* out = l.out;
  T* mask_out = l.new_mask;
  bool* polarity_out = l.new_polarity;
  const T increase = s.increase;
  const T min_lr = s.min_lr;
  const T max_lr = s.max_lr;
  double total = 0;
#pragma omp simd reduction(+ : total)
  for (int64_t i = lo; i < hi; ++i) {
    const bool polarity = source[i] > T(0);
    const T step = polarity_in[i] == polarity ? bump : -bump;
    const T lr = Clamp<T, kExactClamp>((mask_in[i] + step) + increase, min_lr, max_lr);
    mask_out[i] = lr;
    polarity_out[i] = polarity;
    out[i] = u[i] * lr;
    total += static_cast<double>(lr);
  }
  return total;
}

#ifdef __AVX2__
// WarmRow<float, false> in AVX2: GCC's own vectorisation of that loop spends most of its
// time converting between the polarity bytes and float lanes (2.5x the memory-bound time
// on this project's machines); here 8 polarity bytes are widened and narrowed with one
// instruction each. Same operations, same results; the sum's order differs (to rounding).
double WarmRowAvx2(const MaskScalars<float>& s, const MaskLeaf<float>& l, float bump,
                   int64_t lo, int64_t hi) {
  const uint8_t* polarity_in = reinterpret_cast<const uint8_t*>(l.polarity);
  uint8_t* polarity_out = reinterpret_cast<uint8_t*>(l.new_polarity);
  const __m256 v_bump = _mm256_set1_ps(bump);
  const __m256 v_increase = _mm256_set1_ps(s.increase);
  const __m256 v_min = _mm256_set1_ps(s.min_lr);
  const __m256 v_max = _mm256_set1_ps(s.max_lr);
  const __m256 v_sign = _mm256_set1_ps(-0.0f);
  const __m256 v_zero = _mm256_setzero_ps();
  __m256d sum_low = _mm256_setzero_pd();
  __m256d sum_high = _mm256_setzero_pd();
  int64_t i = lo;
  for (; i + 8 <= hi; i += 8) {
    const __m256 polarity = _mm256_cmp_ps(_mm256_loadu_ps(l.source + i), v_zero, _CMP_GT_OQ);
    const __m128i last_bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(polarity_in + i));
    // 0 / 1 -> all zeros / all ones
    const __m256i last = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_cvtepu8_epi32(last_bytes));
    const __m256 disagree = _mm256_xor_ps(polarity, _mm256_castsi256_ps(last));
    const __m256 step = _mm256_xor_ps(v_bump, _mm256_and_ps(disagree, v_sign));  // -bump there
    const __m256 x = _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(l.mask + i), step), v_increase);
    // Clamp<float, false>: x > min ? x : min, then < max ? . : max, then NaN x stays
    __m256 lr = _mm256_blendv_ps(v_min, x, _mm256_cmp_ps(x, v_min, _CMP_GT_OQ));
    lr = _mm256_blendv_ps(v_max, lr, _mm256_cmp_ps(lr, v_max, _CMP_LT_OQ));
    lr = _mm256_blendv_ps(lr, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    _mm256_storeu_ps(l.new_mask + i, lr);
    _mm256_storeu_ps(l.out + i, _mm256_mul_ps(_mm256_loadu_ps(l.u + i), lr));
    const __m256i bits = _mm256_srli_epi32(_mm256_castps_si256(polarity), 31);  // 0 / 1
    const __m128i words =
        _mm_packus_epi32(_mm256_castsi256_si128(bits), _mm256_extracti128_si256(bits, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(polarity_out + i), _mm_packus_epi16(words, words));
    sum_low = _mm256_add_pd(sum_low, _mm256_cvtps_pd(_mm256_castps256_ps128(lr)));
    sum_high = _mm256_add_pd(sum_high, _mm256_cvtps_pd(_mm256_extractf128_ps(lr, 1)));
  }
  double lanes[4];
  _mm256_storeu_pd(lanes, _mm256_add_pd(sum_low, sum_high));
  return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + WarmRow<float, false>(s, l, bump, i, hi);
}
#endif

// After warmup: the mask is frozen and scaled (the mask and the polarity are only
// copied, and not at all when updated in place).
template <typename T>
double FrozenRange(const MaskScalars<T>& s, const MaskLeaf<T>& l, int64_t lo, int64_t hi) {
  const T* u = l.u;
  const T* mask = l.mask;
  T* out = l.out;
  const T ratio = s.ratio;
  if (l.new_mask != l.mask) std::copy(mask + lo, mask + hi, l.new_mask + lo);
  if (l.new_polarity != l.polarity) {
    std::copy(l.polarity + lo, l.polarity + hi, l.new_polarity + lo);
  }
  double total = 0;
#pragma omp simd reduction(+ : total)
  for (int64_t i = lo; i < hi; ++i) {
    const T lr = mask[i] * ratio;
    out[i] = u[i] * lr;
    total += static_cast<double>(lr);
  }
  return total;
}

template <typename T, bool kExactClamp>
double WarmRange(const MaskScalars<T>& s, const MaskLeaf<T>& l, int64_t lo, int64_t hi) {
  double total = 0;
  for (int64_t i = lo; i < hi;) {
    const int64_t row = i / l.cols;
    const int64_t end = std::min(hi, (row + 1) * l.cols);
#ifdef __AVX2__
    if constexpr (std::is_same_v<T, float> && !kExactClamp) {
      total += WarmRowAvx2(s, l, l.bump[row], i, end);
    } else {
      total += WarmRow<T, kExactClamp>(s, l, l.bump[row], i, end);
    }
#else
    total += WarmRow<T, kExactClamp>(s, l, l.bump[row], i, end);
#endif
    i = end;
  }
  return total;
}

template <typename T>
double MaskRange(const MaskScalars<T>& s, const MaskLeaf<T>& l, int64_t lo, int64_t hi) {
  if (s.warm == T(0)) return FrozenRange<T>(s, l, lo, hi);
  const bool plain = s.min_lr == s.min_lr && s.max_lr == s.max_lr && s.max_lr != T(0) &&
                     !(s.min_lr == T(0) && std::signbit(s.min_lr));
  return plain ? WarmRange<T, false>(s, l, lo, hi) : WarmRange<T, true>(s, l, lo, hi);
}

template <typename T>
ffi::Error ReadMaskLeaves(const ffi::RemainingArgs& args, const ffi::RemainingRets& rets,
                          bool update_source, std::vector<MaskLeaf<T>>* leaves) {
  const int kIn = update_source ? 4 : 5;
  constexpr int kOut = 4;
  if (args.size() % kIn != 0 || rets.size() * kIn != args.size() * kOut) {
    return InvalidArgument("operand and result counts do not match the mask's state");
  }
  const size_t count = args.size() / kIn;
  leaves->resize(count);
  for (size_t l = 0; l < count; ++l) {
    std::vector<ffi::AnyBuffer> in;
    for (int a = 0; a < kIn; ++a) {
      auto buffer = args.get<ffi::AnyBuffer>(l * kIn + a);
      if (buffer.has_error()) return buffer.error();
      in.push_back(*buffer);
      if (a == 0 && update_source) in.push_back(*buffer);  // the source is u
    }
    std::vector<ffi::Result<ffi::AnyBuffer>> out;
    for (int r = 0; r < kOut; ++r) {
      auto result = rets.get<ffi::AnyBuffer>(l * kOut + r);
      if (result.has_error()) return result.error();
      out.push_back(*result);
    }
    const int64_t size = static_cast<int64_t>(in[0].element_count());
    const int64_t rows = static_cast<int64_t>(in[4].element_count());
    for (int a : {0, 1, 2}) {
      if (in[a].element_type() != kDataType<T> ||
          static_cast<int64_t>(in[a].element_count()) != size) {
        return InvalidArgument("update, sign source and mask must share dtype and size");
      }
    }
    if (in[3].element_type() != ffi::DataType::PRED ||
        static_cast<int64_t>(in[3].element_count()) != size) {
      return InvalidArgument("the polarity must be a bool array of the leaf's size");
    }
    if (in[4].element_type() != kDataType<T> || rows < 1 || size % rows != 0) {
      return InvalidArgument("the bump must hold one value per row of the leaf");
    }
    if (out[0]->element_type() != kDataType<T> || out[1]->element_type() != kDataType<T> ||
        out[2]->element_type() != ffi::DataType::PRED || out[3]->element_type() != kDataType<T> ||
        static_cast<int64_t>(out[0]->element_count()) != size ||
        static_cast<int64_t>(out[1]->element_count()) != size ||
        static_cast<int64_t>(out[2]->element_count()) != size ||
        out[3]->element_count() != 1) {
      return InvalidArgument("a result differs in dtype or size from its leaf");
    }
    MaskLeaf<T>& leaf = (*leaves)[l];
    leaf.u = static_cast<const T*>(in[0].untyped_data());
    leaf.source = static_cast<const T*>(in[1].untyped_data());
    leaf.mask = static_cast<const T*>(in[2].untyped_data());
    leaf.polarity = static_cast<const bool*>(in[3].untyped_data());
    leaf.bump = static_cast<const T*>(in[4].untyped_data());
    leaf.size = size;
    leaf.cols = size / rows;
    leaf.out = static_cast<T*>(out[0]->untyped_data());
    leaf.new_mask = static_cast<T*>(out[1]->untyped_data());
    leaf.new_polarity = static_cast<bool*>(out[2]->untyped_data());
    leaf.sum = static_cast<T*>(out[3]->untyped_data());
  }
  return ffi::Error::Success();
}

template <typename T>
ffi::Error MaskTyped(ffi::ThreadPool& pool, const ffi::AnyBuffer* in, ffi::RemainingArgs args,
                     ffi::RemainingRets rets, bool update_source) {
  MaskScalars<T> s;
  const std::array<T*, 5> fields = {&s.warm, &s.increase, &s.ratio, &s.min_lr, &s.max_lr};
  for (size_t k = 0; k < fields.size(); ++k) {
    if (ffi::Error error = ReadScalar(in[k], fields[k]); error.failure()) return error;
  }
  std::vector<MaskLeaf<T>> leaves;
  if (ffi::Error error = ReadMaskLeaves<T>(args, rets, update_source, &leaves);
      error.failure()) {
    return error;
  }
  std::vector<MaskChunk> chunks;
  int64_t total = 0;
  for (int64_t l = 0; l < static_cast<int64_t>(leaves.size()); ++l) {
    total += leaves[l].size;
    for (int64_t lo = 0; lo < leaves[l].size; lo += kMaskChunk) {
      chunks.push_back({l, lo, std::min(leaves[l].size, lo + kMaskChunk)});
    }
  }
  std::vector<double> partial(chunks.size(), 0.0);
  ParallelFor(pool, static_cast<int64_t>(chunks.size()), total, [&](int64_t k) {
    const MaskChunk& c = chunks[k];
    partial[k] = MaskRange<T>(s, leaves[c.leaf], c.lo, c.hi);
  });
  std::vector<double> sums(leaves.size(), 0.0);
  for (size_t k = 0; k < chunks.size(); ++k) sums[chunks[k].leaf] += partial[k];
  for (size_t l = 0; l < leaves.size(); ++l) *leaves[l].sum = static_cast<T>(sums[l]);
  return ffi::Error::Success();
}

ffi::Error MaskImpl(ffi::ThreadPool pool, ffi::AnyBuffer warm, ffi::AnyBuffer increase,
                    ffi::AnyBuffer ratio, ffi::AnyBuffer min_lr, ffi::AnyBuffer max_lr,
                    ffi::RemainingArgs args, ffi::RemainingRets rets, int64_t update_source) {
  const ffi::AnyBuffer in[] = {warm, increase, ratio, min_lr, max_lr};
  return ByDtype(warm.element_type(), [&](auto zero) {
    return MaskTyped<decltype(zero)>(pool, in, args, rets, update_source != 0);
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxoptAdvLrMask, MaskImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // 1 in warmup, else 0
                                  .Arg<ffi::AnyBuffer>()  // the group-lr increase
                                  .Arg<ffi::AnyBuffer>()  // the frozen mask's factor
                                  .Arg<ffi::AnyBuffer>()  // min_lr
                                  .Arg<ffi::AnyBuffer>()  // max_lr
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int64_t>("update_source"));
