"""Forward latency of every network config in PyTorch and in onnxruntime.

Median of repeated runs, batch 1 and 8, 256x256, 2 threads, random weights (latency does not
depend on the weights). Measured side by side in one run: compare only figures from the same run.

    python benchmarks/model_latency.py [--configs dssau-net-s,star-dssau-net-s] [--repeats 10]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from ipp_seg.nn.configs import list_configs
from ipp_seg.nn.dssau_net import build_network
from ipp_seg.nn.export import export_onnx
from speed import median_of  # benchmarks/speed.py, beside this script

import onnxruntime as ort  # noqa: E402 - after ipp_seg, whose import turns onnxruntime's telemetry off


def median_ms(fn, repeats: int) -> float:
    return 1000 * median_of(fn, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=",".join(c.name for c in list_configs()))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {platform.platform()}; torch {torch.__version__}, "
          f"onnxruntime {ort.__version__}; {args.threads} threads; {args.size}x{args.size}; median of {args.repeats}")
    print(f"{'config':24s} {'batch':>5s} {'torch ms':>10s} {'onnx ms':>10s} {'onnx/torch':>10s}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            model = build_network(name).eval()
            path = export_onnx(model, Path(tmp) / f"{name}.onnx", (args.size, args.size), {})
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for batch in (1, 8):
                x = np.random.default_rng(0).standard_normal(
                    (batch, model.config.in_channels, args.size, args.size)).astype(np.float32)
                xt = torch.from_numpy(x)
                with torch.no_grad():
                    t_torch = median_ms(lambda: model(xt), args.repeats)
                t_onnx = median_ms(lambda: session.run(None, {"image": x}), args.repeats)
                print(f"{name:24s} {batch:5d} {t_torch:10.1f} {t_onnx:10.1f} {t_onnx / t_torch:10.2f}")


if __name__ == "__main__":
    main()
