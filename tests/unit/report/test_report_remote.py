"""``edgecompile report --rpc``: latency measured through TVM's RPC tracker on a device server,
both started here on 127.0.0.1 (the way TVM reaches phones and boards); unreachable trackers and
unknown keys are clear errors."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecompile.cli import app


@pytest.fixture(scope="module")
def tracker():
    pytest.importorskip("tornado")  # TVM's tracker needs it (the test extra installs it)
    from tvm.rpc.server import Server
    from tvm.rpc.tracker import Tracker

    t = Tracker(host="127.0.0.1", port=9190, port_end=9290, silent=True)
    s = Server(host="127.0.0.1", port=9300, port_end=9400, tracker_addr=("127.0.0.1", t.port), key="loopback",
               silent=True)  # fmt: skip
    from tvm import rpc

    for _ in range(50):  # until the server has registered
        if "loopback" in rpc.connect_tracker("127.0.0.1", t.port).summary().get("queue_info", {}):
            break
        time.sleep(0.2)
    yield t.port
    s.terminate()
    t.terminate()


def _args(digits, tmp_path, *extra):
    data, onnx_path, calib, _ = digits
    eval_npz = tmp_path / "eval.npz"
    np.savez(eval_npz, pixel_values=data["x_test"][:20, None], labels=data["y_test"][:20])
    return ["report", str(onnx_path), "--eval", str(eval_npz), "--calib", str(calib), "--recipes", "fp32,int8",
            "--runs", "5", "--sensitivity-samples", "0", "-o", str(tmp_path / "r"), *extra]  # fmt: skip


def test_latency_through_the_rpc_tracker(digits, tmp_path, tracker):
    r = CliRunner().invoke(app, _args(digits, tmp_path, "--rpc", f"127.0.0.1:{tracker}", "--key", "loopback"))
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    assert rep["timing"]["device"] == f"rpc loopback@127.0.0.1:{tracker}"
    for row in rep["rows"]:
        assert 0 < row["latency_ms"]["median"] <= row["latency_ms"]["p90"] < 1000
        assert "sensitivity" not in row


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--rpc", "127.0.0.1:1", "--key", "loopback"], "cannot reach the RPC tracker at 127.0.0.1:1"),
        (["--rpc", "localhost", "--key", "x"], "--rpc takes the tracker's HOST:PORT"),
        (["--rpc", "127.0.0.1:9190"], "--rpc needs --key"),
    ],
)
def test_rpc_errors_are_clear(digits, tmp_path, flags, message):
    r = CliRunner().invoke(app, _args(digits, tmp_path, *flags))
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output


def test_unknown_key_is_named(digits, tmp_path, tracker):
    r = CliRunner().invoke(app, _args(digits, tmp_path, "--rpc", f"127.0.0.1:{tracker}", "--key", "android"))
    assert r.exit_code == 2 and "no device registered with key 'android'" in r.output and "loopback" in r.output
