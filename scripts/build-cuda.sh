#!/usr/bin/env bash
# Builds perforated's tests and examples (with the NCCL backend) for an NVIDIA GPU on a machine that has Rust and a
# Python package index but no CUDA toolkit (docs/cuda.md explains every step).
#
#   scripts/build-cuda.sh            # CUDA 13, compute capability 9.0 (H100/H200)
#   CUDA_COMPUTE_CAP=80 scripts/build-cuda.sh
#
# Environment:
#   PERFORATED_CUDA_DIR  where the toolkit goes (default /tmp/perforated-cuda). dfdx bakes
#                        <dir>/pip/nvidia/cu13/include into the binaries for the kernels it
#                        compiles at run time, so the GPU machine needs the same path.
#   CUDA_COMPUTE_CAP     target architecture (default 90).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${PERFORATED_CUDA_DIR:-/tmp/perforated-cuda}
cap=${CUDA_COMPUTE_CAP:-90}
cu="$dir/pip/nvidia/cu13"

# 1. The CUDA 13 compiler, headers and libraries, from PyPI (about 615 MB of wheels).
if [ ! -x "$cu/bin/nvcc" ] || [ ! -f "$cu/include/cuda.h" ]; then
  python3 -m pip install --quiet --no-deps --target "$dir/pip" \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-runtime==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 \
    nvidia-cublas==13.0.2.14
fi
# NCCL for the `nccl` collective backend (about 305 MB), in a target of its own: pip
# --target does not add to an `nvidia/` folder that is already there.
nccl="$dir/nccl/nvidia/nccl/lib"
if [ ! -f "$nccl/libnccl.so.2" ]; then
  python3 -m pip install --quiet --no-deps --target "$dir/nccl" nvidia-nccl-cu13==2.32.3
fi

# 2. The unversioned names the linker asks for.
for lib in nvrtc cublas cublasLt; do
  so=$(ls "$cu/lib/lib$lib.so."* | head -n 1)
  ln -sf "$so" "$cu/lib/lib$lib.so"
done
ln -sf "$nccl/libnccl.so.2" "$nccl/libnccl.so"

# 3. dfdx's build script queries `nvidia-smi`; without a GPU, one that answers the capability.
mkdir -p "$dir/bin" "$dir/stub"
if ! command -v nvidia-smi >/dev/null 2>&1; then
  printf '#!/bin/sh\necho compute_cap\necho %s.%s\n' "${cap%?}" "${cap#?}" > "$dir/bin/nvidia-smi"
  chmod +x "$dir/bin/nvidia-smi"
fi

# 4. libcuda comes with the driver. Without one, link against a stub holding the driver
#    symbols cudarc declares; the real library is loaded on the GPU machine.
driver=$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 /{print $NF; exit}')
if [ -n "$driver" ]; then
  ln -sf "$driver" "$dir/stub/libcuda.so"
else
  cargo fetch --quiet
  sys=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.9.15/src/driver/sys.rs | head -n 1)
  grep -o 'pub fn cu[A-Za-z0-9_]*' "$sys" | awk '{print "void " $3 "(void) {}"}' | sort -u > "$dir/stub/cuda.c"
  # the driver's own soname, so binaries look for libcuda.so.1 as with a real driver
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$dir/stub/libcuda.so" "$dir/stub/cuda.c"
fi

# 5. Build: every test binary and every example, release, with the `nccl` feature (which
#    brings `cuda`).
export CUDA_ROOT="$cu" CUDA_COMPUTE_CAP="$cap"
export PATH="$cu/bin:$dir/bin:$PATH"
export RUSTFLAGS="-L $cu/lib -L $nccl -L $dir/stub"
export CARGO_TARGET_DIR=target/cuda
cargo test --release --features nccl --no-run --message-format=short 2>&1 | grep -E '^(error|warning)|Executable' || true
cargo build --release --features nccl --examples
echo "built under target/cuda/release; on the GPU machine run them with"
echo "  LD_LIBRARY_PATH=$cu/lib:$nccl:\$LD_LIBRARY_PATH"
