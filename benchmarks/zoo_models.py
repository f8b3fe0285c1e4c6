"""The model zoo of ``benchmarks/zoo.py``: six architectures at realistic sizes, seeded random weights.

- ``bert-base``, ``minilm``: ``examples/models.py``'s BertStyleEncoder (``_common.bert_style``) at
  BERT-base and MiniLM-L6 sizes, seq 128.
- ``deit-s``: a DeiT-S-sized ViT (224x224, patch 16, hidden 384, 12 layers, 6 heads, FFN 1536,
  class token, 1000 classes).
- ``dinov2-dpt``: a DINOv2-style ViT-S/14 at 224 (257 tokens, LayerScale) under a dense-prediction
  head (ConvTranspose2d upsampling, 3x3 convs with BatchNorm and ReLU, bilinear resize, 1x1 conv to a
  one-channel depth map).
- ``efficientformer-l1``: EfficientFormer-L1 (conv stem, Meta4D pooling blocks, widths 48/96/224/448,
  depths 3/2/6/4, the last block a Meta3D attention block on 7x7 tokens).
- ``mobilevit-xs``: MobileViT-XS (MobileNetV2 inverted residuals, MobileViT blocks with 2x2 patches),
  256x256.

Torch is imported inside the builders: importing this module is cheap. BatchNorm running statistics
and LayerScale factors are drawn at random too, so no layer is an identity the exporter could drop.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ZooModel:
    """One benchmark model: the module (eval mode), its example inputs and ONNX input/output names."""

    key: str
    label: str
    module: object  # torch.nn.Module
    inputs: tuple  # torch tensors, batch 1
    input_names: list[str]
    output_names: list[str]
    shape: str  # tokens or input size, for the summary


_CLASSES: dict = {}


def _nn() -> dict:
    """The model classes, defined on first use (they need torch)."""
    if not _CLASSES:
        _CLASSES.update(_define())
    return _CLASSES


def _define() -> dict:
    """The model classes (torch imported here)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Attention(nn.Module):
        """Multi-head self-attention on [B, N, D] tokens with one fused QKV projection (timm's layout)."""

        def __init__(self, dim: int, heads: int):
            super().__init__()
            self.heads, self.hd = heads, dim // heads
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            b, n, d = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.hd).permute(2, 0, 3, 1, 4).unbind(0)
            a = (q @ k.transpose(-2, -1)) * self.hd**-0.5
            return self.proj((a.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d))

    class Block(nn.Module):
        """Pre-norm transformer block; ``layerscale`` multiplies each branch by a learned vector."""

        def __init__(self, dim: int, heads: int, ffn: int, layerscale: bool = False, act=nn.GELU):
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
            self.attn = Attention(dim, heads)
            self.mlp = nn.Sequential(nn.Linear(dim, ffn), act(), nn.Linear(ffn, dim))
            self.ls1 = nn.Parameter(0.1 + 0.05 * torch.rand(dim)) if layerscale else None
            self.ls2 = nn.Parameter(0.1 + 0.05 * torch.rand(dim)) if layerscale else None

        def forward(self, x):
            a = self.attn(self.norm1(x))
            x = x + (a * self.ls1 if self.ls1 is not None else a)
            m = self.mlp(self.norm2(x))
            return x + (m * self.ls2 if self.ls2 is not None else m)

    class ViTBackbone(nn.Module):
        """Conv patch embedding (stride == kernel), class token, position embedding, pre-norm blocks."""

        def __init__(self, image, patch, dim, layers, heads, ffn, layerscale=False):
            super().__init__()
            self.patch = nn.Conv2d(3, dim, patch, stride=patch)
            n = (image // patch) ** 2
            self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
            self.pos = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
            self.blocks = nn.Sequential(*(Block(dim, heads, ffn, layerscale) for _ in range(layers)))
            self.norm = nn.LayerNorm(dim, eps=1e-6)

        def forward(self, x):
            x = self.patch(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
            return self.norm(self.blocks(x))

    class DeiT(nn.Module):
        def __init__(self, image=224, patch=16, dim=384, layers=12, heads=6, ffn=1536, classes=1000):
            super().__init__()
            self.vit = ViTBackbone(image, patch, dim, layers, heads, ffn)
            self.head = nn.Linear(dim, classes)

        def forward(self, pixel_values):
            return self.head(self.vit(pixel_values)[:, 0])

    def conv_bn_relu(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    class DinoDepth(nn.Module):
        """DINOv2-style ViT-S/14 (LayerScale) and a dense-prediction head: patch tokens as a 16x16 map,
        upsampled x8 by transposed convs, resized to the input and projected to one channel."""

        def __init__(self, image=224, patch=14, dim=384, layers=12, heads=6, ffn=1536):
            super().__init__()
            self.grid, self.image = image // patch, image
            self.vit = ViTBackbone(image, patch, dim, layers, heads, ffn, layerscale=True)
            self.head = nn.Sequential(
                nn.ConvTranspose2d(dim, 256, 2, stride=2),  # 16 -> 32
                conv_bn_relu(256, 256),
                nn.ConvTranspose2d(256, 128, 2, stride=2),  # 32 -> 64
                conv_bn_relu(128, 128),
                nn.ConvTranspose2d(128, 64, 3, stride=2, padding=1, output_padding=1),  # 64 -> 128
                conv_bn_relu(64, 64),
            )
            self.out = nn.Conv2d(64, 1, 1)

        def forward(self, pixel_values):
            t = self.vit(pixel_values)[:, 1:]  # drop the class token
            b, n, d = t.shape
            x = self.head(t.transpose(1, 2).reshape(b, d, self.grid, self.grid))
            x = F.interpolate(x, size=(self.image, self.image), mode="bilinear", align_corners=False)
            return self.out(x)

    def conv_bn(cin, cout, k=1, stride=1, groups=1):
        return nn.Sequential(
            nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)
        )

    class Meta4D(nn.Module):
        """EfficientFormer's conv block: pooling token mixer (avg pool minus identity), 1x1-conv MLP."""

        def __init__(self, dim: int, ratio: int = 4):
            super().__init__()
            self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
            self.mlp = nn.Sequential(conv_bn(dim, dim * ratio), nn.GELU(), conv_bn(dim * ratio, dim))
            self.ls1 = nn.Parameter(0.1 + 0.05 * torch.rand(dim, 1, 1))
            self.ls2 = nn.Parameter(0.1 + 0.05 * torch.rand(dim, 1, 1))

        def forward(self, x):
            x = x + self.ls1 * (self.pool(x) - x)
            return x + self.ls2 * self.mlp(x)

    class Attention3D(nn.Module):
        """EfficientFormer's attention: 8 heads, key dim 32, value dim 4 x 32, learned attention biases."""

        def __init__(self, dim: int, tokens: int, key_dim: int = 32, heads: int = 8, ratio: int = 4):
            super().__init__()
            self.heads, self.kd, self.vd = heads, key_dim, ratio * key_dim
            self.qkv = nn.Linear(dim, heads * (2 * key_dim + self.vd))
            self.bias = nn.Parameter(torch.randn(heads, tokens, tokens) * 0.1)
            self.proj = nn.Linear(heads * self.vd, dim)

        def forward(self, x):
            b, n, _ = x.shape
            qkv = self.qkv(x).reshape(b, n, self.heads, -1).permute(0, 2, 1, 3)
            q, k, v = qkv.split([self.kd, self.kd, self.vd], dim=3)
            a = (q @ k.transpose(-2, -1)) * self.kd**-0.5 + self.bias
            return self.proj((a.softmax(-1) @ v).transpose(1, 2).reshape(b, n, self.heads * self.vd))

    class Meta3D(nn.Module):
        def __init__(self, dim: int, tokens: int, ratio: int = 4):
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.attn = Attention3D(dim, tokens)
            self.mlp = nn.Sequential(nn.Linear(dim, dim * ratio), nn.GELU(), nn.Linear(dim * ratio, dim))
            self.ls1 = nn.Parameter(0.1 + 0.05 * torch.rand(dim))
            self.ls2 = nn.Parameter(0.1 + 0.05 * torch.rand(dim))

        def forward(self, x):
            x = x + self.ls1 * self.attn(self.norm1(x))
            return x + self.ls2 * self.mlp(self.norm2(x))

    class EfficientFormer(nn.Module):
        def __init__(self, widths=(48, 96, 224, 448), depths=(3, 2, 6, 4), vit_num=1, image=224, classes=1000):
            super().__init__()
            self.stem = nn.Sequential(
                conv_bn(3, widths[0] // 2, 3, 2), nn.ReLU(), conv_bn(widths[0] // 2, widths[0], 3, 2), nn.ReLU()
            )
            stages = []
            for i, (w, d) in enumerate(zip(widths, depths)):
                if i:
                    stages.append(conv_bn(widths[i - 1], w, 3, 2))  # downsampling
                n4d = d - vit_num if i == len(widths) - 1 else d
                stages += [Meta4D(w) for _ in range(n4d)]
            self.stages = nn.Sequential(*stages)
            tokens = (image // 32) ** 2
            self.meta3d = nn.Sequential(*(Meta3D(widths[-1], tokens) for _ in range(vit_num)))
            self.norm = nn.LayerNorm(widths[-1])
            self.head = nn.Linear(widths[-1], classes)

        def forward(self, pixel_values):
            x = self.stages(self.stem(pixel_values))
            x = self.norm(self.meta3d(x.flatten(2).transpose(1, 2)))  # 7x7 = 49 tokens
            return self.head(x.mean(1))

    def conv_bn_silu(cin, cout, k=1, stride=1, groups=1):
        return nn.Sequential(conv_bn(cin, cout, k, stride, groups), nn.SiLU())

    class InvertedResidual(nn.Module):
        """MobileNetV2 block: 1x1 expand, depthwise 3x3 (stride), 1x1 project; residual where shapes allow."""

        def __init__(self, cin: int, cout: int, stride: int, expand: int = 4):
            super().__init__()
            hid = cin * expand
            self.res = stride == 1 and cin == cout
            self.body = nn.Sequential(
                conv_bn_silu(cin, hid), conv_bn_silu(hid, hid, 3, stride, groups=hid), conv_bn(hid, cout)
            )

        def forward(self, x):
            return x + self.body(x) if self.res else self.body(x)

    class MobileViTBlock(nn.Module):
        """Local 3x3 + 1x1 convs, unfold into 2x2 patches, transformer over each patch position,
        fold, 1x1 conv back, concatenated with the input and fused by a 3x3 conv."""

        def __init__(self, ch: int, dim: int, layers: int, heads: int = 4, patch: int = 2):
            super().__init__()
            self.p = patch
            self.local = nn.Sequential(conv_bn_silu(ch, ch, 3), nn.Conv2d(ch, dim, 1, bias=False))
            self.transformer = nn.Sequential(*(Block(dim, heads, 2 * dim, act=nn.SiLU) for _ in range(layers)))
            self.norm = nn.LayerNorm(dim)
            self.proj = conv_bn_silu(dim, ch)
            self.fuse = conv_bn_silu(2 * ch, ch, 3)

        def forward(self, x):
            y = self.local(x)
            b, d, h, w = y.shape
            p, nh, nw = self.p, h // self.p, w // self.p
            y = y.reshape(b, d, nh, p, nw, p).permute(0, 3, 5, 2, 4, 1).reshape(b * p * p, nh * nw, d)  # unfold
            y = self.norm(self.transformer(y))
            y = y.reshape(b, p, p, nh, nw, d).permute(0, 5, 3, 1, 4, 2).reshape(b, d, h, w)  # fold
            return self.fuse(torch.cat([x, self.proj(y)], dim=1))

    class MobileViT(nn.Module):
        """MobileViT-XS: channels 16/32/48/64/80/96, transformer dims 96/120/144 with 2/4/3 layers."""

        def __init__(self, classes=1000):
            super().__init__()
            self.body = nn.Sequential(
                conv_bn_silu(3, 16, 3, 2),  # 128x128
                InvertedResidual(16, 32, 1),
                InvertedResidual(32, 48, 2),  # 64x64
                InvertedResidual(48, 48, 1),
                InvertedResidual(48, 48, 1),
                InvertedResidual(48, 64, 2),  # 32x32
                MobileViTBlock(64, 96, 2),
                InvertedResidual(64, 80, 2),  # 16x16
                MobileViTBlock(80, 120, 4),
                InvertedResidual(80, 96, 2),  # 8x8
                MobileViTBlock(96, 144, 3),
                conv_bn_silu(96, 384),
            )
            self.head = nn.Linear(384, classes)

        def forward(self, pixel_values):
            return self.head(self.body(pixel_values).mean((2, 3)))

    return {"DeiT": DeiT, "DinoDepth": DinoDepth, "EfficientFormer": EfficientFormer, "MobileViT": MobileViT}


def _randomize_norms(module) -> None:
    """Seeded random BatchNorm statistics and affine parameters (fresh ones are the identity)."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
                m.weight.copy_(0.5 + 0.5 * torch.rand(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))


def _vision(key: str, label: str, cls: str, image: int, shape: str, out: str) -> ZooModel:
    import torch

    torch.manual_seed(0)
    module = _nn()[cls]()
    _randomize_norms(module)
    x = torch.randn(1, 3, image, image, generator=torch.Generator().manual_seed(0))
    return ZooModel(key, label, module.eval(), (x,), ["pixel_values"], [out], shape)


def _encoder(key: str, label: str, size) -> ZooModel:
    import torch
    from _common import ENCODER_INPUTS, ENCODER_OUTPUTS, SEQ, bert_style, token_inputs

    torch.manual_seed(0)
    return ZooModel(key, label, bert_style(size), token_inputs(), ENCODER_INPUTS, ENCODER_OUTPUTS, f"{SEQ} tokens")


def build(key: str) -> ZooModel:
    """The zoo model ``key`` (one of :data:`MODELS`) with its example inputs."""
    from _common import BERT_BASE, MINILM_L6

    makers = {
        "bert-base": lambda: _encoder(key, "BERT-base-sized encoder", BERT_BASE),
        "minilm": lambda: _encoder(key, "MiniLM-L6-sized encoder", MINILM_L6),
        "deit-s": lambda: _vision(key, "DeiT-S-sized ViT", "DeiT", 224, "224px, 197 tok", "logits"),
        "dinov2-dpt": lambda: _vision(key, "DINOv2 ViT-S/14 + depth head", "DinoDepth", 224, "224px, 257 tok", "depth"),
        "efficientformer-l1": lambda: _vision(
            key, "EfficientFormer-L1-style", "EfficientFormer", 224, "224px, 49 tok", "logits"
        ),
        "mobilevit-xs": lambda: _vision(key, "MobileViT-XS-style", "MobileViT", 256, "256px", "logits"),
    }
    if key not in makers:
        raise KeyError(f"unknown model {key!r}: one of {', '.join(MODELS)}")
    return makers[key]()


MODELS = ["bert-base", "minilm", "deit-s", "dinov2-dpt", "efficientformer-l1", "mobilevit-xs"]
