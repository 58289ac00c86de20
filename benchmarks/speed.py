"""Speed and memory of ipp-seg, measured side by side in one run (the speed issue's table).

Sections (each prints a Markdown table of medians; compare only figures from the same run):

1. cold start: wall time of ``ipp-seg --help`` and ``ipp-seg predict one.png``, process start
   to exit;
2. ``ipp-seg batch`` throughput (frames/s) with 1 and 2 workers over the shipped samples and
   over PSFHS frames, with the time split by stage (read/decode, pre/post-processing, model,
   measurement, writing; summed over workers, so CPU-seconds per frame);
3. model latency per shipped model and backend (onnxruntime vs PyTorch), batch 1 and 8;
4. the memory-lean DSSA token top-k against the literal gather-based reference, batch 8, on
   the attention shapes of the paper config at 256x256 (and that both give the same output);
5. peak resident memory (the whole process tree) of a long ``ipp-seg batch`` run, sampled as it
   goes, at a tenth of the rows and at the end.

    python benchmarks/speed.py [--psfhs ../shared/data/psfhs] [--frames 300] [--rows 10000]
                               [--sections 1,2,3,4,5] [--repeats 5]

Needs the dev extras (torch for sections 3 and 4). The machine is printed first.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE_PNG = REPO / "sample_data" / "psfhs_04700.png"


def ipp_seg_command() -> list[str]:
    found = shutil.which("ipp-seg")
    return [found] if found else [sys.executable, "-c", "from ipp_seg.cli import main; main()"]


def median_of(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def table(header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    model = "unknown CPU"
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags) or "?"
    from importlib.metadata import version  # (its version only: nothing of onnxruntime starts)

    return (f"{model} ({isa}), {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}, "
            f"onnxruntime {version('onnxruntime')}")


# --- 1. cold start ------------------------------------------------------------------------------

def cold_start(repeats: int) -> str:
    command = ipp_seg_command()
    runs = {
        "ipp-seg --help": command + ["--help"],
        "ipp-seg predict one.png": command + ["predict", str(SAMPLE_PNG)],
    }
    rows = []
    for name, argv in runs.items():
        def once(argv=argv):
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        seconds = median_of(once, repeats)
        rows.append((name, f"{seconds:.2f}"))
    return table(("command", "median wall (s)"), rows)


# --- 2. batch throughput ------------------------------------------------------------------------

def psfhs_folder(psfhs: Path, n: int, into: Path) -> Path:
    """The first ``n`` PSFHS frames, linked (not copied) into a folder."""
    images = sorted((psfhs / "image_mha").glob("*.mha"))[:n]
    into.mkdir(parents=True, exist_ok=True)
    for path in images:
        (into / path.name).symlink_to(path)
    return into


def batch_throughput(folders: dict[str, Path], workers_list: tuple[int, ...], repeats: int) -> str:
    """Median runs of ``run_batch``; for folders of at least a group of files, also with the
    fixed-batch session switched off (``fixed_batch=0``), the two interleaved run by run."""
    from ipp_seg.inference.batch import FILES_PER_GROUP, BatchOptions, InferenceOptions, list_scans, run_batch

    rows = []
    for name, folder in folders.items():
        # The files run_batch will list, so the label says what it decides.
        n_files = len(list_scans(folder))
        sessions = {"fixed 8": None, "dynamic": 0} if n_files >= FILES_PER_GROUP else {"dynamic": None}
        for workers in workers_list:
            results: dict[str, list] = {label: [] for label in sessions}
            for _ in range(repeats):
                for label, fixed in sessions.items():
                    with tempfile.TemporaryDirectory() as out:
                        options = BatchOptions(folder, Path(out), workers=workers,
                                               inference=InferenceOptions(fixed_batch=fixed))
                        results[label].append(run_batch(options))
            for label, runs in results.items():
                best = sorted(runs, key=lambda s: s.seconds)[len(runs) // 2]
                per_frame = {k: 1000 * v / max(1, best.rows) for k, v in best.timings.items()}
                rows.append((name, workers, label, best.rows, f"{best.rows / best.seconds:.1f}",
                             *(f"{per_frame[k]:.1f}" for k in ("read_s", "preprocess_s", "model_s", "measure_s",
                                                               "write_s"))))
    return table(("frames", "workers", "model session", "rows", "frames/s (median run)", "read ms", "pre/post ms",
                  "model ms", "measure ms", "write ms"), rows)


# --- 3. model latency ---------------------------------------------------------------------------

def model_latency(repeats: int, threads: int) -> str:
    from ipp_seg.inference.backends import load_segmenter
    from ipp_seg.inference.registry import shipped_models

    rows = []
    for spec in shipped_models():
        # (label, backend, fixed batch, batch sizes): the fixed-batch session is what long
        # `ipp-seg batch` runs use.
        for label, backend, fixed, batches in (("onnx", "onnx", None, (1, 8)), ("onnx, fixed batch 8", "onnx", 8, (8,)),
                                               ("torch", "torch", None, (1, 8))):
            try:
                segmenter = load_segmenter(spec, backend, "cpu", threads, fixed)
            except Exception as exc:  # a missing backend is a row, not a crash
                rows.append((spec.name, label, "-", f"unavailable: {exc}"))
                continue
            info = segmenter.info
            for batch in batches:
                x = np.random.default_rng(0).standard_normal(
                    (batch, info.in_channels, *info.input_size)).astype(np.float32)
                seconds = median_of(lambda: segmenter.logits(x), repeats)
                rows.append((spec.name, label, batch, f"{1000 * seconds:.1f}", f"{1000 * seconds / batch:.1f}"))
    return table(("model", "backend", "batch", "ms per call", "ms per frame"), rows)


# --- 4. lean DSSA vs literal gather -------------------------------------------------------------

def lean_vs_literal(repeats: int, threads: int) -> str:
    import torch

    from ipp_seg.nn.attention import literal_topk_attention, token_topk_attention
    from ipp_seg.nn.configs import get_config

    torch.set_num_threads(threads)
    config = get_config("dssau-net-paper")
    batch, size, s = 8, 256, config.regions_per_side
    rows = []
    total_lean = total_literal = 0.0
    for stage, (dim, depth, k1) in enumerate(zip(config.dims, config.depths, config.region_topk)):
        side = size // (4 * 2 ** stage)
        tokens = max(1, (side // s) ** 2)
        regions = s * s if side >= s else side * side
        k1 = regions if k1 is None else min(k1, regions)
        gathered = k1 * tokens
        keep = max(1, int(gathered * config.token_keep_fraction))
        heads = dim // config.head_dim
        generator = torch.Generator().manual_seed(stage)
        q = torch.randn(batch, heads, regions, tokens, config.head_dim, generator=generator)
        k = torch.randn(batch, heads, regions, gathered, config.head_dim, generator=generator)
        v = torch.randn(batch, heads, regions, gathered, config.head_dim, generator=generator)
        with torch.no_grad():
            same = torch.allclose(token_topk_attention(q, k, v, keep), literal_topk_attention(q, k, v, keep),
                                  atol=1e-5, rtol=1e-4)
            lean = median_of(lambda: token_topk_attention(q, k, v, keep), repeats)
            literal = median_of(lambda: literal_topk_attention(q, k, v, keep), repeats)
        total_lean += depth * lean
        total_literal += depth * literal
        rows.append((stage + 1, f"{dim}", f"{side}x{side}", f"{gathered}->{keep}", depth, f"{1000 * lean:.1f}",
                     f"{1000 * literal:.1f}", f"{literal / lean:.2f}", "yes" if same else "NO"))
    rows.append(("all blocks", "", "", "", sum(config.depths), f"{1000 * total_lean:.1f}",
                 f"{1000 * total_literal:.1f}", f"{total_literal / total_lean:.2f}", ""))
    return table(("stage", "dim", "map", "tokens kept", "blocks", "lean ms", "literal ms", "speed-up",
                  "same output"), rows)


# --- 5. peak memory of a long batch -------------------------------------------------------------

def tree_memory_bytes(root_pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process and all its descendants (Linux /proc). Summed RSS counts the
    pages the processes share (onnxruntime's and numpy's libraries, ~120 MiB a worker) once
    per process; PSS splits each shared page between its users, so it sums to what the tree
    really holds."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    pss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            rss[int(entry.name)] = int((entry / "statm").read_text().split()[1]) * page
            for line in (entry / "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss[int(entry.name)] = int(line.split()[1]) * 1024
                    break
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    total_rss = total_pss = 0
    todo = [root_pid]
    while todo:
        pid = todo.pop()
        total_rss += rss.get(pid, 0)
        total_pss += pss.get(pid, 0)
        todo.extend(children.get(pid, ()))
    return total_rss, total_pss


def long_batch_memory(source: Path, rows: int, workers: int) -> str:
    files = sorted(p for p in source.iterdir() if p.is_file())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "scans"
        folder.mkdir()
        for i in range(rows):  # the same frames repeated, as links, until there are `rows` files
            target = files[i % len(files)]
            (folder / f"{i:06d}_{target.name}").symlink_to(target.resolve())
        out = Path(tmp) / "out"
        process = subprocess.Popen(ipp_seg_command() + ["batch", str(folder), "--out", str(out), "--workers",
                                                        str(workers)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples: list[tuple[int, int, int]] = []  # (rows written so far, tree RSS, tree PSS)
        csv_path = out / "measurements.csv"

        def sample() -> None:
            while process.poll() is None:
                done = 0
                if csv_path.exists():
                    with open(csv_path, "rb") as fh:
                        done = max(0, sum(1 for _ in fh) - 1)
                samples.append((done, *tree_memory_bytes(process.pid)))
                time.sleep(0.5)

        watcher = threading.Thread(target=sample)
        started = time.perf_counter()
        watcher.start()
        process.wait()
        watcher.join()
        seconds = time.perf_counter() - started
        with open(csv_path, "rb") as fh:
            written = sum(1 for _ in fh) - 1
    def mib(values) -> str:
        return f"{max(values) / 2 ** 20:.0f}" if values else "-"

    tenth = [(r, p) for n, r, p in samples if n <= rows // 10]
    return table(("rows", "workers", "wall (s)", "frames/s", "peak RSS by 10 % of rows (MiB)", "peak RSS (MiB)",
                  "peak PSS by 10 % of rows (MiB)", "peak PSS (MiB)"),
                 [(written, workers, f"{seconds:.0f}", f"{written / seconds:.1f}", mib([r for r, _ in tenth]),
                   mib([r for _, r, _ in samples]), mib([p for _, p in tenth]), mib([p for _, _, p in samples]))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--psfhs", type=Path, default=REPO.parent / "shared" / "data" / "psfhs")
    parser.add_argument("--frames", type=int, default=300, help="PSFHS frames for the throughput runs")
    parser.add_argument("--rows", type=int, default=10000, help="rows of the long batch (memory)")
    parser.add_argument("--sections", default="1,2,3,4,5")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="threads for the latency sections")
    args = parser.parse_args()
    sections = {int(s) for s in args.sections.split(",")}
    print(f"machine: {machine()}\n")
    with tempfile.TemporaryDirectory() as tmp:
        folders = {"sample_data (4 files)": REPO / "sample_data"}
        if args.psfhs.is_dir():
            folders[f"PSFHS 256x256 ({args.frames})"] = psfhs_folder(args.psfhs, args.frames, Path(tmp) / "psfhs")
        else:
            print(f"(no PSFHS data at {args.psfhs}: PSFHS rows skipped)\n")
        if 1 in sections:
            print(f"## 1. Cold start (median of {args.repeats})\n\n{cold_start(args.repeats)}\n")
        if 2 in sections:
            print(f"## 2. ipp-seg batch throughput (median of 3 runs)\n\n{batch_throughput(folders, (1, 2), 3)}\n")
        if 3 in sections:
            print(f"## 3. Model latency, {args.threads} threads (median of {args.repeats})\n\n"
                  f"{model_latency(args.repeats, args.threads)}\n")
        if 4 in sections:
            print(f"## 4. Lean DSSA top-k vs literal gather, batch 8, paper config, {args.threads} threads "
                  f"(median of {args.repeats})\n\n{lean_vs_literal(args.repeats, args.threads)}\n")
        if 5 in sections:
            source = folders.get(f"PSFHS 256x256 ({args.frames})", REPO / "sample_data")
            print(f"## 5. Peak memory of a long batch\n\n{long_batch_memory(source, args.rows, 2)}\n")


if __name__ == "__main__":
    main()
