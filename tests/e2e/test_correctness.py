"""Compiled outputs match ONNX Runtime (max abs error <= 1e-4 of the output range) for transformer
models exported with both ONNX exporters and imported through the PyTorch frontend."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close, ort_run

torch = pytest.importorskip("torch")
from models import BertStyleEncoder, EncoderStack, TinyViT, export_onnx  # noqa: E402

import edgecompile  # noqa: E402


def _bert():
    ids = torch.randint(0, 1000, (1, 24), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(1, 24, dtype=torch.int64)
    mask[:, 17:] = 0  # padding: the mask must change the result
    return (
        BertStyleEncoder(),
        (ids, mask),
        ["input_ids", "attention_mask"],
        ["last_hidden_state", "pooled"],
        {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}},
    )


def _vit():
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    return TinyViT(), (x,), ["pixel_values"], ["logits"], None


def _stack(norm_first):
    def make():
        x = torch.randn(1, 16, 64, generator=torch.Generator().manual_seed(5))
        return EncoderStack(norm_first=norm_first), (x,), ["x"], ["y"], None

    return make


MODELS = {"bert-masked": _bert, "vit": _vit, "encoder-prenorm": _stack(True), "encoder-postnorm": _stack(False)}


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_export_matches_onnxruntime(name, exporter, tmp_path):
    module, args, in_names, out_names, dynamic = MODELS[name]()
    path = tmp_path / f"{name}.onnx"
    export_onnx(module, args, path, in_names, out_names, dynamo=exporter == "dynamo", dynamic=dynamic)
    if exporter == "dynamo":
        assert list(tmp_path.glob("*.data")), "the dynamo exporter should have written external data"
    feeds = {n: a.numpy() for n, a in zip(in_names, args)}
    shapes = {n: tuple(a.shape) for n, a in zip(in_names, args)} if dynamic else None
    art = edgecompile.compile(path, target="native", output=tmp_path / "art", input_shapes=shapes)
    got = edgecompile.load(art).run(feeds)
    ref = ort_run(path, feeds)
    assert list(got) == list(ref)
    for k in ref:
        assert_close(ref[k], got[k])


@pytest.mark.parametrize("name", list(MODELS))
def test_pytorch_frontend_matches_onnxruntime(name, tmp_path):
    module, args, in_names, out_names, dynamic = MODELS[name]()
    path = tmp_path / f"{name}.onnx"
    export_onnx(module, args, path, in_names, out_names, dynamo=False)
    art = edgecompile.compile(module, target="native", output=tmp_path / "art", example_inputs=args)
    model = edgecompile.load(art)
    assert [i["name"] for i in model.inputs] == in_names
    feeds = {n: a.numpy() for n, a in zip(in_names, args)}
    got = list(model.run(feeds).values())
    ref = list(ort_run(path, feeds).values())
    assert len(got) == len(ref)
    for r, g in zip(ref, got):
        assert_close(r, g)
    with torch.no_grad():
        eager = module(*args)
    eager = eager if isinstance(eager, tuple) else (eager,)
    for e, g in zip(eager, got):
        assert_close(e.numpy(), g)


def test_pytorch_frontend_from_input_shapes(tmp_path):
    """Without example inputs, shapes and dtypes name the inputs of forward()."""
    module, args, *_ = _bert()
    art = edgecompile.compile(
        module,
        target="native",
        output=tmp_path / "art",
        input_shapes={"input_ids": (1, 24), "attention_mask": (1, 24)},
        input_dtypes={"input_ids": "int64", "attention_mask": "int64"},
    )
    got = edgecompile.load(art).run({"input_ids": args[0].numpy(), "attention_mask": args[1].numpy()})
    with torch.no_grad():
        ref = module(*args)
    assert_close(ref[0].numpy(), got["output_0"])


def test_masking_changes_the_output(example_artifact, example_feeds):
    """Guards the comparisons above: the mask input is live in the compiled graph."""
    model = edgecompile.load(example_artifact)
    a = model.run(example_feeds)["pooled"]
    feeds = dict(example_feeds, attention_mask=np.ones_like(example_feeds["attention_mask"]))
    b = model.run(feeds)["pooled"]
    assert np.max(np.abs(a - b)) > 1e-3
