#!/usr/bin/env python3
"""PyTorch yardstick for bench_cuda_quant, same GPU, same call: torch.fake_quantize_per_tensor_affine (8-bit,
asymmetric, the same scale and zero point as qsafe's make_qparams({-3, 3}, 8, asymmetric)) forward, and its
backward through autograd. Effective bandwidth: forward 2 tensors, backward 3 (x, dy, dx)."""
import argparse
import sys

import torch


def median_ms(fn, repeats):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--elements", type=int, default=1 << 28)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    scale, zero_point = 6.0 / 255.0, 128
    for dtype, name in ((torch.float32, "float32"), (torch.bfloat16, "bfloat16")):
        x = (torch.rand(args.elements, device="cuda", dtype=torch.float32) * 8 - 4).to(dtype).requires_grad_(True)
        dy = torch.randn_like(x)
        size = x.numel() * x.element_size()
        try:
            with torch.no_grad():
                f = median_ms(lambda: torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255), args.repeats)
            out = torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255)
            b = median_ms(lambda: torch.autograd.grad(out, x, dy, retain_graph=True), args.repeats)
            print(f"{name:9} torch fake_quantize_per_tensor_affine {2 * size / f * 1e-9:6.3f} TB/s | "
                  f"backward (autograd) {3 * size / b * 1e-9:6.3f} TB/s", flush=True)
        except RuntimeError as e:  # e.g. a dtype the op does not take
            print(f"{name:9} torch fake_quantize_per_tensor_affine: not run ({str(e).splitlines()[0]})", flush=True)
        del x, dy
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
