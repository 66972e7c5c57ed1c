#!/usr/bin/env python3
# Committed output: torch 1.13.1+dfsg (Debian 12's python3-torch, which reports 1.13.0a0; CPU kernels), run with
# /usr/bin/python3 on the development machine.
"""Generate the PyTorch golden vectors that tests/quant/lsq_golden.cpp reads.

Run once on a machine with PyTorch (CPU only, float32):

    python3 tests/golden/generate_lsq_golden.py --out tests/golden

Writes lsq.txt: torch._fake_quantize_learnable_per_tensor_affine and _per_channel_affine (LSQ / LSQ+ with a
learnable zero point), the forward and the autograd gradients of (y * dy).sum() with respect to x, the scale and
the zero point, with and without LSQ's gradient factor 1/sqrt(N * quant_max). Every number is a Python float in hex
(float.hex()). Records, one per line:

  case <name> <per_tensor|channel_rows|channel_columns> <rows> <cols> <quant_min> <quant_max> <grad_factor>
  scale <one per channel>        zero_point <one per channel>   (float32 values, as the op saw them)
  x <rows*cols>  dy <rows*cols>  y <rows*cols>  dx <rows*cols>
  dscale <one per channel>  dzero_point <one per channel>

PyTorch rounds the zero point half to even in the forward but as trunc(z + 0.5) in the backward: the two differ
at half-integers and at every negative zero point (z = -3.7: forward -4, backward -3; z = -4: backward -3). The
cases "tie" (z = 2.5) and "s8" (z = -3.7) are therefore written twice, the second time as "<name>_same_z" on the
same data at a zero point whose backward rounding is the zero point the forward used (2.0 -> 2, -5.0 -> -4);
qsafe rounds the same way in both passes, so its backward at 2.5 and -3.7 should be torch's backward there.
"""
import argparse
import math
import os

import torch


def hexes(t):
    return " ".join(float(v).hex() for v in t.double().flatten().tolist())


def write_case(f, name, layout, x, dy, scale, zero_point, qmin, qmax, grad_factor):
    x = x.clone().requires_grad_(True)
    s = scale.clone().requires_grad_(True)
    z = zero_point.clone().requires_grad_(True)
    if layout == "per_tensor":
        y = torch._fake_quantize_learnable_per_tensor_affine(x, s, z, qmin, qmax, grad_factor)
    else:
        axis = 0 if layout == "channel_rows" else 1
        y = torch._fake_quantize_learnable_per_channel_affine(x, s, z, axis, qmin, qmax, grad_factor)
    (y * dy).sum().backward()
    rows, cols = x.shape
    f.write(f"case {name} {layout} {rows} {cols} {qmin} {qmax} {float(grad_factor).hex()}\n")
    f.write(f"scale {hexes(scale)}\n")
    f.write(f"zero_point {hexes(zero_point)}\n")
    f.write(f"x {hexes(x.detach())}\n")
    f.write(f"dy {hexes(dy)}\n")
    f.write(f"y {hexes(y.detach())}\n")
    f.write(f"dx {hexes(x.grad)}\n")
    f.write(f"dscale {hexes(s.grad)}\n")
    f.write(f"dzero_point {hexes(z.grad)}\n")


def data(g, rows, cols, spread):
    # A normal bulk scaled so that about a fifth of the values fall outside the codes (both ends), plus exact code
    # points, to exercise the inside / below / above branches.
    x = torch.randn(rows, cols, generator=g) * spread
    return x.float()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args()
    g = torch.Generator().manual_seed(9)
    with open(os.path.join(args.out, "lsq.txt"), "w") as f:
        f.write(f"# torch {torch.__version__}, tests/golden/generate_lsq_golden.py\n")
        cases = [
            # name, rows, cols, qmin, qmax, scale, zero point, zero point of the "_same_z" partner (or None)
            ("u8", 40, 50, 0, 255, 0.02, 97.3, None),
            ("s8", 33, 61, -128, 127, 0.015, -3.7, -5.0),
            ("u4", 29, 37, 0, 15, 0.21, 6.2, None),
            ("tie", 31, 43, 0, 15, 0.21, 2.5, 2.0),
        ]
        for name, rows, cols, qmin, qmax, scale, zp, partner in cases:
            levels = qmax - qmin
            x = data(g, rows, cols, 0.4 * levels * scale) + (zp - (qmin + qmax) / 2) * -scale
            dy = torch.randn(rows, cols, generator=g)
            for case_name, z_value in ((name, zp), (name + "_same_z", partner)):
                if z_value is None:
                    continue
                s = torch.tensor([scale], dtype=torch.float32)
                z = torch.tensor([z_value], dtype=torch.float32)
                for factor_name, factor in (("", 1.0), ("_lsq", 1.0 / math.sqrt(x.numel() * qmax))):
                    write_case(f, case_name + factor_name, "per_tensor", x, dy, s, z, qmin, qmax, factor)
        # Per channel, both axes: scales and zero points differ per channel.
        for layout, rows, cols in (("channel_rows", 7, 300), ("channel_columns", 250, 9)):
            channels = rows if layout == "channel_rows" else cols
            scale = (0.01 + 0.03 * torch.rand(channels, generator=g)).float()
            zp = (20.0 + 200.0 * torch.rand(channels, generator=g)).float()
            zp = torch.where((zp - zp.floor() - 0.5).abs() < 0.01, zp + 0.1, zp)  # off the ties
            shape = (rows, 1) if layout == "channel_rows" else (1, cols)
            x = torch.randn(rows, cols, generator=g) * (0.4 * 255 * scale.view(shape)) + (127.5 - zp.view(shape)) * scale.view(shape)
            dy = torch.randn(rows, cols, generator=g)
            per_channel = x.numel() // channels
            for factor_name, factor in (("", 1.0), ("_lsq", 1.0 / math.sqrt(per_channel * 255))):
                write_case(f, layout + factor_name, layout, x.float(), dy, scale, zp, 0, 255, factor)


if __name__ == "__main__":
    main()
