// tilex fusion kernels (family "fusion"): the NumPy oracle's float32 arithmetic
// on the GPU. See kernels/reference.py for the contract; see kernels/gpu.py for
// how these are compiled (NVRTC, --fmad=false) and launched.
//
// Layout: every array is C-contiguous; a "plane" is h * w pixels and p is the
// flat pixel index y * w + x. g is [C][plane], b is [N][C][plane].
//
// Every float operation is an explicit round-to-nearest intrinsic (__fadd_rn,
// __fsub_rn, __fmul_rn, __fdiv_rn): these are never contracted into an FMA or
// replaced by an approximate division, so each operation rounds as NumPy's
// float32 arithmetic does. Tested (pytest -m gpu, tests/parity_cases.py):
// winners, histograms and overlays equal the oracle's, float maps within 1e-6.
//
// The channel count C is a template parameter (gpu.py instantiates the one a
// call needs), so the per-pixel features live in registers.

#define TILEX_SHIFT 13
#define TILEX_NBINS (1 << (31 - TILEX_SHIFT))
#define TILEX_MAX_BANDS 254
#define TILEX_EPS 1e-8f
#define TILEX_FLOOR 0.1f
#define TILEX_ALPHA 0.65f
#define TILEX_INF_BITS 0x7F800000u
#define TILEX_KEY_NAN 0xFFFFFFFFu
#define TILEX_KEY_NONE 0xFFFFFFFEu
#define TILEX_FULL_WARP 0xFFFFFFFFu

typedef unsigned char tilex_u8;
typedef unsigned int tilex_u32;
typedef unsigned long long tilex_u64;
typedef long long tilex_i64;

// clamp n to [0.1, 1]; NaN fails both tests and stays NaN
__device__ __forceinline__ float tilex_clamp(float n) {
    if (n < TILEX_FLOOR) return TILEX_FLOOR;
    if (n > 1.0f) return 1.0f;
    return n;
}

// d = sum_c |g_c - b_ic|, from 0, channels in order; f receives the b_ic read
template <int C>
__device__ __forceinline__ float tilex_band_d(const float* gv, const float* __restrict__ b,
                                              tilex_i64 n_bands_offset, tilex_i64 plane,
                                              tilex_i64 p, float* f) {
    float d = 0.0f;
#pragma unroll
    for (int c = 0; c < C; ++c) {
        f[c] = b[(n_bands_offset + c) * plane + p];
        d = __fadd_rn(d, fabsf(__fsub_rn(gv[c], f[c])));
    }
    return d;
}

// One thread per pixel: d for every band, normalise, clamp, threshold, argmax,
// then winner / score / collage (and optionally the clamped n) written once.
// Band norm streams over the bands and keeps the best band's features in
// registers, so each feature value is read once. Pixel norm needs min/max over
// the bands before normalising: d is kept in local memory, and the winner's C
// features are read a second time for the collage.
template <int C>
__global__ void tilex_fusion_fuse(const float* __restrict__ g, const float* __restrict__ b,
                                  const float* __restrict__ lo, const float* __restrict__ hi,
                                  int n_bands, tilex_i64 plane, int pixel, float threshold,
                                  int keep, tilex_u8* __restrict__ winner,
                                  float* __restrict__ score, float* __restrict__ collage,
                                  float* __restrict__ normalised) {
    const tilex_i64 p = (tilex_i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= plane) return;
    float gv[C], f[C], best_f[C];
#pragma unroll
    for (int c = 0; c < C; ++c) {
        gv[c] = g[c * plane + p];
        best_f[c] = 0.0f;
    }
    float best = 0.0f;
    int win = 0;
    if (!pixel) {
        for (int i = 0; i < n_bands; ++i) {
            const float d = tilex_band_d<C>(gv, b, (tilex_i64)i * C, plane, p, f);
            // n = (d - lo) / ((hi - lo) + eps)
            const float range = __fadd_rn(__fsub_rn(hi[i], lo[i]), TILEX_EPS);
            const float n = tilex_clamp(__fdiv_rn(__fsub_rn(d, lo[i]), range));
            if (keep) normalised[(tilex_i64)i * plane + p] = n;
            // kept = n > t ? n : 0; strict '>' keeps the lowest band on ties
            if (n > threshold && n > best) {
                best = n;
                win = i + 1;
#pragma unroll
                for (int c = 0; c < C; ++c) best_f[c] = f[c];
            }
        }
    } else {
        float d[TILEX_MAX_BANDS];
        float m = __int_as_float(TILEX_INF_BITS), big = -m;
        bool seen = false;
        for (int i = 0; i < n_bands; ++i) {
            d[i] = tilex_band_d<C>(gv, b, (tilex_i64)i * C, plane, p, f);
            if (d[i] == d[i]) {  // m, M = nanmin, nanmax
                seen = true;
                if (d[i] < m) m = d[i];
                if (d[i] > big) big = d[i];
            }
        }
        if (!seen) m = big = __int_as_float(0x7FC00000);  // all NaN: n is NaN
        const float range = __fadd_rn(__fsub_rn(big, m), TILEX_EPS);
        for (int i = 0; i < n_bands; ++i) {
            // n = (d - m) / ((M - m) + eps)
            const float n = tilex_clamp(__fdiv_rn(__fsub_rn(d[i], m), range));
            if (keep) normalised[(tilex_i64)i * plane + p] = n;
            if (n > threshold && n > best) {
                best = n;
                win = i + 1;
            }
        }
        if (win > 0) {
#pragma unroll
            for (int c = 0; c < C; ++c) best_f[c] = b[((tilex_i64)(win - 1) * C + c) * plane + p];
        }
    }
    winner[p] = (tilex_u8)win;
    score[p] = best;
#pragma unroll
    for (int c = 0; c < C; ++c) collage[c * plane + p] = best_f[c];
}

// d [N][plane] = sum_c |g_c - b_ic|
template <int C>
__global__ void tilex_fusion_dissimilarity(const float* __restrict__ g,
                                           const float* __restrict__ b, int n_bands,
                                           tilex_i64 plane, float* __restrict__ out) {
    const tilex_i64 p = (tilex_i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= plane) return;
    float gv[C], f[C];
#pragma unroll
    for (int c = 0; c < C; ++c) gv[c] = g[c * plane + p];
    for (int i = 0; i < n_bands; ++i)
        out[(tilex_i64)i * plane + p] = tilex_band_d<C>(gv, b, (tilex_i64)i * C, plane, p, f);
}

// Histogram of d per band: counts [N][NBINS] (bin = bits(d) >> SHIFT), nan [N],
// and min / max as float32 bit patterns (monotonic for d >= 0) so that integer
// atomicMin / atomicMax apply. The caller zeroes counts and nan, fills
// dmin_bits with the pattern of +inf and dmax_bits with 0, and turns an empty
// band's dmax into -inf afterwards.
//
// Threads of a warp that fall in the same bin are counted together
// (__match_any_sync) so one global atomic serves them all. Every lane of every
// warp runs the whole loop (no early return) because the warp intrinsics need
// the full mask; the block size is a multiple of 32.
template <int C>
__global__ void tilex_fusion_histogram(const float* __restrict__ g, const float* __restrict__ b,
                                       int n_bands, tilex_i64 plane,
                                       tilex_u64* __restrict__ counts,
                                       tilex_u64* __restrict__ nan,
                                       tilex_u32* __restrict__ dmin_bits,
                                       tilex_u32* __restrict__ dmax_bits) {
    const tilex_i64 p = (tilex_i64)blockIdx.x * blockDim.x + threadIdx.x;
    const bool valid = p < plane;
    const int lane = threadIdx.x & 31;
    float gv[C], f[C];
#pragma unroll
    for (int c = 0; c < C; ++c) gv[c] = valid ? g[c * plane + p] : 0.0f;
    for (int i = 0; i < n_bands; ++i) {
        tilex_u32 key = TILEX_KEY_NONE, lo = TILEX_INF_BITS, hi = 0u;
        if (valid) {
            const float d = tilex_band_d<C>(gv, b, (tilex_i64)i * C, plane, p, f);
            if (d != d) {
                key = TILEX_KEY_NAN;
            } else {
                const tilex_u32 bits = (d == 0.0f) ? 0u : __float_as_uint(d);  // -0.0 -> 0
                key = bits >> TILEX_SHIFT;
                lo = bits;
                hi = bits;
            }
        }
        const tilex_u32 peers = __match_any_sync(TILEX_FULL_WARP, key);
        if (lane == __ffs(peers) - 1) {
            const tilex_u64 k = (tilex_u64)__popc(peers);
            if (key == TILEX_KEY_NAN)
                atomicAdd(&nan[i], k);
            else if (key != TILEX_KEY_NONE)
                atomicAdd(&counts[(tilex_i64)i * TILEX_NBINS + key], k);
        }
        for (int offset = 16; offset > 0; offset >>= 1) {
            const tilex_u32 other_lo = __shfl_xor_sync(TILEX_FULL_WARP, lo, offset);
            const tilex_u32 other_hi = __shfl_xor_sync(TILEX_FULL_WARP, hi, offset);
            lo = other_lo < lo ? other_lo : lo;
            hi = other_hi > hi ? other_hi : hi;
        }
        if (lane == 0) {
            atomicMin(&dmin_bits[i], lo);
            atomicMax(&dmax_bits[i], hi);
        }
    }
}

// floor(clip(v, 0, 1) * 255 + 0.5) as a byte, NaN -> 0
__device__ __forceinline__ tilex_u8 tilex_byte(float v) {
    if (v > 1.0f)
        v = 1.0f;
    else if (!(v >= 0.0f))
        v = 0.0f;
    return (tilex_u8)floorf(__fadd_rn(__fmul_rn(v, 255.0f), 0.5f));
}

// out [3][plane]: alpha = 0.65 s; rgb = (1 - alpha) gray + alpha (0, 0, 1)
extern "C" __global__ void tilex_fusion_overlay(const float* __restrict__ gray,
                                                const float* __restrict__ score,
                                                tilex_i64 plane, tilex_u8* __restrict__ out) {
    const tilex_i64 p = (tilex_i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= plane) return;
    const float alpha = __fmul_rn(TILEX_ALPHA, score[p]);
    const float base = __fmul_rn(__fsub_rn(1.0f, alpha), gray[p]);
    out[p] = tilex_byte(__fadd_rn(base, __fmul_rn(alpha, 0.0f)));
    out[plane + p] = tilex_byte(__fadd_rn(base, __fmul_rn(alpha, 0.0f)));
    out[2 * plane + p] = tilex_byte(__fadd_rn(base, __fmul_rn(alpha, 1.0f)));
}

// Explicit instantiations let nvcc check the templates (NVRTC instantiates the
// ones gpu.py names through name_expressions).
#ifdef TILEX_CHECK_INSTANTIATE
template __global__ void tilex_fusion_fuse<3>(const float*, const float*, const float*,
                                              const float*, int, tilex_i64, int, float, int,
                                              tilex_u8*, float*, float*, float*);
template __global__ void tilex_fusion_dissimilarity<3>(const float*, const float*, int,
                                                       tilex_i64, float*);
template __global__ void tilex_fusion_histogram<3>(const float*, const float*, int, tilex_i64,
                                                   tilex_u64*, tilex_u64*, tilex_u32*,
                                                   tilex_u32*);
#endif
