"""Latency on a device registered with a TVM RPC tracker (``edgecompile report --rpc HOST:PORT
--key KEY``), the way TVM measures on phones and boards.

The device runs TVM's own RPC server (``python -m tvm.exec.rpc_server --tracker HOST:PORT --key
KEY``, or TVM's Android RPC app) and registers with a tracker (``python -m tvm.exec.rpc_tracker``,
which needs ``tornado``). For each artifact a session is requested from the tracker, the
library is uploaded and loaded there, its inputs copied to the device, and the VM's
``time_evaluator`` times ``runs`` calls on the device's own clock, after a warm-up call.
Evaluation runs there too (so cross-compiled artifacts are scored on the device that runs them),
its samples split over every free device with the key. Compilation stays on this machine.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecompile.errors import EdgeCompileError
from edgecompile.runtime.manifest import read_verified

MAX_SESSIONS = 8  # evaluation spreads over at most this many devices


class RemoteError(EdgeCompileError):
    """The RPC tracker or device could not be reached or used."""


def parse_rpc(address: str, key: str | None) -> RemoteDevice:
    """``HOST:PORT`` and the device key as a :class:`RemoteDevice`."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RemoteError(f"--rpc takes the tracker's HOST:PORT, got {address!r}")
    if not key:
        raise RemoteError("--rpc needs --key: the key the device registered with the tracker (e.g. android)")
    return RemoteDevice(host, int(port), key)


@dataclass(frozen=True)
class RemoteDevice:
    host: str
    port: int
    key: str
    session_timeout: int = 600  # seconds one artifact's session may take

    def describe(self) -> str:
        return f"rpc {self.key}@{self.host}:{self.port}"

    def session(self):
        """An RPC session on a device with the key, from the tracker."""
        tracker = self.check()
        try:
            return tracker.request(self.key, priority=1, session_timeout=self.session_timeout)
        except Exception as e:  # noqa: BLE001 - TVM raises bare RuntimeErrors/socket errors here
            raise RemoteError(f"no session for key {self.key!r} at {self.host}:{self.port}: {_last_line(e)}") from e

    def check(self):
        """The tracker, once it is known to be reachable and to list the key."""
        import socket

        from tvm import rpc

        try:  # TVM's client retries an unreachable tracker for a minute; fail at once instead
            socket.create_connection((self.host, self.port), timeout=5).close()
        except OSError as e:
            raise RemoteError(f"cannot reach the RPC tracker at {self.host}:{self.port}: {e}") from e
        try:
            tracker = rpc.connect_tracker(self.host, self.port)
            keys = tracker.summary().get("queue_info", {})
        except Exception as e:  # noqa: BLE001 - TVM raises bare RuntimeErrors/socket errors here
            raise RemoteError(f"cannot reach the RPC tracker at {self.host}:{self.port}: {_last_line(e)}") from e
        if self.key not in keys:  # a request for an unknown key would wait forever
            known = ", ".join(sorted(keys)) or "none"
            raise RemoteError(f"no device registered with key {self.key!r} at {self.host}:{self.port} (keys: {known})")
        return tracker

    def _open(self, artifact: Path):
        """A session with the artifact loaded: ``(session, vm, device, manifest, weights)``; the weights
        (``main``'s trailing arguments) are copied to the device once per session."""
        import tvm
        from tvm import relax

        from edgecompile.runtime.weights import map_weights

        manifest = read_verified(artifact)
        lib = artifact / manifest["library"]
        sess = self.session()
        sess.upload(str(lib))
        rlib = sess.load_module(lib.name)
        kind = manifest["target"].get("device", "cpu")
        dev = {"cpu": sess.cpu, "cuda": sess.cuda, "opencl": sess.cl}[kind](0)
        section = manifest.get("weights")
        views = map_weights(artifact, section) if section else []
        weights = [tvm.runtime.tensor(np.ascontiguousarray(v), dev) for v in views]
        return sess, relax.VirtualMachine(rlib, dev), dev, manifest, weights

    def devices(self) -> int:
        """How many devices with the key the tracker has free now (at least 1)."""
        info = self.check().summary().get("queue_info", {}).get(self.key, {})
        return max(1, int(info.get("free", 1)))

    def outputs(self, artifact: str | Path, samples: list[dict], name: str) -> np.ndarray:
        """Output ``name`` for every sample, run on the devices: the samples are split over as many
        sessions as the tracker has free devices with the key (up to :data:`MAX_SESSIONS`)."""
        from concurrent.futures import ThreadPoolExecutor

        import tvm

        artifact = Path(artifact)
        n = min(self.devices(), MAX_SESSIONS, len(samples))
        chunks = [list(range(i, len(samples), n)) for i in range(n)]

        def run(idx: list[int]) -> dict[int, np.ndarray]:
            _sess, vm, dev, manifest, weights = self._open(artifact)
            pos = [o["name"] for o in manifest["outputs"]].index(name)
            got = {}
            for i in idx:
                feeds = samples[i]
                args = [tvm.runtime.tensor(np.ascontiguousarray(feeds[t["name"]]), dev) for t in manifest["inputs"]]
                out = vm["main"](*args, *weights)
                got[i] = (out if hasattr(out, "numpy") else out[pos]).numpy()
            return got

        with ThreadPoolExecutor(n) as pool:
            results = {k: v for part in pool.map(run, chunks) for k, v in part.items()}
        return np.stack([results[i] for i in range(len(samples))])

    def time(self, artifact: str | Path, feeds: dict, runs: int, threads: int) -> dict:
        """``{"median", "p90"}`` milliseconds of ``runs`` calls of the artifact on the device."""
        import tvm

        sess, vm, dev, manifest, weights = self._open(Path(artifact))
        if threads:
            sess.get_function("runtime.config_threadpool")(1, threads)

        args = [tvm.runtime.tensor(np.ascontiguousarray(feeds[i["name"]]), dev) for i in manifest["inputs"]]
        timer = vm.time_evaluator("main", dev, number=1, repeat=runs, min_repeat_ms=0)
        times = sorted(t * 1e3 for t in timer(*args, *weights).results)
        p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
        return {"median": statistics.median(times), "p90": p90}


def _last_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[-1] if text else type(e).__name__
