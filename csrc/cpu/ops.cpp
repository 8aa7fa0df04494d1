// The C++ CPU ops: checks, allocation, dtype dispatch, and the choice of instruction set for
// the loops (kernels.h, compiled as kernels_base.cpp and kernels_avx2.cpp).
#include <ATen/Parallel.h>

#include "../fastgame.h"

#define FASTGAME_ISA base
#include "kernels.h"
#undef FASTGAME_ISA
namespace fastgame::cpu::base {
FASTGAME_INSTANTIATE(extern template, float)
FASTGAME_INSTANTIATE(extern template, double)
}  // namespace fastgame::cpu::base

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FASTGAME_HAVE_AVX2 1
#define FASTGAME_ISA avx2
#include "kernels.h"
#undef FASTGAME_ISA
namespace fastgame::cpu::avx2 {
FASTGAME_INSTANTIATE(extern template, float)
FASTGAME_INSTANTIATE(extern template, double)
}  // namespace fastgame::cpu::avx2
#endif

namespace fastgame {
namespace {

#ifdef FASTGAME_HAVE_AVX2
bool use_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
}
#define FASTGAME_CPU(fn, ...) (use_avx2() ? cpu::avx2::fn(__VA_ARGS__) : cpu::base::fn(__VA_ARGS__))
#else
#define FASTGAME_CPU(fn, ...) cpu::base::fn(__VA_ARGS__)
#endif

// Below this many elements per thread, waking threads costs more than the loop.
constexpr int64_t kGrain = 1 << 15;

int num_chunks(int64_t n) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n / kGrain)));
}

// A one-element tensor on any device, read as double.
double read(const at::Tensor& t) { return t.item<double>(); }

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> precondition_cpu(
    const at::Tensor& grad, const at::Tensor& square_avg, const at::Tensor& lr, const at::Tensor& step,
    double beta, double eps) {
  check_precondition(grad, square_avg, lr, step);
  auto square_avg_new = at::empty_like(grad), eta = at::empty_like(grad);
  auto sqrt_eta = at::empty_like(grad), eta_grad = at::empty_like(grad);
  // Bias correction in double, then rounded to the vectors' dtype, as the reference does.
  const double scale = read(lr) * std::sqrt(1.0 - std::pow(beta, read(step)));
  const int64_t n = grad.numel();
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "fastgame::precondition", [&] {
    using T = scalar_t;
    FASTGAME_CPU(precondition<T>, grad.const_data_ptr<T>(), square_avg.const_data_ptr<T>(),
                 square_avg_new.mutable_data_ptr<T>(), eta.mutable_data_ptr<T>(), sqrt_eta.mutable_data_ptr<T>(),
                 eta_grad.mutable_data_ptr<T>(), n, num_chunks(n), T(beta), T(1.0 - beta), T(scale), T(eps));
  });
  return {square_avg_new, eta, sqrt_eta, eta_grad};
}

std::tuple<at::Tensor, at::Tensor> cg_matvec_cpu(const at::Tensor& p, const at::Tensor& sqrt_eta,
                                                 const at::Tensor& t) {
  const bool scalar = check_cg_matvec(p, sqrt_eta, t);
  auto ap = at::empty_like(p);
  auto pap = at::empty({}, p.options());
  const int64_t n = p.numel();
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "fastgame::cg_matvec", [&] {
    using T = scalar_t;
    const T* pp = p.const_data_ptr<T>();
    const T* tt = t.const_data_ptr<T>();
    T* out = ap.mutable_data_ptr<T>();
    const double sum = scalar ? FASTGAME_CPU(matvec<T>, pp, T(read(sqrt_eta)), tt, out, n, num_chunks(n))
                              : FASTGAME_CPU(matvec<T>, pp, sqrt_eta.const_data_ptr<T>(), tt, out, n, num_chunks(n));
    pap.fill_(sum);
  });
  return {ap, pap};
}

at::Tensor cg_step_cpu(const at::Tensor& w, const at::Tensor& u, const at::Tensor& r, const at::Tensor& p,
                       const at::Tensor& q, const at::Tensor& ap, const at::Tensor& rr, const at::Tensor& pap) {
  check_cg_step(w, u, r, p, q, ap, rr, pap);
  auto rr_new = at::empty({}, r.options());
  const int64_t n = w.numel(), m = u.numel();
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "fastgame::cg_step", [&] {
    using T = scalar_t;
    const T alpha = safe_div<T>(read(rr), read(pap));  // 0 after exact convergence
    const double sum = FASTGAME_CPU(step<T>, w.mutable_data_ptr<T>(), r.mutable_data_ptr<T>(), p.const_data_ptr<T>(),
                                    ap.const_data_ptr<T>(), alpha, n, num_chunks(n));
    // u (the other player's size) gets its own pass: alpha is already known.
    FASTGAME_CPU(axpy<T>, u.mutable_data_ptr<T>(), q.const_data_ptr<T>(), alpha, m, num_chunks(m));
    rr_new.fill_(sum);
  });
  return rr_new;
}

at::Tensor cg_direction_cpu(const at::Tensor& p, const at::Tensor& r, const at::Tensor& rr_new, const at::Tensor& rr,
                            const at::Tensor& sqrt_eta) {
  const bool scalar = check_cg_direction(p, r, rr_new, rr, sqrt_eta);
  auto sp = at::empty_like(p);
  const int64_t n = p.numel();
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "fastgame::cg_direction", [&] {
    using T = scalar_t;
    const T beta = safe_div<T>(read(rr_new), read(rr));  // 0 after exact convergence
    T* pp = p.mutable_data_ptr<T>();
    const T* rp = r.const_data_ptr<T>();
    T* out = sp.mutable_data_ptr<T>();
    if (scalar) {
      FASTGAME_CPU(direction<T>, pp, rp, T(read(sqrt_eta)), out, beta, n, num_chunks(n));
    } else {
      FASTGAME_CPU(direction<T>, pp, rp, sqrt_eta.const_data_ptr<T>(), out, beta, n, num_chunks(n));
    }
  });
  return sp;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgame, CPU, m) {
  m.impl("precondition", &precondition_cpu);
  m.impl("cg_matvec", &cg_matvec_cpu);
  m.impl("cg_step", &cg_step_cpu);
  m.impl("cg_direction", &cg_direction_cpu);
}

}  // namespace fastgame
