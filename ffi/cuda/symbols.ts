// The libcudart symbols the bindings use, with their C signatures (CUDA 13
// cuda_runtime_api.h). Every one of them has been exported under its plain name since
// CUDA 12, so one table binds both .so.12 and .so.13.
import { FFIType, type FFIFunction } from 'bun:ffi';

const { i32, u32, u64, ptr, cstring } = FFIType;

export const CUDART_SYMBOLS = {
  // const char* cudaGetErrorName(cudaError_t) / cudaGetErrorString(cudaError_t)
  cudaGetErrorName: { args: [i32], returns: cstring },
  cudaGetErrorString: { args: [i32], returns: cstring },
  cudaGetLastError: { args: [], returns: i32 },
  cudaRuntimeGetVersion: { args: [ptr], returns: i32 }, // (int*)
  cudaDriverGetVersion: { args: [ptr], returns: i32 }, // (int*)
  cudaGetDeviceCount: { args: [ptr], returns: i32 }, // (int*)
  cudaSetDevice: { args: [i32], returns: i32 },
  cudaGetDevice: { args: [ptr], returns: i32 }, // (int*)
  cudaDeviceSynchronize: { args: [], returns: i32 },
  cudaMemGetInfo: { args: [ptr, ptr], returns: i32 }, // (size_t* free, size_t* total)
  cudaMalloc: { args: [ptr, u64], returns: i32 }, // (void**, size_t)
  cudaFree: { args: [ptr], returns: i32 },
  cudaMallocHost: { args: [ptr, u64], returns: i32 }, // (void**, size_t)
  cudaFreeHost: { args: [ptr], returns: i32 },
  // (void* dst, const void* src, size_t, enum cudaMemcpyKind)
  cudaMemcpy: { args: [ptr, ptr, u64, i32], returns: i32 },
  // (..., cudaStream_t)
  cudaMemcpyAsync: { args: [ptr, ptr, u64, i32, ptr], returns: i32 },
  cudaMemset: { args: [ptr, i32, u64], returns: i32 }, // (void*, int value, size_t)
  cudaStreamCreateWithFlags: { args: [ptr, u32], returns: i32 }, // (cudaStream_t*, unsigned)
  cudaStreamSynchronize: { args: [ptr], returns: i32 },
  cudaStreamQuery: { args: [ptr], returns: i32 },
  cudaStreamDestroy: { args: [ptr], returns: i32 },
  cudaEventCreate: { args: [ptr], returns: i32 }, // (cudaEvent_t*)
  cudaEventRecord: { args: [ptr, ptr], returns: i32 }, // (cudaEvent_t, cudaStream_t)
  cudaEventQuery: { args: [ptr], returns: i32 },
  cudaEventElapsedTime: { args: [ptr, ptr, ptr], returns: i32 }, // (float*, start, end)
  cudaEventDestroy: { args: [ptr], returns: i32 },
  // (cudaStream_t, enum cudaStreamCaptureMode)
  cudaStreamBeginCapture: { args: [ptr, i32], returns: i32 },
  cudaStreamEndCapture: { args: [ptr, ptr], returns: i32 }, // (cudaStream_t, cudaGraph_t*)
  // CUDA 12+ form: (cudaGraphExec_t*, cudaGraph_t, unsigned long long flags)
  cudaGraphInstantiate: { args: [ptr, ptr, u64], returns: i32 },
  cudaGraphLaunch: { args: [ptr, ptr], returns: i32 }, // (cudaGraphExec_t, cudaStream_t)
  cudaGraphExecDestroy: { args: [ptr], returns: i32 },
  cudaGraphDestroy: { args: [ptr], returns: i32 },
} as const satisfies Record<string, FFIFunction>;

/** enum cudaMemcpyKind */
export const MemcpyKind = {
  HostToHost: 0,
  HostToDevice: 1,
  DeviceToHost: 2,
  DeviceToDevice: 3,
  Default: 4,
} as const;
export type MemcpyKind = (typeof MemcpyKind)[keyof typeof MemcpyKind];

/** enum cudaStreamCaptureMode */
export const StreamCaptureMode = { Global: 0, ThreadLocal: 1, Relaxed: 2 } as const;
export type StreamCaptureMode = (typeof StreamCaptureMode)[keyof typeof StreamCaptureMode];

/** cudaStreamNonBlocking: the stream does not synchronize with the legacy default stream. */
export const STREAM_NON_BLOCKING = 1;
