// The expert block of the reference engine: y = relu(x · w1) · w2 for `rows` rows of x,
// all float32 row-major (x [rows × d], w1 [d × h], w2 [h × d], y [rows × d]).
//
// Each output element is one thread, summing over k in ascending order with separate
// round-to-nearest multiply and add (no fused multiply-add), so a float32 CPU loop that
// does `acc = fround(acc + fround(a * b))` in the same order gets the same bits.
#include <cuda_runtime.h>

namespace {

constexpr int kThreads = 128;

// hid[r][j] = max(0, sum_k x[r][k] * w1[k][j])
__global__ void upRelu(const float* __restrict__ x, const float* __restrict__ w1,
                       float* __restrict__ hid, int rows, int d, int h) {
  const int r = blockIdx.y;
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows || j >= h) return;
  const float* xr = x + static_cast<size_t>(r) * d;
  float acc = 0.0f;
  for (int k = 0; k < d; ++k) acc = __fadd_rn(acc, __fmul_rn(xr[k], w1[static_cast<size_t>(k) * h + j]));
  hid[static_cast<size_t>(r) * h + j] = acc > 0.0f ? acc : 0.0f;
}

// y[r][i] = sum_j hid[r][j] * w2[j][i]
__global__ void down(const float* __restrict__ hid, const float* __restrict__ w2,
                     float* __restrict__ y, int rows, int h, int d) {
  const int r = blockIdx.y;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows || i >= d) return;
  const float* hr = hid + static_cast<size_t>(r) * h;
  float acc = 0.0f;
  for (int j = 0; j < h; ++j) acc = __fadd_rn(acc, __fmul_rn(hr[j], w2[static_cast<size_t>(j) * d + i]));
  y[static_cast<size_t>(r) * d + i] = acc;
}

}  // namespace

extern "C" {

// Bumped whenever an exported signature changes; the loader refuses a mismatch.
int rankmesh_moe_abi_version(void) { return 1; }

// Enqueues both kernels on `stream`; `hid` is scratch of rows × h floats. Returns the
// cudaError_t of the launches (0 on success); completion is observed on the stream.
int rankmesh_moe_expert_forward(const float* x, const float* w1, const float* w2, float* hid, float* y,
                                int rows, int d, int h, cudaStream_t stream) {
  if (rows < 0 || d <= 0 || h <= 0) return static_cast<int>(cudaErrorInvalidValue);
  if (rows == 0) return static_cast<int>(cudaSuccess);
  const dim3 block(kThreads);
  const dim3 gridUp((h + kThreads - 1) / kThreads, rows);
  const dim3 gridDown((d + kThreads - 1) / kThreads, rows);
  upRelu<<<gridUp, block, 0, stream>>>(x, w1, hid, rows, d, h);
  down<<<gridDown, block, 0, stream>>>(hid, w2, y, rows, h, d);
  return static_cast<int>(cudaGetLastError());
}

}  // extern "C"
