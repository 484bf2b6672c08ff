"""GPU benchmark of the :mod:`refrnn.cuda` kernels: achieved bandwidth and FLOP/s as fractions of the device.

Usage::

    python -m refrnn.bench.cuda                      # T=256, B=64, H=4096, float32
    python -m refrnn.bench.cuda --hidden 1024 --json results.json
    NUMBA_ENABLE_CUDASIM=1 python -m refrnn.bench.cuda --smoke   # tiny sizes: checks the script, not speed

What it reports (every time is the median of ``--repeat`` runs after a warm-up run, from CUDA events):

* the device's *measured* copy bandwidth (a device-to-device copy of a large buffer: 2 bytes moved per
  byte copied) and its theoretical memory bandwidth and FMA peak where the driver reports the clocks;
  a measured FMA peak (a kernel of independent fused multiply-adds), the reachable ceiling for FLOP/s;
* SRU recurrence kernel (forward, inference): bytes it must move (U and the skip input read once, h
  written once) / time, as a fraction of the copy bandwidth. The bar on an H100 is >= 70 %;
* SRU layer forward (product + recurrence) with refrnn's tiled product and with cuBLAS, and the ratio
  to ``torch.nn.LSTM`` / ``torch.nn.GRU`` (cuDNN) of the same size when PyTorch has CUDA;
* fused GRU/LSTM steps: FLOP/s of the T recurrent products (2 B H gH per step) for the fused tiled
  kernel and for cuBLAS + point-wise kernel, as fractions of the measured and theoretical peaks, and
  the whole forward against cuDNN.

Exits with status 0 and a message when there is no GPU (or no numba-cuda), so scripts can call it anywhere.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import numpy as np

from .timer import interleaved

# FP32 and FP64 fused multiply-add units per SM, by compute capability (NVIDIA's CUDA C++ Programming
# Guide, "Arithmetic Instructions" throughput table). Used only for the theoretical peak; the measured
# FMA peak does not depend on it.
FMA_PER_SM = {
    (7, 0): (64, 32), (7, 5): (64, 2), (8, 0): (64, 32), (8, 6): (128, 2), (8, 7): (128, 2), (8, 9): (128, 2),
    (9, 0): (128, 64), (10, 0): (128, 64), (12, 0): (128, 2),
}


def _parse(argv):
    ap = argparse.ArgumentParser(prog="refrnn bench-cuda", description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", "-T", type=int, default=256)
    ap.add_argument("--batch", "-B", type=int, default=64)
    ap.add_argument("--hidden", "-H", type=int, default=4096, help="hidden size of the SRU (and D = H)")
    ap.add_argument("--rnn-hidden", type=int, default=None, help="hidden size of the GRU/LSTM runs (default: --hidden)")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--tile", type=int, default=16, help="tile edge of refrnn's product kernels")
    ap.add_argument("--skip-rnn", action="store_true", help="only the SRU and the device peaks")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat, simulator allowed (checks the script)")
    return ap.parse_args(argv)


class _Timer:
    """``timer(fn)``: median seconds of ``fn()`` over the repeats after one warm-up call (compilation,
    allocation), from CUDA events; the simulator's events carry no time, so there the host clock
    (smoke runs only)."""

    def __init__(self, cuda, repeat, simulated):
        self.cuda, self.repeat, self.simulated = cuda, repeat, simulated

    def _events(self, fn) -> float:
        cuda = self.cuda
        cuda.synchronize()
        start, stop = cuda.event(), cuda.event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        return start.elapsed_time(stop) / 1e3  # milliseconds

    def __call__(self, fn) -> float:
        times = interleaved({"fn": fn}, repeats=self.repeat, warmup=1, timed_call=None if self.simulated else self._events)
        return statistics.median(times["fn"])


def _device_info(cuda):
    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    info = {"name": name, "compute_capability": list(dev.compute_capability)}

    def attr(name):
        try:
            return int(getattr(dev, name))
        except Exception:  # noqa: BLE001 - newer drivers drop some clock attributes
            return None

    sms, clock_khz = attr("MULTIPROCESSOR_COUNT"), attr("CLOCK_RATE")
    mem_khz, bus_bits = attr("MEMORY_CLOCK_RATE"), attr("GLOBAL_MEMORY_BUS_WIDTH")
    info["sms"] = sms
    if mem_khz and bus_bits:  # double data rate: two transfers per clock
        info["theoretical_bandwidth"] = 2 * mem_khz * 1e3 * bus_bits / 8
    units = FMA_PER_SM.get(tuple(dev.compute_capability))
    if units and sms and clock_khz:
        info["theoretical_flops"] = {
            "float32": 2 * units[0] * sms * clock_khz * 1e3,
            "float64": 2 * units[1] * sms * clock_khz * 1e3,
        }
    return info


def _torch_cudnn():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _time_torch(torch, module, x, repeat):
    """Median seconds of ``module(x)`` from torch's CUDA events, after one warm-up call."""

    def events(fn) -> float:
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        return start.elapsed_time(stop) / 1e3  # milliseconds

    with torch.no_grad():
        return statistics.median(interleaved({"fn": lambda: module(x)}, repeats=repeat, warmup=1, timed_call=events)["fn"])


def run(args) -> dict:
    from refrnn.cuda import _device

    cuda = _device.require_cuda()
    simulated = _device.simulated()
    if simulated and not args.smoke:
        raise SystemExit("refrnn bench-cuda: the CUDA simulator is not a GPU; run with --smoke to check the script only")
    from refrnn.cells import gru as gru_ref
    from refrnn.cells import lstm as lstm_ref
    from refrnn.cells import sru as sru_ref
    from refrnn.bench import _peak as peak
    from refrnn.cuda import gru, lstm, matmul, sru

    if args.smoke:
        args.steps, args.batch, args.hidden, args.rnn_hidden, args.repeat, args.tile = 2, 2, 8, 8, 1, 4
    T, B, H = args.steps, args.batch, args.hidden
    Hr = args.rnn_hidden or H
    dt = np.dtype(args.dtype)
    timer = _Timer(cuda, args.repeat, simulated)
    rng = np.random.default_rng(0)
    res = {"T": T, "B": B, "H": H, "rnn_hidden": Hr, "dtype": dt.name, "simulated": simulated}
    res["device"] = {"name": "simulator"} if simulated else _device_info(cuda)

    copy_bytes = 1 << (12 if args.smoke else 30)
    res["copy_bandwidth"] = peak.copy_bandwidth(timer, copy_bytes)
    sms = res["device"].get("sms") or 1
    blocks, threads, iters = (1, 4, 2) if args.smoke else (sms * 8, 256, 4096)
    res["fma_peak_measured"] = peak.fma_flops(timer, dt, blocks, threads, iters)
    theo_flops = res["device"].get("theoretical_flops", {}).get(dt.name)

    try:
        vendor = matmul.cublas_gemm()
        res["cublas_provider"] = vendor.provider
    except RuntimeError as err:
        vendor = None
        res["cublas_provider"] = f"unavailable: {err}"
    torch = _torch_cudnn()

    # --- SRU ---------------------------------------------------------------------------------------
    p = sru_ref.init(H, H, rng=rng, dtype=dt)
    P = sru.upload(p)
    X = cuda.to_device(rng.standard_normal((T, B, H)).astype(dt))
    C0 = cuda.to_device(np.zeros((B, H), dt))
    U = cuda.to_device(rng.standard_normal((T, B, 3 * H)).astype(dt) * dt.type(0.1))
    h, c_T = cuda.device_array((T, B, H), dt), cuda.device_array((B, H), dt)
    seconds = timer(lambda: sru.recurrence(P, U, X, C0, h, c_T))
    moved = (5 * T * B * H + 2 * B * H) * dt.itemsize  # U (3H) and x (H) read, h written; c0 read, c_T written
    res["sru_recurrence"] = {"seconds": seconds, "bytes": moved, "bandwidth": moved / seconds,
                             "fraction_of_copy": moved / seconds / res["copy_bandwidth"]}
    if "theoretical_bandwidth" in res["device"]:
        res["sru_recurrence"]["fraction_of_theoretical"] = moved / seconds / res["device"]["theoretical_bandwidth"]
    layer = {}
    for name, product in [("tiled", "tiled"), ("cublas", vendor)]:
        if product is None:
            continue
        layer[name] = timer(lambda: sru.forward_inference(P, X, C0, algorithm=product, tile=args.tile))
    res["sru_layer_forward_seconds"] = layer

    # --- fused GRU / LSTM steps --------------------------------------------------------------------
    if not args.skip_rnn:
        Xr = cuda.to_device(rng.standard_normal((T, B, Hr)).astype(dt))
        for cell, ref, mod, gates in [("gru", gru_ref, gru, 3), ("lstm", lstm_ref, lstm, 4)]:
            p = ref.init(Hr, Hr, rng=rng, dtype=dt)
            P = mod.upload(p)
            flops = 2 * B * Hr * gates * Hr * T
            entry = {"flop_per_forward_recurrence": flops}
            for name, product in [("fused_tiled", "tiled"), ("cublas_pointwise", vendor)]:
                if name == "cublas_pointwise" and vendor is None:
                    continue
                ax = mod.project(P, Xr, algorithm=product, tile=args.tile)
                states = [cuda.to_device(np.zeros((T + 1, B, Hr), dt))]  # h_0..h_T
                if cell == "lstm":
                    states.append(cuda.to_device(np.zeros((2, B, Hr), dt)))  # the ring of c
                seconds = timer(lambda: mod.recurrence(P, ax, *states, algorithm=product, tile=args.tile))
                rate = flops / seconds
                e = {"seconds": seconds, "flops": rate, "fraction_of_measured_peak": rate / res["fma_peak_measured"]}
                if theo_flops:
                    e["fraction_of_theoretical_peak"] = rate / theo_flops
                e["whole_forward_seconds"] = timer(lambda: mod.forward_inference(P, Xr, algorithm=product, tile=args.tile))
                entry[name] = e
            res[cell] = entry

    # --- cuDNN -------------------------------------------------------------------------------------
    if torch is not None:
        tdt = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[dt]
        cudnn = {}
        sizes = [("LSTM", H), ("GRU", H)]
        if not args.skip_rnn:
            sizes += [("LSTM_rnn_hidden", Hr), ("GRU_rnn_hidden", Hr)]
        for cell, size in sizes:
            kind = cell.split("_")[0]
            module = getattr(torch.nn, kind)(size, size).to(device="cuda", dtype=tdt)
            x = torch.randn(T, B, size, device="cuda", dtype=tdt)
            cudnn[cell] = _time_torch(torch, module, x, args.repeat)
        res["cudnn_forward_seconds"] = cudnn
        for name, seconds in layer.items():
            res.setdefault("sru_speedup_vs_cudnn", {})[name] = {
                "LSTM": cudnn["LSTM"] / seconds, "GRU": cudnn["GRU"] / seconds}
        if not args.skip_rnn:
            for cell in ("gru", "lstm"):
                for name, e in res[cell].items():
                    if isinstance(e, dict):
                        e["cudnn_over_refrnn"] = cudnn[cell.upper() + "_rnn_hidden"] / e["whole_forward_seconds"]
    else:
        res["cudnn_forward_seconds"] = "unavailable: PyTorch with CUDA is not importable"
    return res


def _report(res) -> str:
    GB, TF = 1e9, 1e12
    lines = [f"device: {res['device'].get('name')}  T={res['T']} B={res['B']} H={res['H']} "
             f"(GRU/LSTM H={res['rnn_hidden']}) {res['dtype']}"]
    lines.append(f"copy bandwidth (device-to-device, measured): {res['copy_bandwidth'] / GB:.1f} GB/s")
    if "theoretical_bandwidth" in res["device"]:
        lines.append(f"memory bandwidth (theoretical):              {res['device']['theoretical_bandwidth'] / GB:.1f} GB/s")
    lines.append(f"FMA peak (measured): {res['fma_peak_measured'] / TF:.2f} TFLOP/s")
    s = res["sru_recurrence"]
    lines.append(f"SRU recurrence kernel: {s['seconds'] * 1e3:.3f} ms, {s['bandwidth'] / GB:.1f} GB/s = "
                 f"{100 * s['fraction_of_copy']:.1f}% of copy bandwidth")
    for name, sec in res["sru_layer_forward_seconds"].items():
        extra = ""
        if isinstance(res.get("sru_speedup_vs_cudnn"), dict):
            sp = res["sru_speedup_vs_cudnn"][name]
            extra = f"  ({sp['LSTM']:.1f}x faster than cuDNN LSTM, {sp['GRU']:.1f}x than cuDNN GRU)"
        lines.append(f"SRU layer forward, {name} product: {sec * 1e3:.3f} ms{extra}")
    for cell in ("gru", "lstm"):
        for name, e in res.get(cell, {}).items():
            if not isinstance(e, dict):
                continue
            line = (f"{cell.upper()} {name}: recurrence {e['seconds'] * 1e3:.3f} ms, {e['flops'] / TF:.2f} TFLOP/s = "
                    f"{100 * e['fraction_of_measured_peak']:.1f}% of measured peak")
            if "fraction_of_theoretical_peak" in e:
                line += f" ({100 * e['fraction_of_theoretical_peak']:.1f}% of theoretical)"
            if "cudnn_over_refrnn" in e:
                line += f"; whole forward = {1 / e['cudnn_over_refrnn']:.2f}x cuDNN's time"
            lines.append(line)
    lines.append(f"cuBLAS: {res['cublas_provider']}")
    if isinstance(res["cudnn_forward_seconds"], str):
        lines.append(f"cuDNN: {res['cudnn_forward_seconds']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = _parse(argv)
    try:
        from refrnn.cuda import _device

        _device.require_cuda()
        _device.require_device()
    except (ImportError, RuntimeError) as err:
        print(f"refrnn bench-cuda: nothing to benchmark: {err}")
        return 0
    res = run(args)
    print(_report(res))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
