// CUDA kernels of the fused ops. Each op is one kernel launch that touches every vector
// element once: 16-byte vector loads/stores when every pointer allows them, a grid-stride
// loop over a grid sized to fill the GPU, and reductions as warp shuffles -> one value per
// block -> the last block to finish adds the block values in a fixed order (deterministic;
// the only extra work is a 4-byte cudaMemsetAsync of the block counter).
//
// Scalars produced on the device (rr, pAp, lr, step) are read by the kernels through pointers,
// never copied to the host, so the ops can be captured in a CUDA graph.
#include <Python.h>

// c10 headers only (not ATen/cuda/CUDAContext.h): no cuBLAS/cuSPARSE headers needed to build.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <map>
#include <mutex>
#include <utility>

#include "../fastgame.h"

namespace fastgame {
namespace {

constexpr int kThreads = 256;
constexpr int kBlocksPerSM = 8;  // 2048 resident threads per SM on sm_80 / sm_90

// N elements of T moved as one 16-byte (or, for N = 1, scalar) access.
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <int N, typename T>
__device__ __forceinline__ Pack<T, N> load(const T* p, int64_t i) {
  return *reinterpret_cast<const Pack<T, N>*>(p + i);
}

template <int N, typename T>
__device__ __forceinline__ void store(T* p, int64_t i, const Pack<T, N>& x) {
  *reinterpret_cast<Pack<T, N>*>(p + i) = x;
}

// sqrt_eta: a vector (loaded with the other operands) or one value for all elements.
template <typename T, int N, bool SCALAR>
__device__ __forceinline__ Pack<T, N> load_eta(const T* s, T s0, int64_t i) {
  if constexpr (SCALAR) {
    Pack<T, N> x;
#pragma unroll
    for (int k = 0; k < N; ++k) x.v[k] = s0;
    return x;
  } else {
    return load<N>(s, i);
  }
}

// Sum over the block; the result is valid in thread 0.
__device__ __forceinline__ double block_sum(double v) {
  __shared__ double warp_sums[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // warp_sums may still be read by a previous call
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kThreads / 32 ? warp_sums[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  }
  return v;
}

// Second stage of a grid reduction inside the same launch. `work` holds a counter (zero at
// the launch; the last block sets it back to zero, so a workspace can be reused without a
// memset) followed by one partial per block.
template <typename T>
__device__ void grid_sum(double v, double* work, T* out) {
  unsigned* counter = reinterpret_cast<unsigned*>(work);
  double* partial = work + 1;
  __shared__ bool last;
  v = block_sum(v);
  if (threadIdx.x == 0) {
    partial[blockIdx.x] = v;
    __threadfence();  // publish the partial before counting this block as done
    last = atomicAdd(counter, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  double s = 0.0;
  for (int i = threadIdx.x; i < gridDim.x; i += kThreads) s += __ldcg(partial + i);  // L2, not stale L1
  s = block_sum(s);
  if (threadIdx.x == 0) {
    *out = static_cast<T>(s);
    *counter = 0u;  // every block has counted: ready for the next launch on this stream
  }
}

// Loop helpers: packs over [0, n - n % N), then the tail elements one by one.
#define FASTGAME_GRID_STRIDE(i, n, N)                                                               \
  for (int64_t i = (int64_t(blockIdx.x) * kThreads + threadIdx.x) * N; i + N <= (n);              \
       i += int64_t(gridDim.x) * kThreads * N)
#define FASTGAME_TAIL(i, n, N)                                                                      \
  for (int64_t i = (n) / N * N + int64_t(blockIdx.x) * kThreads + threadIdx.x; i < (n);           \
       i += int64_t(gridDim.x) * kThreads)

// ---- kernels ----

template <typename T, int N>
__global__ void __launch_bounds__(kThreads) precondition_kernel(
    const T* __restrict__ g, const T* __restrict__ v, T* __restrict__ vn, T* __restrict__ eta,
    T* __restrict__ sqrt_eta, T* __restrict__ eta_g, const double* __restrict__ lr,
    const double* __restrict__ step, int64_t n, double beta, double eps) {
  // Bias correction from device scalars, in double, rounded to T as the reference does.
  const T scale = static_cast<T>(*lr * sqrt(1.0 - pow(beta, *step)));
  const T b = beta, omb = 1.0 - beta, e = eps;
  auto one = [&](T gi, T vi, T& a, T& h, T& sh, T& hg) {
    a = vi * b + omb * gi * gi;
    h = scale / (sqrt(a) + e);
    sh = sqrt(h);
    hg = h * gi;
  };
  FASTGAME_GRID_STRIDE(i, n, N) {
    const auto gp = load<N>(g, i), vp = load<N>(v, i);
    Pack<T, N> a, h, sh, hg;
#pragma unroll
    for (int k = 0; k < N; ++k) one(gp.v[k], vp.v[k], a.v[k], h.v[k], sh.v[k], hg.v[k]);
    store<N>(vn, i, a);
    store<N>(eta, i, h);
    store<N>(sqrt_eta, i, sh);
    store<N>(eta_g, i, hg);
  }
  FASTGAME_TAIL(i, n, N) { one(g[i], v[i], vn[i], eta[i], sqrt_eta[i], eta_g[i]); }
}

template <typename T, int N, bool SCALAR>
__global__ void __launch_bounds__(kThreads) cg_matvec_kernel(
    const T* __restrict__ p, const T* __restrict__ s, const T* __restrict__ t, T* __restrict__ ap,
    int64_t n, double* work, T* pap) {
  const T s0 = SCALAR ? *s : T(0);
  double acc = 0.0;
  FASTGAME_GRID_STRIDE(i, n, N) {
    const auto pp = load<N>(p, i), tp = load<N>(t, i), sp = load_eta<T, N, SCALAR>(s, s0, i);
    Pack<T, N> a;
#pragma unroll
    for (int k = 0; k < N; ++k) {
      a.v[k] = pp.v[k] + sp.v[k] * tp.v[k];
      acc += double(pp.v[k]) * double(a.v[k]);
    }
    store<N>(ap, i, a);
  }
  FASTGAME_TAIL(i, n, N) {
    const T a = p[i] + (SCALAR ? s0 : s[i]) * t[i];
    ap[i] = a;
    acc += double(p[i]) * double(a);
  }
  grid_sum(acc, work, pap);
}

template <typename T, int N>
__global__ void __launch_bounds__(kThreads) cg_step_kernel(
    T* __restrict__ w, T* __restrict__ u, T* __restrict__ r, const T* __restrict__ p,
    const T* __restrict__ q, const T* __restrict__ ap, const T* __restrict__ rr, const T* __restrict__ pap,
    int64_t n, int64_t m, double* work, T* rr_new) {
  const T alpha = safe_div(*rr, *pap);  // 0 after exact convergence
  double acc = 0.0;
  FASTGAME_GRID_STRIDE(i, n, N) {
    auto wp = load<N>(w, i), rp = load<N>(r, i);
    const auto pp = load<N>(p, i), app = load<N>(ap, i);
#pragma unroll
    for (int k = 0; k < N; ++k) {
      wp.v[k] += alpha * pp.v[k];
      rp.v[k] -= alpha * app.v[k];
      acc += double(rp.v[k]) * double(rp.v[k]);
    }
    store<N>(w, i, wp);
    store<N>(r, i, rp);
  }
  FASTGAME_TAIL(i, n, N) {
    w[i] += alpha * p[i];
    const T ri = r[i] - alpha * ap[i];
    r[i] = ri;
    acc += double(ri) * double(ri);
  }
  // u, q have the other player's size m: same launch, same alpha.
  FASTGAME_GRID_STRIDE(i, m, N) {
    auto up = load<N>(u, i);
    const auto qp = load<N>(q, i);
#pragma unroll
    for (int k = 0; k < N; ++k) up.v[k] += alpha * qp.v[k];
    store<N>(u, i, up);
  }
  FASTGAME_TAIL(i, m, N) { u[i] += alpha * q[i]; }
  grid_sum(acc, work, rr_new);
}

template <typename T, int N, bool SCALAR>
__global__ void __launch_bounds__(kThreads) cg_direction_kernel(
    T* __restrict__ p, const T* __restrict__ r, const T* __restrict__ rr_new, const T* __restrict__ rr,
    const T* __restrict__ s, T* __restrict__ out, int64_t n) {
  const T beta = safe_div(*rr_new, *rr);  // 0 after exact convergence
  const T s0 = SCALAR ? *s : T(0);
  FASTGAME_GRID_STRIDE(i, n, N) {
    auto pp = load<N>(p, i);
    const auto rp = load<N>(r, i), sp = load_eta<T, N, SCALAR>(s, s0, i);
    Pack<T, N> o;
#pragma unroll
    for (int k = 0; k < N; ++k) {
      pp.v[k] = pp.v[k] * beta + rp.v[k];
      o.v[k] = sp.v[k] * pp.v[k];
    }
    store<N>(p, i, pp);
    store<N>(out, i, o);
  }
  FASTGAME_TAIL(i, n, N) {
    const T d = p[i] * beta + r[i];
    p[i] = d;
    out[i] = (SCALAR ? s0 : s[i]) * d;
  }
}

// ---- host side ----

int grid_for(int64_t n) {
  static thread_local int sms = -1, device = -1;
  const int current = c10::cuda::current_device();
  if (device != current) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, current));
    device = current;
  }
  const int64_t wanted = (n + kThreads * 4 - 1) / (kThreads * 4);
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(wanted, int64_t(sms) * kBlocksPerSM)));
}

// 16-byte accesses need every pointer 16-byte aligned (views into a flat buffer may not be).
bool aligned16(std::initializer_list<const at::Tensor*> ts) {
  for (auto* t : ts)
    if (reinterpret_cast<uintptr_t>(t->data_ptr()) % 16 != 0) return false;
  return true;
}

// A one-element tensor as a device scalar of the given dtype (no copy when it already is one).
at::Tensor device_scalar(const at::Tensor& t, const at::Tensor& like, at::ScalarType dtype) {
  if (t.scalar_type() == dtype && t.device() == like.device()) return t;  // the usual case: no dispatch
  return t.to(like.device(), dtype).reshape({});
}

// Counter (zero) + one partial per block, for grid_sum. Outside graph capture: one workspace
// per (device, stream), kept for the process, whose counter each launch leaves at zero -- no
// memset launch per op. Kernels on one stream run in order, so they can share it. While a
// graph is captured: a fresh workspace whose zeroing is part of the graph.
at::Tensor reduction_workspace(int blocks, const at::Tensor& like) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  cudaStreamCaptureStatus capturing;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &capturing));
  if (capturing != cudaStreamCaptureStatusNone) {
    auto work = at::empty({blocks + 1}, like.options().dtype(at::kDouble));
    C10_CUDA_CHECK(cudaMemsetAsync(work.data_ptr(), 0, sizeof(double), stream));
    return work;
  }
  static std::mutex mutex;
  static auto* cache = new std::map<std::pair<int, int64_t>, at::Tensor>();  // never freed: outlives exit
  const std::lock_guard<std::mutex> lock(mutex);
  auto& work = (*cache)[{int(stream.device_index()), int64_t(stream.id())}];
  if (!work.defined() || work.numel() < blocks + 1) {
    // Zeroed on this stream, before any kernel of this stream can use it.
    work = at::zeros({std::max<int64_t>(blocks + 1, 1025)}, like.options().dtype(at::kDouble));
  }
  return work;
}

template <typename F>
void with_pack(bool vec, size_t elem, const F& f) {
  // N = 16 / sizeof(T) when aligned: float4-sized packs for float, double2-sized for double.
  if (vec && elem == 4) f(std::integral_constant<int, 4>{});
  else if (vec && elem == 8) f(std::integral_constant<int, 2>{});
  else f(std::integral_constant<int, 1>{});
}

template <typename F>
void with_scalar(bool scalar, const F& f) {
  if (scalar) f(std::true_type{});
  else f(std::false_type{});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> precondition_cuda(
    const at::Tensor& grad, const at::Tensor& square_avg, const at::Tensor& lr, const at::Tensor& step,
    double beta, double eps) {
  check_precondition(grad, square_avg, lr, step);
  const c10::cuda::CUDAGuard guard(grad.device());
  auto vn = at::empty_like(grad), eta = at::empty_like(grad), se = at::empty_like(grad), eg = at::empty_like(grad);
  const auto lr_d = device_scalar(lr, grad, at::kDouble), step_d = device_scalar(step, grad, at::kDouble);
  const int64_t n = grad.numel();
  if (n == 0) return {vn, eta, se, eg};
  const bool vec = aligned16({&grad, &square_avg, &vn, &eta, &se, &eg});
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "fastgame::precondition", [&] {
    with_pack(vec, sizeof(scalar_t), [&](auto N) {
      precondition_kernel<scalar_t, N()><<<grid_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          grad.const_data_ptr<scalar_t>(), square_avg.const_data_ptr<scalar_t>(), vn.mutable_data_ptr<scalar_t>(),
          eta.mutable_data_ptr<scalar_t>(), se.mutable_data_ptr<scalar_t>(), eg.mutable_data_ptr<scalar_t>(),
          lr_d.const_data_ptr<double>(), step_d.const_data_ptr<double>(), n, beta, eps);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {vn, eta, se, eg};
}

std::tuple<at::Tensor, at::Tensor> cg_matvec_cuda(const at::Tensor& p, const at::Tensor& sqrt_eta,
                                                  const at::Tensor& t) {
  const bool scalar = check_cg_matvec(p, sqrt_eta, t);
  const c10::cuda::CUDAGuard guard(p.device());
  const auto s = scalar ? device_scalar(sqrt_eta, p, p.scalar_type()) : sqrt_eta;
  auto ap = at::empty_like(p);
  auto pap = at::empty({}, p.options());
  const int64_t n = p.numel();
  const int blocks = grid_for(n);
  auto work = reduction_workspace(blocks, p);
  const bool vec = aligned16({&p, &t, &ap}) && (scalar || aligned16({&s}));
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "fastgame::cg_matvec", [&] {
    with_pack(vec, sizeof(scalar_t), [&](auto N) {
      with_scalar(scalar, [&](auto S) {
        cg_matvec_kernel<scalar_t, N(), S()><<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            p.const_data_ptr<scalar_t>(), s.const_data_ptr<scalar_t>(), t.const_data_ptr<scalar_t>(),
            ap.mutable_data_ptr<scalar_t>(), n, work.mutable_data_ptr<double>(), pap.mutable_data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
  return {ap, pap};
}

at::Tensor cg_step_cuda(const at::Tensor& w, const at::Tensor& u, const at::Tensor& r, const at::Tensor& p,
                        const at::Tensor& q, const at::Tensor& ap, const at::Tensor& rr, const at::Tensor& pap) {
  check_cg_step(w, u, r, p, q, ap, rr, pap);
  const c10::cuda::CUDAGuard guard(w.device());
  const auto rr_d = device_scalar(rr, w, w.scalar_type()), pap_d = device_scalar(pap, w, w.scalar_type());
  auto rr_new = at::empty({}, w.options());
  const int64_t n = w.numel(), m = u.numel();
  const int blocks = grid_for(std::max(n, m));
  auto work = reduction_workspace(blocks, w);
  const bool vec = aligned16({&w, &u, &r, &p, &q, &ap});
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "fastgame::cg_step", [&] {
    with_pack(vec, sizeof(scalar_t), [&](auto N) {
      cg_step_kernel<scalar_t, N()><<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          w.mutable_data_ptr<scalar_t>(), u.mutable_data_ptr<scalar_t>(), r.mutable_data_ptr<scalar_t>(),
          p.const_data_ptr<scalar_t>(), q.const_data_ptr<scalar_t>(), ap.const_data_ptr<scalar_t>(),
          rr_d.const_data_ptr<scalar_t>(), pap_d.const_data_ptr<scalar_t>(), n, m, work.mutable_data_ptr<double>(),
          rr_new.mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return rr_new;
}

at::Tensor cg_direction_cuda(const at::Tensor& p, const at::Tensor& r, const at::Tensor& rr_new,
                             const at::Tensor& rr, const at::Tensor& sqrt_eta) {
  const bool scalar = check_cg_direction(p, r, rr_new, rr, sqrt_eta);
  const c10::cuda::CUDAGuard guard(p.device());
  const auto s = scalar ? device_scalar(sqrt_eta, p, p.scalar_type()) : sqrt_eta;
  const auto rr_new_d = device_scalar(rr_new, p, p.scalar_type()), rr_d = device_scalar(rr, p, p.scalar_type());
  auto out = at::empty_like(p);
  const int64_t n = p.numel();
  if (n == 0) return out;
  const bool vec = aligned16({&p, &r, &out}) && (scalar || aligned16({&s}));
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "fastgame::cg_direction", [&] {
    with_pack(vec, sizeof(scalar_t), [&](auto N) {
      with_scalar(scalar, [&](auto S) {
        cg_direction_kernel<scalar_t, N(), S()><<<grid_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            p.mutable_data_ptr<scalar_t>(), r.const_data_ptr<scalar_t>(), rr_new_d.const_data_ptr<scalar_t>(),
            rr_d.const_data_ptr<scalar_t>(), s.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), n);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgame, CUDA, m) {
  m.impl("precondition", &precondition_cuda);
  m.impl("cg_matvec", &cg_matvec_cuda);
  m.impl("cg_step", &cg_step_cuda);
  m.impl("cg_direction", &cg_direction_cuda);
}

}  // namespace fastgame

// `import fastgame._cuda` loads the kernels (registered for the schemas of fastgame/ops/schemas.py).
extern "C" PyObject* PyInit__cuda(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cuda", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
