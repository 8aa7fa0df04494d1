// The CPU loops of the fused ops, free of ATen so that they can be compiled once per
// instruction set (kernels_base.cpp: the build's default; kernels_avx2.cpp: AVX2) and
// picked at run time (ops.cpp). Include after defining FASTGAME_ISA (the namespace).
//
// One pass over the vectors per op; OpenMP threads over contiguous chunks; inner loops
// the compiler vectorizes (omp simd, restrict pointers). Reductions accumulate in double
// (as ATen does on the CPU) per chunk and add the chunk sums in a fixed order, so a result
// depends only on the number of threads, not on timing.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#ifndef FASTGAME_ISA
#error "define FASTGAME_ISA before including kernels.h"
#endif

namespace fastgame::cpu::FASTGAME_ISA {

// Calls f(begin, end, chunk) for `chunks` contiguous pieces of [0, n), one per thread.
// Chunk edges are multiples of 16 elements so vector loops start aligned.
template <typename F>
void for_chunks(int64_t n, int chunks, const F& f) {
  if (chunks <= 1) {
    f(int64_t(0), n, 0);
    return;
  }
  const int64_t size = ((n + chunks - 1) / chunks + 15) / 16 * 16;
#pragma omp parallel for num_threads(chunks) schedule(static, 1)
  for (int c = 0; c < chunks; ++c) {
    const int64_t begin = std::min(n, c * size);
    f(begin, std::min(n, begin + size), c);
  }
}

// Runs f(begin, end) -> double over chunks and adds the chunk results in order.
template <typename F>
double sum_chunks(int64_t n, int chunks, const F& f) {
  std::vector<double> partial(std::max(chunks, 1), 0.0);
  for_chunks(n, chunks, [&](int64_t begin, int64_t end, int c) { partial[c] = f(begin, end); });
  double sum = 0;
  for (double x : partial) sum += x;
  return sum;
}

// sqrt_eta per element: a vector (pointer) or one value for all.
template <typename T>
inline T at(const T* s, int64_t i) { return s[i]; }
template <typename T>
inline T at(T s, int64_t) { return s; }

// Each op is a loop over [begin, end) in a function of its own, whose restrict parameters
// let the compiler vectorize it, and a wrapper that runs it on the threads' chunks. (Written
// inside the wrapper's lambda, a loop read its pointers from the closure: the copy OpenMP
// outlines for the threads then reloaded them after every store and ran unvectorized.)

// v' = beta v + (1 - beta) g^2; eta = scale / (sqrt(v') + eps); sqrt(eta); eta g
template <typename T>
void precondition_range(const T* __restrict__ g, const T* __restrict__ v, T* __restrict__ vn, T* __restrict__ eta,
                        T* __restrict__ sqrt_eta, T* __restrict__ eta_g, T beta, T one_minus_beta, T scale, T eps,
                        int64_t begin, int64_t end) {
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    const T gi = g[i];
    const T a = v[i] * beta + one_minus_beta * gi * gi;
    const T h = scale / (std::sqrt(a) + eps);
    vn[i] = a;
    eta[i] = h;
    sqrt_eta[i] = std::sqrt(h);
    eta_g[i] = h * gi;
  }
}

template <typename T>
void precondition(const T* __restrict__ g, const T* __restrict__ v, T* __restrict__ vn, T* __restrict__ eta,
                  T* __restrict__ sqrt_eta, T* __restrict__ eta_g, int64_t n, int chunks, T beta,
                  T one_minus_beta, T scale, T eps) {
  for_chunks(n, chunks, [=](int64_t begin, int64_t end, int) {
    precondition_range(g, v, vn, eta, sqrt_eta, eta_g, beta, one_minus_beta, scale, eps, begin, end);
  });
}

// ap = p + s t; returns p . ap. S is a pointer (vector sqrt_eta) or a value (scalar).
template <typename T, typename S>
double matvec_range(const T* __restrict__ p, S s, const T* __restrict__ t, T* __restrict__ ap, int64_t begin,
                    int64_t end) {
  double acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = begin; i < end; ++i) {
    const T a = p[i] + at(s, i) * t[i];
    ap[i] = a;
    acc += double(p[i]) * double(a);
  }
  return acc;
}

template <typename T, typename S>
double matvec(const T* __restrict__ p, S s, const T* __restrict__ t, T* __restrict__ ap, int64_t n, int chunks) {
  return sum_chunks(n, chunks, [=](int64_t begin, int64_t end) { return matvec_range(p, s, t, ap, begin, end); });
}

// w += alpha p; r -= alpha ap; returns r . r
template <typename T>
double step_range(T* __restrict__ w, T* __restrict__ r, const T* __restrict__ p, const T* __restrict__ ap, T alpha,
                  int64_t begin, int64_t end) {
  double acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = begin; i < end; ++i) {
    w[i] += alpha * p[i];
    const T ri = r[i] - alpha * ap[i];
    r[i] = ri;
    acc += double(ri) * double(ri);
  }
  return acc;
}

template <typename T>
double step(T* __restrict__ w, T* __restrict__ r, const T* __restrict__ p, const T* __restrict__ ap, T alpha,
            int64_t n, int chunks) {
  return sum_chunks(n, chunks, [=](int64_t begin, int64_t end) { return step_range(w, r, p, ap, alpha, begin, end); });
}

// u += alpha q
template <typename T>
void axpy_range(T* __restrict__ u, const T* __restrict__ q, T alpha, int64_t begin, int64_t end) {
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) u[i] += alpha * q[i];
}

template <typename T>
void axpy(T* __restrict__ u, const T* __restrict__ q, T alpha, int64_t m, int chunks) {
  for_chunks(m, chunks, [=](int64_t begin, int64_t end, int) { axpy_range(u, q, alpha, begin, end); });
}

// p = beta p + r; out = s p
template <typename T, typename S>
void direction_range(T* __restrict__ p, const T* __restrict__ r, S s, T* __restrict__ out, T beta, int64_t begin,
                     int64_t end) {
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    const T d = p[i] * beta + r[i];
    p[i] = d;
    out[i] = at(s, i) * d;
  }
}

template <typename T, typename S>
void direction(T* __restrict__ p, const T* __restrict__ r, S s, T* __restrict__ out, T beta, int64_t n,
               int chunks) {
  for_chunks(n, chunks, [=](int64_t begin, int64_t end, int) { direction_range(p, r, s, out, beta, begin, end); });
}

// The instantiations ops.cpp calls, for float and double: `template` where compiled,
// `extern template` where called (so ops.cpp never compiles them without the ISA's flags).
#define FASTGAME_INSTANTIATE(KIND, T)                                                                    \
  KIND void precondition<T>(const T*, const T*, T*, T*, T*, T*, int64_t, int, T, T, T, T);                \
  KIND double matvec<T, const T*>(const T*, const T*, const T*, T*, int64_t, int);                        \
  KIND double matvec<T, T>(const T*, T, const T*, T*, int64_t, int);                                      \
  KIND double step<T>(T*, T*, const T*, const T*, T, int64_t, int);                                       \
  KIND void axpy<T>(T*, const T*, T, int64_t, int);                                                       \
  KIND void direction<T, const T*>(T*, const T*, const T*, T*, T, int64_t, int);                          \
  KIND void direction<T, T>(T*, const T*, T, T*, T, int64_t, int);

}  // namespace fastgame::cpu::FASTGAME_ISA
