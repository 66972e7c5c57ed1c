#!/usr/bin/env python3
"""PyTorch yardstick for bench_cuda_quant, same GPU, same call: torch.fake_quantize_per_tensor_affine (8-bit,
asymmetric, the same scale and zero point as qsafe's make_qparams({-3, 3}, 8, asymmetric)) forward, and its
backward through autograd; fake_quantize_per_channel_affine on rows x 4096 along each axis, as bench_cuda_quant.
Effective bandwidth: forward 2 tensors, backward 3 (x, dy, dx)."""
import argparse
import sys

import torch

from torch_timing import median_ms  # bench/cuda/torch_timing.py


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
        # Per channel, as bench_cuda_quant: rows x 4096, a channel per column (axis 1) or per row (axis 0).
        xm = x.detach().view(-1, 4096).requires_grad_(True)
        # Rows: 4096 channels, as bench_cuda_quant (row r in channel r % 4096): a (-1, 4096, 4096) view, axis 1.
        for axis, label in ((1, "4096 columns"), (0, "4096 rows")):
            view = xm if axis == 1 else xm.view(-1, 4096, 4096)
            channels = 4096
            hi = 2.0 + (torch.arange(channels, device="cuda") % 7) * 0.25
            scales = (2 * hi / 255).float()
            zero_points = torch.full((channels,), 128, device="cuda", dtype=torch.int32)
            try:
                with torch.no_grad():
                    f = median_ms(lambda: torch.fake_quantize_per_channel_affine(view, scales, zero_points, 1, 0, 255),
                                  args.repeats)
                out = torch.fake_quantize_per_channel_affine(view, scales, zero_points, 1, 0, 255)
                dym = dy.view(out.shape)
                b = median_ms(lambda: torch.autograd.grad(out, xm, dym, retain_graph=True), args.repeats)
                print(f"{name:9} torch per channel, {label:14} {2 * size / f * 1e-9:6.3f} TB/s | "
                      f"backward (autograd) {3 * size / b * 1e-9:6.3f} TB/s", flush=True)
            except RuntimeError as e:
                print(f"{name:9} torch per channel, {label}: not run ({str(e).splitlines()[0]})", flush=True)
        del xm
        del x, dy
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
