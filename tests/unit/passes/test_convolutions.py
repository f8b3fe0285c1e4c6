"""Convolutions rewritten before lowering: im2col conv2d and block-scatter conv2d_transpose as GEMMs
(passes/conv_gemm.py), depthwise conv2d, max and average pooling over their taps (passes/window_taps.py).
Each gives ONNX Runtime's outputs (float tolerance 1e-4 of the output range) and leaves no TVM
conv / pool kernel; the cases they do not take still compile and match."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import op_then_relu_model

import edgecompile

# name: (node attributes, weight shape, input shape, rewritten to a GEMM?)
CASES = {
    "3x3 pad 1": ("Conv", {"pads": [1, 1, 1, 1]}, (32, 16, 3, 3), (1, 16, 12, 12), True),
    "3x3 stride 2": ("Conv", {"pads": [1, 1, 1, 1], "strides": [2, 2]}, (24, 16, 3, 3), (1, 16, 13, 13), True),
    "3x3 dilation 2": ("Conv", {"pads": [2, 2, 2, 2], "dilations": [2, 2]}, (8, 16, 3, 3), (1, 16, 10, 10), True),
    "3x2 asymmetric pads": ("Conv", {"pads": [0, 1, 1, 0]}, (8, 16, 3, 2), (1, 16, 9, 11), True),
    "1x1": ("Conv", {}, (48, 16, 1, 1), (2, 16, 7, 7), True),
    # from 256 output pixels the kernel is on the left: W @ shifted input rows, NCHW out (conv_gemm.py)
    "3x3 pad 1, kernel left": ("Conv", {"pads": [1, 1, 1, 1]}, (24, 16, 3, 3), (1, 16, 20, 20), True),
    "3x3 stride 2 pad 1, kernel left": (
        "Conv",
        {"pads": [1, 1, 1, 1], "strides": [2, 2]},
        (16, 8, 3, 3),
        (1, 8, 35, 33),
        True,
    ),
    "3x3 pad 1, batch 2 (pixel rows)": ("Conv", {"pads": [1, 1, 1, 1]}, (24, 8, 3, 3), (2, 8, 20, 20), True),
    "3x2 dilation 2 asymmetric pads, kernel left": (
        "Conv",
        {"pads": [2, 0, 1, 1], "dilations": [2, 2]},
        (8, 16, 3, 2),
        (1, 16, 19, 21),
        True,
    ),
    "1x1, kernel left": ("Conv", {}, (48, 16, 1, 1), (2, 16, 16, 17), True),
    "grouped 3x3": ("Conv", {"pads": [1, 1, 1, 1], "group": 2}, (16, 8, 3, 3), (1, 16, 8, 8), False),
    # depthwise (passes/window_taps.py): the taps summed elementwise over a padded copy
    "depthwise 3x3 pad 1": ("Conv", {"pads": [1, 1, 1, 1], "group": 16}, (16, 1, 3, 3), (1, 16, 14, 14), True),
    "depthwise 3x3 stride 2": (
        "Conv",
        {"pads": [1, 1, 1, 1], "strides": [2, 2], "group": 16},
        (16, 1, 3, 3),
        (1, 16, 15, 15),
        True,
    ),
    "depthwise 5x5 dilation 2": (
        "Conv",
        {"pads": [4, 4, 4, 4], "dilations": [2, 2], "group": 16},
        (16, 1, 5, 5),
        (1, 16, 12, 12),
        True,
    ),
    "depthwise 3x3 unpadded": ("Conv", {"group": 16}, (16, 1, 3, 3), (2, 16, 9, 7), True),
    # column stride 2 reads even/odd column phases (passes/padding.column_phases): whole shuffled
    # chunks of 8 plus a tail, an odd padded width, dilation putting every tap in one phase
    "depthwise 3x3 stride 2 wide odd": (
        "Conv", {"pads": [1, 1, 1, 1], "strides": [2, 2], "group": 8}, (8, 1, 3, 3), (1, 8, 40, 37), True
    ),
    "depthwise 3x3 stride 2 dilation 2": (
        "Conv", {"pads": [2, 2, 2, 2], "strides": [2, 2], "dilations": [2, 2], "group": 8}, (8, 1, 3, 3),
        (1, 8, 33, 42), True,
    ),
    "max pool 3x3 stride 2 unpadded odd": (
        "MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2]}, None, (2, 8, 21, 35), True
    ),
    "avg pool 3x3 stride 2 pad 1 wide": (
        "AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, None, (1, 8, 24, 50), True
    ),
    "max pool 3x3 stride 2 pad 1": (
        "MaxPool",
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
        None,
        (1, 16, 15, 15),
        True,
    ),
    "max pool 2x2": ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}, None, (1, 16, 14, 14), True),
    "max pool ceil mode": (
        "MaxPool",
        {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
        None,
        (1, 16, 14, 14),
        False,
    ),
    # average pooling over its taps: without count_include_pad (ONNX's default) the divisor is the
    # number of taps inside the image, which differs at borders, corners and with asymmetric pads
    "avg pool 3x3 stride 1 pad 1 (EfficientFormer)": (
        "AveragePool",
        {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]},
        None,
        (1, 16, 14, 14),
        True,
    ),
    "avg pool 3x3 stride 2 pad 1 count_include_pad": (
        "AveragePool",
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1},
        None,
        (1, 16, 15, 15),
        True,
    ),
    "avg pool 3x2 asymmetric pads": (
        "AveragePool",
        {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [0, 1, 2, 0]},
        None,
        (1, 8, 11, 9),
        True,
    ),
    "avg pool 2x2": ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2]}, None, (2, 16, 14, 14), True),
    "avg pool ceil mode": (
        "AveragePool",
        {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
        None,
        (1, 16, 14, 14),
        False,
    ),
    "depthwise multiplier 2": ("Conv", {"pads": [1, 1, 1, 1], "group": 16}, (32, 1, 3, 3), (1, 16, 8, 8), False),
    "transposed 2x2 stride 2": ("ConvTranspose", {"strides": [2, 2]}, (16, 8, 2, 2), (1, 16, 6, 6), True),
    # overlapping blocks: TVM's own conv2d_transpose gets these wrong (off by up to 5 against ORT and torch)
    "transposed 3x3 stride 2": ("ConvTranspose", {"strides": [2, 2]}, (16, 8, 3, 3), (1, 16, 6, 6), True),
    "transposed 3x3 stride 2 pads, output_padding": (
        "ConvTranspose",
        {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
        (16, 8, 3, 3),
        (1, 16, 6, 6),
        True,
    ),
    # the DINOv2 focus head's upsampling: each output pixel takes 2x2 of the 16 taps
    "transposed 4x4 stride 2 pads 1": ("ConvTranspose", {"strides": [2, 2], "pads": [1, 1, 1, 1]}, (16, 8, 4, 4),
                                       (1, 16, 6, 6), True),  # fmt: skip
    "transposed 3x2 strides 2x3 batch 2": ("ConvTranspose", {"strides": [2, 3], "pads": [1, 0, 0, 1]}, (16, 8, 3, 2),
                                           (2, 16, 5, 4), True),  # fmt: skip
    # one image: the kernel on the left, ``[O*kh*kw, C] @ x[C, H*W]`` (x packed into column panels
    # at run time: K = C >= 144, 256 pixels), the blocks read by neighbouring output pixels adjacent
    "transposed 3x3 stride 2, input packed": (
        "ConvTranspose",
        {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
        (160, 8, 3, 3),
        (1, 160, 16, 16),
        True,
    ),
    "transposed 3x3 dilation 2": ("ConvTranspose", {"dilations": [2, 2]}, (16, 8, 3, 3), (1, 16, 5, 5), True),
    "transposed grouped": ("ConvTranspose", {"strides": [2, 2], "group": 2}, (16, 4, 2, 2), (1, 16, 4, 4), False),
    "transposed grouped 3x3": ("ConvTranspose", {"strides": [2, 2], "group": 2}, (16, 4, 3, 3), (1, 16, 4, 4), False),
}


def conv_model(path, op: str, attrs: dict, wshape, xshape):
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(len(path.name))
    inits, inputs = [], ["x"]
    if wshape is not None:
        w = (rng.standard_normal(wshape) * 0.2).astype(np.float32)
        outs = wshape[1] * attrs.get("group", 1) if op == "ConvTranspose" else wshape[0]
        bias = rng.standard_normal(outs).astype(np.float32)
        inits, inputs = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")], ["x", "w", "b"]
    return op_then_relu_model(path, helper.make_node(op, inputs, ["y"], **attrs), xshape, inits)


@pytest.mark.parametrize("case", list(CASES))
def test_convolution_matches_onnxruntime(case, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    op, attrs, wshape, xshape, rewritten = CASES[case]
    path = conv_model(tmp_path / "conv.onnx", op, attrs, wshape, xshape)
    art = edgecompile.compile(path, output=tmp_path / "art")
    x = np.random.default_rng(7).standard_normal(xshape).astype(np.float32)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = edgecompile.load(art).run({"x": x})["z"]
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * float(np.abs(ref).max()))
    table = json.loads((art / "manifest.json").read_text())["kernels"]
    kernels = [k["name"] for k in table]
    convs = [k for k in kernels if "conv2d" in k or "max_pool2d" in k or "avg_pool2d" in k]
    assert (not convs) == rewritten, kernels
    if rewritten:
        assert any(n in k for k in kernels for n in ("matmul", "depthwise", "max_pool", "avg_pool")), kernels
        assert all(k["rule"] != "fallback" for k in table), table
    if any(k.startswith("column_phases") for k in kernels):  # the split writes the padding itself
        assert not any(k.startswith("window_pad") for k in kernels), kernels
    if rewritten and (op != "Conv" or attrs.get("group", 1) > 1) and attrs.get("strides", [1, 1])[1] == 1:
        # a window op of column stride 1 pads in its own kernel (channels-last ones copy NHWC)
        assert not any(re.fullmatch(r"window_pad\d*", k) for k in kernels), kernels


def mobilenet_block(path, channels: int, size: int, stride: int):
    """ONNX ``x -> 1x1 expand -> ReLU6 -> depthwise 3x3 (stride) -> ReLU6 -> 1x1 project``: the
    inverted-residual block of MobileNet / EfficientNet-Lite, random weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(size)
    wide = channels * 4

    def weight(name, shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    bounds = [numpy_helper.from_array(np.float32(v), n) for n, v in (("lo", 0.0), ("hi", 6.0))]
    nodes = [
        helper.make_node("Conv", ["x", "we"], ["e"]),
        helper.make_node("Clip", ["e", "lo", "hi"], ["er"]),
        helper.make_node("Conv", ["er", "wd"], ["d"], group=wide, pads=[1, 1, 1, 1], strides=[stride, stride]),
        helper.make_node("Clip", ["d", "lo", "hi"], ["dr"]),
        helper.make_node("Conv", ["dr", "wp"], ["z"]),
    ]
    inits = [weight("we", (wide, channels, 1, 1)), weight("wd", (wide, 1, 3, 3)), weight("wp", (channels, wide, 1, 1))]
    graph = helper.make_graph(
        nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], inits + bounds,
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


ASSEMBLED = ("gather", "insert")  # vgatherdps, vinsertps / vinsertf128 / vinsertf32x4, vpinsrd


def _assembled_vectors(library: Path, part: str) -> dict[str, int]:
    """Per fused function of ``library`` whose name holds ``part``: its instructions that build a
    vector from scattered elements (x86 gathers and element or lane inserts)."""
    import subprocess

    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(library)], capture_output=True, text=True)
    counts: dict[str, int] = {}
    func = ""
    for line in listing.stdout.splitlines():
        if line.endswith(">:") and "<" in line:
            func = line[line.index("<") + 1 : -2]
            func = func if func.startswith("fused") and part in func else ""
            if func:
                counts.setdefault(func, 0)
        elif func and "\t" in line:
            mnemonic = line.split("\t")[1].split(" ")[0]
            counts[func] += any(word in mnemonic for word in ASSEMBLED)
    return counts


# output pixels: 14x14 and 7x7 are below conv_gemm.MIN_PIXELS_RIGHT (channels-last taps between the
# pixel-rows GEMMs); 28x28 and 56 -> 28 stride 2 (column phases) are NCHW rows flattened into the next
# GEMM's columns, which the elementwise rule writes from the image's own rows
@pytest.mark.parametrize("channels,size,stride", [(16, 14, 1), (24, 14, 2), (8, 28, 1), (8, 56, 2)])
def test_depthwise_blocks_read_their_taps_as_vectors(channels, size, stride, tmp_path):
    """A depthwise convolution between two 1x1 convolutions matches ORT, and on x86 its kernel loads
    every tap as whole vectors: no gather, no vector put together element by element (a transpose
    or a flattening reshape fused in made LLVM assemble each tap from scalar loads with vinsertps:
    EfficientNet-Lite0's depthwise kernels ran at 5 GFLOP/s)."""
    import platform
    import shutil

    ort = pytest.importorskip("onnxruntime")
    path = mobilenet_block(tmp_path / "block.onnx", channels, size, stride)
    art = edgecompile.compile(path, output=tmp_path / "art")
    x = np.random.default_rng(3).standard_normal((1, channels, size, size)).astype(np.float32)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = edgecompile.load(art).run({"x": x})["z"]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * float(np.abs(ref).max()))
    if platform.machine() not in ("x86_64", "AMD64") or shutil.which("objdump") is None:
        pytest.skip("the vector-load check reads x86 machine code with objdump; this host has no x86 objdump")
    assembled = _assembled_vectors(art / "model.so", "depthwise")  # with the clip before it fused in
    assert assembled, "no fused depthwise kernel in the library"
    assert not any(assembled.values()), assembled


@pytest.mark.parametrize("kernel,cin", [(3, 16), (1, 160)], ids=["3x3 im2col", "1x1"])
def test_kernel_left_columns_are_packed_where_deep(kernel, cin, tmp_path):
    """A kernel-left convolution's column matrix (K = C kh kw >= 144 deep, 256 pixels) is packed
    into the GEMM's column panels by the copy that writes it: one kernel for im2col and packing,
    the GEMM on packed panels, ONNX Runtime's outputs."""
    ort = pytest.importorskip("onnxruntime")
    attrs = {"pads": [kernel // 2] * 4}
    path = conv_model(tmp_path / "conv.onnx", "Conv", attrs, (24, cin, kernel, kernel), (1, cin, 16, 16))
    art = edgecompile.compile(path, output=tmp_path / "art")
    x = np.random.default_rng(3).standard_normal((1, cin, 16, 16)).astype(np.float32)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = edgecompile.load(art).run({"x": x})["z"]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * float(np.abs(ref).max()))
    names = [k["name"] for k in json.loads((art / "manifest.json").read_text())["kernels"]]
    assert any(n.startswith("matmul_packed") or "_matmul_packed" in n for n in names), names
    packs = [n for n in names if "pack_panels" in n]
    assert len(packs) == 1, names
    assert ("im2col" in packs[0]) == (kernel == 3), names


@pytest.mark.parametrize("width,fused", [(16, True), (40, False)], ids=["tiles-whole-rows", "tiles-cross-rows"])
def test_kernel_left_gemm_takes_bias_and_activation(width, fused, tmp_path):
    """A kernel-left convolution's GEMM computes its bias and ReLU in its tile epilogue (the reshape
    to NCHW between them marked elementwise, lower/reshape_epilogue.py) where its 64-wide column
    tiles hold whole image rows or whole numbers of them; at 40 pixels a row they would not, and
    the epilogue stays a kernel of its own (the same on every CPU's tile width: 64 with AVX-512,
    32 with AVX2, 16 with NEON). ONNX Runtime's outputs either way."""
    ort = pytest.importorskip("onnxruntime")
    xshape = (1, 24, 320 // width, width)
    path = conv_model(tmp_path / "conv.onnx", "Conv", {}, (32, 24, 1, 1), xshape)
    art = edgecompile.compile(path, output=tmp_path / "art")  # tiles 64 (AVX-512), 32 (AVX2), 16 (NEON) wide
    names = [k["name"] for k in json.loads((art / "manifest.json").read_text())["kernels"]]
    gemm = [n for n in names if "matmul" in n]
    assert len(gemm) == 1, names
    assert ("_flat_add" in gemm[0] and "relu" in gemm[0]) == fused, names
    x = np.random.default_rng(5).standard_normal(xshape).astype(np.float32)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = edgecompile.load(art).run({"x": x})["z"]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * float(np.abs(ref).max()))
