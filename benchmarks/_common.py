"""What the benchmarks share: timing, the ONNX Runtime peers, edgecompile set-up on this machine and
the example models they time.

- Timing: :func:`time_ms` (each call's milliseconds after untimed warm-up calls) and
  :func:`median_ms`; :func:`cosine` (of two outputs, flattened, in float64);
  :func:`thread_counts` (1 and every CPU this process may use);
  :func:`sampler` and :func:`time_engines` (several engines timed in alternating rounds);
  :func:`cpu_header` (the CPU's name and vector flags).
- ONNX Runtime: :func:`ort_session` (CPU provider, ``threads`` intra-op and 1 inter-op thread),
  :func:`ort_ms` (a session's median latency), :func:`ort_dynamic_int8` (``quantize_dynamic``,
  int8 weights), :func:`ort_qdq_int8` (``quantize_static``, QDQ, calibrated on given samples) and
  :func:`ort_int8` (both).
- OpenVINO: :func:`openvino_request` (an infer request on the CPU, f32, 1 thread, 1 stream by
  default, and the precision it reports).
- edgecompile: :func:`timed_compile` (``edgecompile.compile`` and its wall seconds),
  :func:`artifact_mb`, :func:`host_profile` and :func:`host_vm` (a Relax module built by our CPU
  pipeline, in a VM on this machine: the kernel-level tables).
- Example models (``examples/models.py``, ``examples/digits_vit``): the encoder and ViT sizes
  (:data:`MINILM_L6`, :data:`BERT_BASE`, :data:`VIT_TINY`), :func:`bert_style`,
  :func:`token_inputs`, :func:`export`, :func:`minilm_onnx` (the MiniLM-L6-sized encoder exported
  to ONNX), :func:`text_samples` / :func:`stacked` (its random token inputs) and
  :func:`digits_vit_onnx` (the digits ViT trained and exported).

Importing this module is cheap (standard library and numpy): torch, onnxruntime, TVM and
edgecompile are imported by the functions that use them, so ``cuda_encoder.py run`` still works on a
GPU machine with python3 and numpy only. Benchmarks import it as ``from _common import ...`` (a
script's own directory, ``benchmarks/``, is first on ``sys.path``).

``examples/`` on ``sys.path``: importing this module puts it there, the one place that does so. The
example modules are then ``models``, ``digits_vit`` and ``minilm_spam`` (a namespace package:
``from minilm_spam import data, encoder``).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from edgecompile.runtime.model import time_calls

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))

SEQ = 128  # tokens per encoder input
VOCAB = 30522
# BertStyleEncoder(vocab, hidden, layers, heads, ffn, max_pos) and
# TinyViT(image, patch, channels, hidden, layers, heads, ffn, classes); weights are seeded in the classes
MINILM_L6 = (VOCAB, 384, 6, 12, 1536, 512)
BERT_BASE = (VOCAB, 768, 12, 12, 3072, 512)
VIT_TINY = (224, 16, 3, 192, 12, 3, 768, 1000)
ENCODER_INPUTS = ["input_ids", "attention_mask"]
ENCODER_OUTPUTS = ["last_hidden_state", "pooled"]
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16")
ROUNDS = 3  # alternating timing rounds of time_engines
OV_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1}


# --- timing -----------------------------------------------------------------------------------

# the runtime's own timing loop (edgecompile.runtime imports TVM lazily: numpy is enough here)
time_ms = time_calls


def median_ms(fn, runs: int, warmup: int = 3) -> float:
    """The median of :func:`time_ms`."""
    return statistics.median(time_ms(fn, runs, warmup))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The cosine of two outputs, flattened, in float64."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def thread_counts() -> list[int]:
    """1 and every CPU this process may run on (one entry when that is 1)."""
    return sorted({1, len(os.sched_getaffinity(0))})


def sampler(call):
    """One call of ``call()`` in milliseconds, as a sample function for :func:`time_engines`."""

    def sample() -> float:
        t0 = time.perf_counter()
        call()
        return (time.perf_counter() - t0) * 1e3

    return sample


def time_engines(samplers: dict, runs: int, warmup: int = 3) -> dict[str, list[float]]:
    """``runs`` samples (ms) of each sampler, taken in :data:`ROUNDS` alternating rounds, each round
    after one untimed call (caches warmed for that engine); ``warmup`` untimed calls first."""
    for sample in samplers.values():
        for _ in range(warmup):
            sample()
    times: dict[str, list[float]] = {name: [] for name in samplers}
    rounds = min(ROUNDS, runs)
    for r in range(rounds):
        n = runs // rounds + (1 if r < runs % rounds else 0)
        for name, sample in samplers.items():
            sample()
            times[name] += [sample() for _ in range(n)]
    return times


def cpu_header() -> dict:
    """The CPU's model name, family and model number (``/proc/cpuinfo``), the vector flags of note
    (:data:`CPU_FLAGS`) and the CPUs this process may use."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())  # the first CPU's entries
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    return {
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "family": info.get("cpu family"),
        "model": info.get("model"),
        "flags": {f: f in flags for f in CPU_FLAGS},
        "cpus": len(os.sched_getaffinity(0)),
    }


# --- ONNX Runtime -----------------------------------------------------------------------------


def ort_session(model, threads: int | None = 1, providers=("CPUExecutionProvider",)):
    """An ONNX Runtime session of ``model`` (a path or serialized bytes) with ``threads`` intra-op
    threads and one inter-op thread; ``threads=None`` keeps ORT's default options."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), so, providers=list(providers))


def ort_ms(path, feeds: dict, threads: int, runs: int, warmup: int = 5) -> float:
    """Median latency (ms) of ORT's CPU provider on the ONNX file ``path`` with ``threads`` threads."""
    sess = ort_session(path, threads)
    return median_ms(lambda: sess.run(None, feeds), runs, warmup)


def ort_dynamic_int8(path, out) -> Path:
    """``quantize_dynamic`` of ``path`` (int8 weights, activations quantized at run time) into ``out``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8)
    return Path(out)


def ort_qdq_int8(path, samples: list[dict], out) -> Path:
    """``quantize_static`` of ``path`` into ``out``: QDQ, int8 activations and weights, calibrated
    on ``samples`` (``{input name: array}`` each)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(samples)

        def get_next(self):
            return next(self.it, None)

    quantize_static(
        str(path), str(out), Reader(), quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip
    return Path(out)


def ort_int8(path, samples: list[dict], workdir) -> tuple[Path, Path]:
    """Both ORT int8 peers of ``path`` in ``workdir``: (``<stem>.dyn.onnx``, ``<stem>.qdq.onnx``)."""
    path, workdir = Path(path), Path(workdir)
    dyn = ort_dynamic_int8(path, workdir / f"{path.stem}.dyn.onnx")
    return dyn, ort_qdq_int8(path, samples, workdir / f"{path.stem}.qdq.onnx")


# --- OpenVINO ---------------------------------------------------------------------------------


def openvino_request(model, config: dict | None = None):
    """An OpenVINO infer request for ``model`` (an ONNX file's path or an ``openvino.Model``) on the
    CPU with ``config`` (default :data:`OV_CONFIG`: f32, 1 thread, 1 stream) and the inference
    precision it reports (``f32``, ``bf16``, ...), or (None, note) where OpenVINO is not importable."""
    try:
        import openvino as ov
    except ImportError as e:
        return None, f"OpenVINO not importable ({e}); install with pip install -e '.[bench]'"
    source = model if isinstance(model, ov.Model) else str(model)
    compiled = ov.Core().compile_model(source, "CPU", OV_CONFIG if config is None else config)
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    return compiled.create_infer_request(), getattr(hint, "get_type_name", lambda: str(hint))()


# --- edgecompile ------------------------------------------------------------------------------


def timed_compile(model, **kwargs) -> tuple[Path, float]:
    """``edgecompile.compile(model, **kwargs)``: (the artifact, wall seconds)."""
    import edgecompile

    t0 = time.perf_counter()
    art = edgecompile.compile(model, **kwargs)
    return art, time.perf_counter() - t0


def artifact_mb(art) -> float:
    """Size of an artifact directory's files in MB."""
    return sum(f.stat().st_size for f in Path(art).iterdir()) / 1e6


def host_profile(target: str = "native"):
    """The target profile ``target`` resolved for this machine."""
    from edgecompile.targets import get_profile

    return get_profile(target).resolved()


def host_vm(mod, profile):
    """A Relax VM on this machine's CPU running ``mod`` built by edgecompile's pipeline for ``profile``."""
    import tvm
    from tvm import relax

    from edgecompile.lower.build import compile_module

    return relax.VirtualMachine(compile_module(mod, profile), tvm.cpu())


# --- example models ---------------------------------------------------------------------------


def bert_style(shape=MINILM_L6):
    """``examples/models.py``'s BertStyleEncoder at ``shape`` (seeded weights), in eval mode."""
    from models import BertStyleEncoder

    return BertStyleEncoder(*shape).eval()


def token_inputs(generator=None):
    """(input_ids, attention_mask) of one random sequence of SEQ tokens (torch int64, [1, SEQ]);
    ids drawn from ``generator`` (default: a fresh one seeded 0)."""
    import torch

    g = generator if generator is not None else torch.Generator().manual_seed(0)
    return torch.randint(0, VOCAB, (1, SEQ), generator=g), torch.ones(1, SEQ, dtype=torch.int64)


def export(module, inputs: tuple, path, names: list[str], outputs: list[str]) -> Path:
    """Export ``module`` to ONNX at ``path`` with the TorchScript exporter (opset 17)."""
    from models import export_onnx

    export_onnx(module.eval(), inputs, path, names, outputs, dynamo=False)
    return Path(path)


def minilm_onnx(tmp: Path) -> Path:
    """The MiniLM-L6-sized encoder (random seeded weights) exported to ``tmp/minilm.onnx``."""
    import torch

    torch.manual_seed(0)
    model = bert_style(MINILM_L6)
    return export(model, token_inputs(), Path(tmp) / "minilm.onnx", ENCODER_INPUTS, ENCODER_OUTPUTS)


def text_samples(n: int, seed: int) -> list[dict]:
    """``n`` random encoder inputs ``{input_ids, attention_mask}`` of [1, SEQ] int64."""
    rng = np.random.default_rng(seed)
    return [
        {"input_ids": rng.integers(0, VOCAB, (1, SEQ)).astype(np.int64), "attention_mask": np.ones((1, SEQ), np.int64)}
        for _ in range(n)
    ]


def stacked(samples: list[dict]) -> dict[str, np.ndarray]:
    """Samples stacked along a leading axis (edgecompile's ``calib`` layout)."""
    return {k: np.stack([s[k] for s in samples]) for k in samples[0]}


def digits_vit_onnx(tmp: Path) -> tuple[dict, Path, list[dict]]:
    """The digits ViT trained on scikit-learn's digits and exported to ``tmp/digits.onnx``:
    (the data splits, the ONNX path, the calibration samples ``{pixel_values: [1, ...]}``)."""
    import torch
    from digits_vit.digits import splits, train

    data = splits()
    model = train(data)
    path = Path(tmp) / "digits.onnx"
    export(model, (torch.from_numpy(data["x_test"][:1]),), path, ["pixel_values"], ["logits"])
    return data, path, [{"pixel_values": x[None]} for x in data["x_calib"]]
