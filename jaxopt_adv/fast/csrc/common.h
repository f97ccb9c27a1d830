// What every kernel family (elementwise.h and its families, came.cc, lr_mask.cc, tam.cc,
// automagic.cc) shares: the thread-pool loop, XLA's maximum and minimum, the dtype
// dispatch, the FFI operand checks and the cosine of two arrays' sums.
// Everything is in an anonymous namespace. build.py compiles the .cc files in a few
// translation units that #include several each, so a name defined in one .cc file must
// not be defined again in another.
#ifndef JAXOPT_ADV_FAST_COMMON_H_
#define JAXOPT_ADV_FAST_COMMON_H_

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Below this many elements in a call the whole call runs on the calling thread.
constexpr int64_t kParallelThreshold = int64_t{1} << 16;

// Runs fn(k) for k in [0, n), on the calling thread and num_threads - 1 helpers; `total`
// is the number of elements the n tasks touch. The caller works too and waits only for
// tasks a helper has already claimed, so it cannot deadlock when it is itself a thread of
// the pool; a helper that starts after the last task was claimed returns at once without
// calling fn.
template <typename Fn>
void ParallelFor(ffi::ThreadPool& pool, int64_t n, int64_t total, Fn fn) {
  const int64_t threads = pool.num_threads();
  if (n <= 1 || total < kParallelThreshold || threads <= 1) {
    for (int64_t k = 0; k < n; ++k) fn(k);
    return;
  }
  struct Shared {
    Fn fn;
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    std::mutex mu;
    std::condition_variable cv;
    explicit Shared(Fn f) : fn(std::move(f)) {}
  };
  auto shared = std::make_shared<Shared>(std::move(fn));
  auto work = [n](Shared& s) {
    for (;;) {
      const int64_t k = s.next.fetch_add(1);
      if (k >= n) return;
      s.fn(k);
      if (s.done.fetch_add(1) + 1 == n) {
        std::lock_guard<std::mutex> lock(s.mu);
        s.cv.notify_all();
      }
    }
  };
  const int64_t helpers = std::min(threads, n) - 1;
  for (int64_t h = 0; h < helpers; ++h) {
    pool.Schedule([shared, work] { work(*shared); });
  }
  work(*shared);
  std::unique_lock<std::mutex> lock(shared->mu);
  shared->cv.wait(lock, [&] { return shared->done.load() == n; });
}

template <typename T>
struct SignMask;
template <>
struct SignMask<float> {
  using Type = uint32_t;
  static constexpr Type kValue = uint32_t{1} << 31;
};
template <>
struct SignMask<double> {
  using Type = uint64_t;
  static constexpr Type kValue = uint64_t{1} << 63;
};

// The bits of `x` read as a `To` of the same size (C++20's std::bit_cast).
template <typename To, typename From>
inline To BitCast(From x) {
  static_assert(sizeof(To) == sizeof(From), "BitCast needs types of one size");
  To y;
  std::memcpy(&y, &x, sizeof y);
  return y;
}

// XLA's maximum: NaN if either operand is NaN, and max(-0, +0) = +0 (for equal operands
// the AND of their bits). Written as selects so that the loop vectorizes.
template <typename T>
inline T XlaMax(T a, T b) {
  using Bits = typename SignMask<T>::Type;
  const T both = BitCast<T>(BitCast<Bits>(a) & BitCast<Bits>(b));
  T r = a > b ? a : b;
  r = a == b ? both : r;
  r = b != b ? b : r;
  return a != a ? a : r;
}

// XLA's minimum: NaN if either operand is NaN, and min(-0, +0) = -0 (for equal operands
// the OR of their bits).
template <typename T>
inline T XlaMin(T a, T b) {
  using Bits = typename SignMask<T>::Type;
  const T either = BitCast<T>(BitCast<Bits>(a) | BitCast<Bits>(b));
  T r = a < b ? a : b;
  r = a == b ? either : r;
  r = b != b ? b : r;
  return a != a ? a : r;
}

template <typename T>
constexpr ffi::DataType kDataType = ffi::DataType::F32;
template <>
constexpr ffi::DataType kDataType<double> = ffi::DataType::F64;

ffi::Error InvalidArgument(const std::string& message) {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument, "jaxopt_adv.fast: " + message);
}

// fn(float{}) or fn(double{}) for a float32 or float64 `type`, else an error: picks the
// instantiation of a kernel for its operands' dtype.
template <typename Fn>
ffi::Error ByDtype(ffi::DataType type, Fn fn) {
  switch (type) {
    case ffi::DataType::F32:
      return fn(float{});
    case ffi::DataType::F64:
      return fn(double{});
    default:
      return InvalidArgument("only float32 and float64 are supported");
  }
}

template <typename T>
ffi::Error ReadScalar(const ffi::AnyBuffer& buffer, T* value) {
  if (buffer.element_type() != kDataType<T> || buffer.element_count() != 1) {
    return InvalidArgument("scalar operands must be 0-d arrays of the leaves' dtype");
  }
  *value = *static_cast<const T*>(buffer.untyped_data());
  return ffi::Error::Success();
}

// The cosine of Automagic's direction control and of TAM's correlation from the sums of
// squares of two arrays and of their product (a norm plus 1e-10 in each denominator).
constexpr double kCosineEps = 1e-10;

inline double Cosine(double aa, double bb, double ab) {
  return ab / ((std::sqrt(aa) + kCosineEps) * (std::sqrt(bb) + kCosineEps));
}

}  // namespace

#endif  // JAXOPT_ADV_FAST_COMMON_H_
