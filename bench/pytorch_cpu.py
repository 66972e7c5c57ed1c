#!/usr/bin/env python3
"""PyTorch on the CPU, one thread: the yardsticks of BENCHMARKS.md that qsafe's CPU benchmarks sit next to.

Run it right after the qsafe benchmark it is compared with, on the same machine (Debian 12: `apt-get install
python3-torch`, torch 1.13; run with /usr/bin/python3), e.g.

    OMP_NUM_THREADS=1 build/release/bench/bench_calibration --benchmark_filter='/16777216' && \\
        /usr/bin/python3 bench/pytorch_cpu.py

Data as the C++ benchmarks: N(0, 1) with 1 in 10^4 values 50x larger, float32, 2^24 elements (viewed as rows of
4096 where a shape matters). Prints median ns per element (milliseconds for the histogram searches) of --repeats
timed calls after one warm-up.
"""
import argparse
import statistics
import time

import torch


def median_seconds(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def activations(n, generator):
    x = torch.randn(n, generator=generator)
    rare = torch.rand(n, generator=generator) < 1e-4
    return torch.where(rare, 50.0 * torch.randn(n, generator=generator), x)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--log2", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = 1 << args.log2
    g = torch.Generator().manual_seed(42)
    x = activations(n, g)
    rows = x.view(-1, 4096)
    y = torch.empty_like(x)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, 2^{args.log2} float32")
    results = []

    def report(name, seconds, unit="ns/element"):
        value = seconds * 1e9 / n if unit == "ns/element" else seconds * 1e3
        results.append((name, value, unit))
        print(f"{name:60s} {value:10.3f} {unit}", flush=True)

    report("copy (y.copy_(x), 2 tensors)", median_seconds(lambda: y.copy_(x), args.repeats))

    # HistogramObserver: observe (forward) on a tensor whose range it has already seen, and the L2 search.
    observer = torch.ao.quantization.HistogramObserver()
    report("HistogramObserver observe (forward), 2048 bins", median_seconds(lambda: observer(x), args.repeats))
    report("HistogramObserver calculate_qparams (its L2 search)",
           median_seconds(observer.calculate_qparams, args.repeats), unit="ms")
    minmax = torch.ao.quantization.MinMaxObserver()
    report("MinMaxObserver observe (forward)", median_seconds(lambda: minmax(x), args.repeats))
    per_channel = torch.ao.quantization.PerChannelMinMaxObserver(ch_axis=1)
    columns = x[: n // 768 * 768].view(-1, 768)
    report("PerChannelMinMaxObserver observe, 768 columns", median_seconds(lambda: per_channel(columns), args.repeats))

    scale, zero_point = 0.05, 128
    report("fake_quantize_per_tensor_affine forward",
           median_seconds(lambda: torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255), args.repeats))
    xg = x.clone().requires_grad_(True)
    dy = torch.randn(n, generator=g)

    def fake_quant_backward():
        xg.grad = None
        torch.fake_quantize_per_tensor_affine(xg, scale, zero_point, 0, 255).backward(dy)

    report("fake_quantize_per_tensor_affine forward + backward (autograd)",
           median_seconds(fake_quant_backward, args.repeats))
    s = torch.tensor([scale], requires_grad=True)
    z = torch.tensor([127.3], requires_grad=True)

    def learnable_backward():
        xg.grad = s.grad = z.grad = None
        torch._fake_quantize_learnable_per_tensor_affine(xg, s, z, 0, 255, 1.0).backward(dy)

    report("_fake_quantize_learnable_per_tensor_affine fwd + bwd (LSQ)", median_seconds(learnable_backward, args.repeats))

    def kurtosis():
        d = x - x.mean()
        return (d.pow(4).mean() / d.pow(2).mean().pow(2)).item()

    report("kurtosis composed (mean, sub, pow, mean)", median_seconds(kurtosis, args.repeats))
    report("abs().max()", median_seconds(lambda: x.abs().max().item(), args.repeats))
    report("quantile 0.001% and 99.999% (both tails)",
           median_seconds(lambda: torch.quantile(x, torch.tensor([1e-5, 1 - 1e-5])), max(1, args.repeats // 2)))
    for t in (128, 512, 2048, 8192):
        scores = x.view(-1, t)
        report(f"softmax forward, T = {t}", median_seconds(lambda: torch.softmax(scores, -1), args.repeats))
        zeta, gamma = 1.003, -0.003

        def clipped():
            return torch.clamp((zeta - gamma) * torch.softmax(scores, -1) + gamma, 0, 1)

        report(f"clipped softmax forward (softmax, mul, add, clamp), T = {t}", median_seconds(clipped, args.repeats))


if __name__ == "__main__":
    main()
