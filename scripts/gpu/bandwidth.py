"""The GPU's memory bandwidth, the ceiling of a decode step's weight reads:
a bf16 sum over 8 GiB (read only) and a copy of it (read and write
counted), each the median of 10 after 3 warm-ups, timed with CUDA events
through torch (installed on the GPU machine).

usage: bandwidth.py
"""

import torch


def median_seconds(op):
    for _ in range(3):
        op()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(10):
        start.record()
        op()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


def main():
    x = torch.ones(4 * 2**30, dtype=torch.bfloat16, device="cuda")
    y = torch.empty_like(x)
    nbytes = x.numel() * x.element_size()
    read = nbytes / median_seconds(x.sum) / 1e12
    copy = 2 * nbytes / median_seconds(lambda: y.copy_(x)) / 1e12
    print(f"{torch.cuda.get_device_name()}: read {read:.3f} TB/s (bf16 sum of {nbytes / 1e9:.2f} GB),"
          f" copy {copy:.3f} TB/s (read + write counted)")


main()
