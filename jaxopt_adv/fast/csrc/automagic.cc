// Automagic-CameAMP's scaling (jaxopt_adv.automagic.body.scale_by_automagic_came, factored,
// CAME on) of leaves with ndim >= 2 for XLA:CPU, called through the XLA FFI: CAME's
// factored second moment and RMS clip (came.h), then torque-aware momentum (early phase)
// or the decaying EMA (later), then CAME's confidence. XLA compiles the step into a
// dozen whole-leaf loops and reductions per leaf, both phases' momenta computed and
// selected; here a leaf takes the three passes of automagic.h, which form the new
// momentum with only its phase's rule, and a fourth:
//   4. out = m' rsqrt(R'_i / mean R') rsqrt(C'_j)                    reads m; writes out
// Sums are accumulated in double, so results agree with the XLA path to rounding, not
// bit for bit.

#include <cstdint>
#include <vector>

#include "automagic.h"
#include "came.h"
#include "common.h"

namespace {

template <typename T>
ffi::Error AutomagicTyped(ffi::ThreadPool& pool, const ffi::AnyBuffer* in,
                          const ffi::AnyBuffer& leaf_options, ffi::RemainingArgs args,
                          ffi::RemainingRets rets) {
  T values[kAutomagicScalars];
  for (int k = 0; k < kAutomagicScalars; ++k) {
    if (ffi::Error error = ReadScalar(in[k], values + k); error.failure()) return error;
  }
  const AutomagicScalars<T> s = AutomagicScalarsOf(values);
  std::vector<LeafOptions<T>> options;
  if (ffi::Error error = ReadLeafOptions(leaf_options, args.size() / (kSlots + 1), &options);
      error.failure()) {
    return error;
  }
  std::vector<CameLeaf<T>> leaves;
  if (ffi::Error error = ReadAutomagicLeaves(args, rets, options, &leaves); error.failure()) {
    return error;
  }
  int64_t partial_size = 0, total = 0;
  const std::vector<CameTask> tasks = AutomagicTasks(leaves, &partial_size, &total);
  ScaleToMomentum(pool, s, options, tasks, partial_size, total, leaves);
  // 4. confidence-scaled momentum
  ScaleMomentum(pool, tasks, total, leaves);
  return ffi::Error::Success();
}

ffi::Error AutomagicImpl(ffi::ThreadPool pool, ffi::AnyBuffer early, ffi::AnyBuffer b1,
                         ffi::AnyBuffer c1, ffi::AnyBuffer b2, ffi::AnyBuffer c2,
                         ffi::AnyBuffer b3, ffi::AnyBuffer c3, ffi::AnyBuffer eps1,
                         ffi::AnyBuffer eps2, ffi::AnyBuffer clip, ffi::AnyBuffer tam_b1,
                         ffi::AnyBuffer keep, ffi::AnyBuffer leaf_options,
                         ffi::RemainingArgs args, ffi::RemainingRets rets) {
  const ffi::AnyBuffer in[] = {early, b1, c1, b2, c2, b3, c3, eps1, eps2, clip, tam_b1, keep};
  return ByDtype(b1.element_type(), [&](auto zero) {
    return AutomagicTyped<decltype(zero)>(pool, in, leaf_options, args, rets);
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxoptAdvAutomagic, AutomagicImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // 1 in the early phase, else 0
                                  .Arg<ffi::AnyBuffer>()  // b1_t
                                  .Arg<ffi::AnyBuffer>()  // 1 - b1_t
                                  .Arg<ffi::AnyBuffer>()  // b2
                                  .Arg<ffi::AnyBuffer>()  // 1 - b2
                                  .Arg<ffi::AnyBuffer>()  // b3
                                  .Arg<ffi::AnyBuffer>()  // 1 - b3
                                  .Arg<ffi::AnyBuffer>()  // eps1
                                  .Arg<ffi::AnyBuffer>()  // eps2
                                  .Arg<ffi::AnyBuffer>()  // clip threshold
                                  .Arg<ffi::AnyBuffer>()  // TAM's momentum
                                  .Arg<ffi::AnyBuffer>()  // 1 - TAM's decay
                                  .Arg<ffi::AnyBuffer>()  // per leaf: emphasis, per-row s
                                  .RemainingArgs()
                                  .RemainingRets());
