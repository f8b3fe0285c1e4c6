#!/usr/bin/env bash
# On the GPU machine (no network, no compiler): time the artifacts `cuda_encoder.py build` made.
#   bash benchmarks/cuda_device.sh build/cuda-bench --runs 200 --profile 128
# The bundled runtime's tvm_ffi extension is the compiling Python's; for another python3 this takes
# that version's from an apache-tvm-ffi wheel in $TVM_FFI_WHEELS (default .whl/). libcudart.so.13 is
# looked for under /usr/local/cuda*.
set -euo pipefail
dir=${1:?usage: cuda_device.sh BUILD_DIR [cuda_encoder.py run options]}
shift
py=${PYTHON:-python3}
ver=$($py -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
ffi=$dir/runtime/python/tvm_ffi
if ! compgen -G "$ffi/core.cpython-$ver-*.so" >/dev/null; then
    wheel=$(compgen -G "${TVM_FFI_WHEELS:-.whl}/apache_tvm_ffi-*-cp$ver-*.whl" | head -1 || true)
    if [ -z "$wheel" ]; then
        echo "error: the runtime has no tvm_ffi extension for Python $ver: put the apache-tvm-ffi wheel for cp$ver in ${TVM_FFI_WHEELS:-.whl}/" >&2
        exit 2
    fi
    $py - "$wheel" "$ffi" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.startswith("tvm_ffi/core.") and n.endswith(".so"))
    open(f"{dest}/{name.split('/')[1]}", "wb").write(z.read(name))
PY
fi
cudart=$(compgen -G "/usr/local/cuda*/lib64/libcudart.so.13" | head -1 || true)
if [ -n "$cudart" ]; then
    export LD_LIBRARY_PATH=$(dirname "$cudart")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
PYTHONUNBUFFERED=1 PYTHONPATH=$dir/runtime/python exec "$py" "$(dirname "$0")/cuda_encoder.py" run "$dir" "$@"
