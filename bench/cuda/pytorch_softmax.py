#!/usr/bin/env python3
"""PyTorch yardsticks for bench_cuda_softmax, on the same GPU in the same call (scripts/gpu-check runs both).

Effective bandwidth counts each tensor once, as the qsafe benchmark does (forward: x, y; backward: p or x, dy, dx).
  eager      torch.softmax; clipped softmax composed of softmax, mul, add, clamp (the papers' code); backward through
             autograd (vanilla: softmax's own backward kernel)
  compile    torch.compile of the composed clipped softmax, forward and backward (inductor, fused Triton kernels)
  copy       a device copy of the same bytes (clone) in the same process

Writes CSV rows op,variant,dtype,cols,impl,ms,tbps to --csv and prints them.
"""
import argparse
import csv
import sys
import time

import torch

from torch_timing import median_ms  # bench/cuda/torch_timing.py


def clipped(x, zeta, gamma):
    return torch.clamp(torch.softmax(x, dim=-1) * (zeta - gamma) + gamma, 0.0, 1.0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--elements", type=int, default=1 << 28)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--csv", default=None)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()

    # One compiled graph per (dtype, shape, grad mode): raise dynamo's recompile limit (8 by default), past which
    # it silently falls back to eager.
    for name in ("cache_size_limit", "recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    zeta, gamma = 1.0, -3.2 / 128  # clipped_softmax::from_alpha(3.2, 128), as the qsafe benchmark
    rows = []
    print(f"# torch {torch.__version__}, {torch.cuda.get_device_name()}, {args.elements} elements", flush=True)
    for dtype, name in ((torch.float32, "float32"), (torch.bfloat16, "bfloat16")):
        size = args.elements * torch.tensor([], dtype=dtype).element_size()
        x0 = torch.randn(args.elements, device="cuda", dtype=dtype) * 3
        ms = median_ms(lambda: x0.clone(), args.repeats)
        rows.append(("copy", "-", name, 0, "torch_clone", ms, 2 * size / ms * 1e-9))
        del x0
        compiled = None if args.no_compile else torch.compile(clipped, dynamic=False)
        for cols in (128, 512, 2048, 8192):
            x = (torch.randn(args.elements // cols, cols, device="cuda", dtype=dtype) * 3).requires_grad_(True)
            dy = torch.randn_like(x)
            n_bytes = x.numel() * x.element_size()

            def add(op, variant, impl, tensors, ms):
                rows.append((op, variant, name, cols, impl, ms, tensors * n_bytes / ms * 1e-9))
                print(",".join(map(str, rows[-1])), flush=True)

            with torch.no_grad():
                add("forward", "vanilla", "torch_eager", 2, median_ms(lambda: torch.softmax(x, -1), args.repeats))
                add("forward", "clipped", "torch_eager", 2, median_ms(lambda: clipped(x, zeta, gamma), args.repeats))
            y = torch.softmax(x.detach(), -1)
            add("backward", "vanilla", "torch_eager", 3, median_ms(
                lambda: torch._softmax_backward_data(dy, y, -1, x.dtype), args.repeats))
            out = clipped(x, zeta, gamma)
            add("backward", "clipped", "torch_eager", 3, median_ms(
                lambda: torch.autograd.grad(out, x, dy, retain_graph=True), args.repeats))
            del out
            if compiled is not None:
                t0 = time.time()
                with torch.no_grad():
                    compiled(x, zeta, gamma)
                out = compiled(x, zeta, gamma)
                torch.autograd.grad(out, x, dy, retain_graph=True)
                print(f"# compiled clipped softmax for {name} T={cols} in {time.time() - t0:.1f} s", flush=True)
                with torch.no_grad():
                    add("forward", "clipped", "torch_compile", 2, median_ms(lambda: compiled(x, zeta, gamma), args.repeats))
                add("backward", "clipped", "torch_compile", 3, median_ms(
                    lambda: torch.autograd.grad(out, x, dy, retain_graph=True), args.repeats))
                del out
            del x, dy, y
            torch.cuda.empty_cache()
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["op", "variant", "dtype", "cols", "impl", "ms", "tbps"])
            for r in rows:
                w.writerow([r[0], r[1], r[2], r[3], r[4], f"{r[5]:.5f}", f"{r[6]:.4f}"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
