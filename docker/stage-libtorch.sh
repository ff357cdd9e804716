#!/bin/sh
# Copies what the replica binary loads at run time out of a Python venv's site-packages: libtorch
# (torch/lib) and, for CUDA wheels, the nvidia-* packages' shared libraries, keeping the layout
# libtorch's RUNPATH expects ($ORIGIN/../../nvidia/<pkg>/lib). Everything else in the venv
# (Python code, headers, triton, sympy, static archives) stays behind.
#
#   stage-libtorch.sh <site-packages> <out>   # writes <out>/torch/lib, <out>/nvidia/<pkg>/lib
set -eu
sp=$1
out=$2
mkdir -p "$out/torch"
cp -a "$sp/torch/lib" "$out/torch/lib"
# Python's bindings: tch links libtorch itself, never libtorch_python.
rm -f "$out/torch/lib/libtorch_python.so"
for lib in "$sp"/nvidia/*/lib; do
  [ -d "$lib" ] || continue # a CPU wheel has no nvidia-* packages
  pkg=$(basename "$(dirname "$lib")")
  mkdir -p "$out/nvidia/$pkg"
  # All shared libraries: cuDNN and NVRTC dlopen some of theirs (libcudnn_*.so.9,
  # libnvrtc-builtins), so the NEEDED entries alone would miss them.
  cp -a "$lib" "$out/nvidia/$pkg/lib"
done
# Static archives are for linking CUDA programs, not for running one.
find "$out" -name '*.a' -delete
