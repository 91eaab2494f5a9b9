#!/usr/bin/env python
"""Distributed tuning through TVM's RPC tracker, on LOOPBACK ONLY (127.0.0.1).

Starts a local RPC tracker and one RPC server registered under a key, then runs shiftcomp's MetaSchedule
driver (`shiftcomp.tune.tune_module`) with an RPCRunner that asks the tracker for that server; candidates
are built locally (LocalBuilder + fast_build), uploaded and measured over RPC. Bounded: `--trials`
measured candidates and a `--timeout` on the whole run; tracker and server are always terminated.

    python experiments/tune_rpc_loopback.py --trials 4 --work-dir /tmp/rpc_db
    python experiments/tune_rpc_loopback.py --layer r20_conv16@32 --trials 8

Never point this at a non-loopback address from the sandbox; on a real cluster, start `tvm.exec.rpc_tracker`
and `tvm.exec.rpc_server --tracker host:port --key KEY` on the devices and pass `--rpc host:port:KEY` to
`python -m shiftcomp.tune` instead.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HOST = "127.0.0.1"


def start_loopback(key: str, tracker_port: int = 9190, server_port: int = 9090, wait_s: float = 30.0):
    """Start a tracker and one server on 127.0.0.1; wait until the server registered. Returns (tracker, server)."""
    from tvm import rpc
    from tvm.rpc.server import Server
    from tvm.rpc.tracker import Tracker

    tracker = Tracker(host=HOST, port=tracker_port, port_end=tracker_port + 9, silent=True)
    server = Server(host=HOST, port=server_port, port_end=server_port + 9, tracker_addr=(HOST, tracker.port),
                    key=key, silent=True)
    t0 = time.time()
    while time.time() - t0 < wait_s:
        try:
            summary = rpc.connect_tracker(HOST, tracker.port).summary()
            if key in json.dumps(summary.get("server_info", []), default=str):
                return tracker, server
        except Exception:
            pass
        time.sleep(0.3)
    server.terminate()
    tracker.terminate()
    raise RuntimeError(f"RPC server did not register with the tracker within {wait_s} s")


def tiny_prim():
    """A small shift-dense PrimFunc (TE), used when no layer is named."""
    from tvm import te

    X = te.placeholder((8, 128), "int32", "X")
    S = te.placeholder((128, 64), "int8", "S")
    k = te.reduce_axis((0, 128), "k")
    Y = te.compute((8, 64), lambda i, j: te.sum(X[i, k] << S[k, j].astype("int32"), axis=k), name="Y")
    return te.create_prim_func([X, S, Y], index_dtype_override="int64")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--layer", default=None, help="a shiftcomp.bench layer case whose shift kernel to tune")
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--key", default="shiftcomp-loopback")
    ap.add_argument("--timeout", type=float, default=600.0, help="hard limit for the whole run, seconds")
    a = ap.parse_args(argv)

    def _alarm(*_):
        raise TimeoutError(f"tune_rpc_loopback exceeded {a.timeout} s")

    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(a.timeout))
    from shiftcomp import tune as T

    wd = a.work_dir or tempfile.mkdtemp(prefix="shiftcomp_rpc_")
    t0 = time.time()
    tracker, server = start_loopback(a.key)
    print(f"[{time.time() - t0:.1f}s] tracker {HOST}:{tracker.port}, server registered as {a.key!r}", flush=True)
    try:
        tgt = T.resolve_target("llvm")
        if a.layer:
            from shiftcomp import bench
            case = bench.find_cases([a.layer])[0]
            sm = bench.to_shift(case.float_module(), bench.default_shift_config())
            task = T.model_tasks(sm, case.example_inputs(), tgt, sides=("shift_kernels",))["shift_kernels"][0]
            mod = {task.name: task.prim}
        else:
            mod = tiny_prim()
        rpc = T.RPCSpec(HOST, tracker.port, a.key, session_timeout_sec=60)
        summ = T.tune_module(mod, tgt, a.trials, wd, rpc, num_trials_per_iter=min(4, a.trials))
        print(json.dumps(summ.to_dict(), indent=1, default=str))
        print(T.database_summary(wd))
        ok = summ.measured > 0 and T.database_summary(wd)["measured"] > 0
        print(f"[{time.time() - t0:.1f}s] {'OK' if ok else 'FAILED'}: {summ.measured} records via {summ.measured_on}")
        return 0 if ok else 1
    finally:
        signal.alarm(0)
        server.terminate()
        tracker.terminate()


if __name__ == "__main__":
    raise SystemExit(main())
