#!/usr/bin/env python3
"""PyTorch yardsticks for bench_cuda_stats, same GPU, same call, same kind of data (a sum of four uniforms):
kurtosis composed as the papers' code does (mean, sub, pow, mean; eager and torch.compile), aminmax and
abs().max() (effective TB/s: the tensor read once); the 99.999th percentile by kthvalue (torch.quantile refuses
more than 2^24 elements) and by a full sort; the MSE search as a loop over 100 candidates (fake_quantize, squared
error sum; eager, and torch.compile of one candidate's loss with the scale as a tensor), argmin on the GPU."""
import argparse
import sys
import time

import torch

from torch_timing import median_ms  # bench/cuda/torch_timing.py


def kurtosis(x):
    m = x.mean()
    d = x - m
    var = (d * d).mean()
    return (d ** 4).mean() / (var * var)


def candidate_loss(x, scale):
    q = torch.clamp(torch.round(x / scale), -128, 127)
    return ((x - q * scale) ** 2).sum(dtype=torch.float64)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--elements", type=int, default=1 << 28)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    n = args.elements // 4096 * 4096
    for dtype, name in ((torch.float32, "float32"), (torch.bfloat16, "bfloat16")):
        x = (torch.rand(4, n, device="cuda") * 2 - 1).sum(0).to(dtype)
        size = x.numel() * x.element_size()
        line = lambda op, ms, one_pass=True: print(
            f"{name:9} torch {op:40} {ms:8.3f} ms" + (f" {size / ms * 1e-9:6.3f} TB/s" if one_pass else ""),
            flush=True)
        with torch.no_grad():
            line("kurtosis eager (mean, sub, pow, mean)", median_ms(lambda: kurtosis(x), args.repeats))
            if not args.no_compile:
                compiled = torch.compile(kurtosis)
                line("kurtosis torch.compile", median_ms(lambda: compiled(x), args.repeats, warmup=3))
            line("aminmax", median_ms(lambda: torch.aminmax(x), args.repeats))
            line("abs().max()", median_ms(lambda: x.abs().max(), args.repeats))
            k = int(0.99999 * (n - 1)) + 1
            flat = x.view(-1)
            t0 = time.time()
            line("kthvalue (99.999th)", median_ms(lambda: torch.kthvalue(flat, k), 1, warmup=1), False)
            line("sort, then index (99.999th)", median_ms(lambda: torch.sort(flat)[0][k - 1], 3, warmup=1), False)
            scales = [(x.abs().max().item() * (c + 1) / 100) / 127 for c in range(100)]
            if dtype == torch.float32:
                def eager_search():
                    losses = [((x - torch.fake_quantize_per_tensor_affine(x, s, 0, -128, 127)) ** 2)
                              .sum(dtype=torch.float64) for s in scales]
                    return torch.stack(losses).argmin().item()
                line("MSE search eager (100 fake_quantize)", median_ms(eager_search, 3, warmup=1), False)
            if not args.no_compile:
                compiled_loss = torch.compile(candidate_loss)
                scale_tensors = [torch.tensor(s, device="cuda", dtype=dtype) for s in scales]

                def compiled_search():
                    return torch.stack([compiled_loss(x, s) for s in scale_tensors]).argmin().item()
                line("MSE search torch.compile (100 cand.)", median_ms(compiled_search, 3, warmup=2), False)
            print(f"{name:9} (PyTorch section took {time.time() - t0:.1f} s)", flush=True)
        del x, flat
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
