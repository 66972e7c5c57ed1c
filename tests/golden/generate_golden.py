#!/usr/bin/env python3
# Committed output: torch 2.11.0 (CPU kernels), run on the lent GPU machine.
"""Generate the PyTorch golden vectors that tests/quant/golden.cpp reads.

Run once on a machine with PyTorch (any device; everything here runs on the CPU, float32 unless noted):

    python3 tests/golden/generate_golden.py --out tests/golden

Writes three text files. Every number is a Python float in hex (float.hex(), read back with std::strtod), so
nothing is lost in printing. Each record is one line: a key, then its values.

  fake_quant.txt   torch.fake_quantize_per_tensor_affine / _per_channel_affine outputs and the gradient of
                   y.sum() (the STE mask) on inputs with exact ties, code-range ends, large values, +-inf, 1e30
  observers.txt    MinMaxObserver, PerChannelMinMaxObserver and MovingAverageMinMaxObserver (averaging
                   constant 0.1, i.e. momentum 0.9) qparams and ranges, incl. an all-zero and a constant tensor
  statistics.txt   kurtosis (Pearson, central, population variance), excess kurtosis, inf-norm, OSP per-token
                   excess kurtosis (uncentred 4th moment, clipped at 0), computed in float64 from float32 data;
                   torch.quantile (float32, linear) of the same data
"""
import argparse
import os

import torch


def hexes(t):
    return " ".join(float(v).hex() for v in t.double().flatten().tolist())


def fake_quant_cases(f):
    g = torch.Generator().manual_seed(1)
    cases = [
        # name, scale (made float32), zero_point, quant_min, quant_max
        ("u8_pow2", 0.25, 128, 0, 255),
        ("u8_tenth", 0.1, 3, 0, 255),
        ("s8_sym", 0.0123, 0, -128, 127),
        ("u4", 0.37, 5, 0, 15),
        ("u16", 1.0e-3, 30000, 0, 65535),
    ]
    for name, scale, zp, qmin, qmax in cases:
        s = float(torch.tensor(scale, dtype=torch.float32))
        codes = torch.arange(qmin - 3, qmax + 4, dtype=torch.float64)
        if codes.numel() > 600:
            codes = codes[torch.randperm(codes.numel(), generator=g)[:600]].sort().values
        parts = [
            ((codes - zp) * s).float(),                     # on the grid
            ((codes - zp + 0.5) * s).float(),               # ties (exact where s is a power of two)
            (torch.randn(400, generator=g, dtype=torch.float64) * (qmax - qmin) * s / 3).float(),
            torch.tensor([0.0, -0.0, 1e6 * s, -1e6 * s, 3.0e9 * s, -3.0e9 * s], dtype=torch.float32),
        ]
        x = torch.cat(parts)
        x.requires_grad_(True)
        y = torch.fake_quantize_per_tensor_affine(x, s, zp, qmin, qmax)
        y.sum().backward()
        f.write(f"case {name} {s.hex()} {zp} {qmin} {qmax} {x.numel()}\n")
        f.write(f"x {hexes(x.detach())}\n")
        f.write(f"y {hexes(y.detach())}\n")
        f.write(f"grad {hexes(x.grad)}\n")
    # Values whose x/s overflows int64 in PyTorch's kernel (an undefined float-to-int conversion there in older
    # versions): the C++ test checks qsafe's clamp to the end codes, and that these outputs agree.
    s = 0.25
    x = torch.tensor([float("inf"), float("-inf"), 1e30, -1e30, 3.0e38, -3.0e38], dtype=torch.float32)
    y = torch.fake_quantize_per_tensor_affine(x, s, 128, 0, 255)
    f.write(f"overflow u8_pow2 {s.hex()} 128 0 255 {x.numel()}\n")
    f.write(f"x {hexes(x)}\n")
    f.write(f"y {hexes(y)}\n")
    # Per channel, along both axes of a 2-D tensor.
    for axis in (0, 1):
        x = (torch.randn(6, 9, generator=g) * 3).float()
        channels = x.shape[axis]
        scales = (torch.rand(channels, generator=g) * 0.2 + 0.01).float()
        zps = torch.randint(0, 256, (channels,), generator=g, dtype=torch.int32)
        y = torch.fake_quantize_per_channel_affine(x, scales, zps, axis, 0, 255)
        f.write(f"channels {axis} {x.shape[0]} {x.shape[1]}\n")
        f.write(f"scales {hexes(scales)}\n")
        f.write(f"zero_points {' '.join(str(int(v)) for v in zps.tolist())}\n")
        f.write(f"x {hexes(x)}\n")
        f.write(f"y {hexes(y)}\n")


def observer_cases(f):
    from torch.ao.quantization.observer import (MinMaxObserver, MovingAverageMinMaxObserver,
                                                PerChannelMinMaxObserver)
    g = torch.Generator().manual_seed(2)
    tensors = {
        "normal": torch.randn(3000, generator=g) * 2 + 0.5,
        "positive": torch.rand(3000, generator=g) * 7 + 1,
        "negative": -torch.rand(3000, generator=g) * 5,
        "heavy": torch.randn(3000, generator=g) * torch.exp(torch.randn(3000, generator=g)),
        "zeros": torch.zeros(100),
        "constant": torch.full((100,), 3.25),
    }
    for name, x in tensors.items():
        x = x.float()
        for quant_min, quant_max in ((0, 255), (0, 15)):
            obs = MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine, quant_min=quant_min,
                                 quant_max=quant_max)
            obs(x)
            scale, zp = obs.calculate_qparams()
            f.write(f"minmax {name} {quant_min} {quant_max} {x.numel()} {float(obs.min_val).hex()} "
                    f"{float(obs.max_val).hex()} {float(scale).hex()} {int(zp)}\n")
            f.write(f"x {hexes(x)}\n")
    # Per channel along axis 0 of a (4, 500) tensor.
    x = (torch.randn(4, 500, generator=g) * torch.tensor([[0.1], [1.0], [10.0], [0.0]])).float()
    obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.quint8, qscheme=torch.per_channel_affine)
    obs(x)
    scales, zps = obs.calculate_qparams()
    f.write(f"per_channel {x.shape[0]} {x.shape[1]}\n")
    f.write(f"x {hexes(x)}\n")
    f.write(f"scales {hexes(scales)}\n")
    f.write(f"zero_points {' '.join(str(int(v)) for v in zps.tolist())}\n")
    # Moving average over 16 batches of 8 x 64 (BERT-like calibration, momentum 0.9).
    obs = MovingAverageMinMaxObserver(averaging_constant=0.1, dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    batches = [(torch.randn(8, 64, generator=g) * (1 + i % 3)).float() for i in range(16)]
    for b in batches:
        obs(b)
    scale, zp = obs.calculate_qparams()
    f.write(f"moving_average {len(batches)} 8 64 {float(obs.min_val).hex()} {float(obs.max_val).hex()} "
            f"{float(scale).hex()} {int(zp)}\n")
    for b in batches:
        f.write(f"x {hexes(b)}\n")


def statistics_cases(f):
    g = torch.Generator().manual_seed(3)
    data = {
        "normal": torch.randn(32, 64, generator=g),
        "heavy": torch.randn(32, 64, generator=g) * torch.exp(torch.randn(32, 64, generator=g)),
        "outliers": torch.randn(32, 64, generator=g).index_put_((torch.tensor([3, 17]), torch.tensor([5, 40])),
                                                                 torch.tensor([300.0, -900.0])),
        "offset": 1e6 + torch.randn(32, 64, generator=g, dtype=torch.float64),
    }
    for name, x in data.items():
        x = x.float()
        d = x.double()
        mu = d.mean()
        var = ((d - mu) ** 2).mean()
        kurt = ((d - mu) ** 4).mean() / var ** 2
        row_mu = d.mean(dim=1, keepdim=True)
        row_var = ((d - row_mu) ** 2).mean(dim=1)
        osp = ((d ** 4).mean(dim=1) / row_var ** 2 - 3).clamp(min=0).mean()
        qs = torch.tensor([0.0, 0.00001, 0.001, 0.25, 0.5, 0.99, 0.99999, 1.0], dtype=torch.float32)
        quantiles = torch.quantile(x.flatten(), qs)
        f.write(f"stats {name} {x.shape[0]} {x.shape[1]} {float(mu).hex()} {float(kurt).hex()} "
                f"{float(kurt - 3).hex()} {float(d.abs().max()).hex()} {float(osp).hex()}\n")
        f.write(f"x {hexes(x)}\n")
        f.write(f"quantile_q {hexes(qs)}\n")
        f.write(f"quantile {hexes(quantiles)}\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    header = f"# generated by tests/golden/generate_golden.py with torch {torch.__version__}\n"
    for file_name, writer in (("fake_quant.txt", fake_quant_cases), ("observers.txt", observer_cases),
                              ("statistics.txt", statistics_cases)):
        with open(os.path.join(args.out, file_name), "w") as f:
            f.write(header)
            try:
                writer(f)
            except Exception as error:  # keep the other files; the C++ test fails on a truncated file
                print(f"{file_name}: {type(error).__name__}: {error}")
                f.write(f"error {type(error).__name__}\n")
    print("torch", torch.__version__, "wrote", args.out)


if __name__ == "__main__":
    main()
