"""headmap on one GPU: random-weight Llama 3.2 1B and Llama 3.1 8B (published configs) at 8k, 32k and
128k tokens in bfloat16, every method beside the plain forward of the same size, within a time budget.

Methods (all on the same token ids, given to headmap as an ``Encoded`` so no method pays for
tokenizing):

- ``plain``: the model's own forward without its LM head, SDPA attention (flash attention on an
  H200 in bfloat16), no capture: the floor every ratio is against;
- ``stats``: headmap, every layer's and head's streaming statistics, ``fused=True`` (the default:
  on a GPU the Triton kernel, bfloat16 included; the row's ``notes`` say which kernel served which
  layers);
- ``stats_exact``: the same with ``fused=False``: the model's kernel runs, then headmap recomputes
  the weights block by block; skipped where ``stats`` already took that path for every layer
  (triton missing, or a kernel refusing every layer);
- ``one_head``: headmap, one head's full N x N map (layer L/2, head 4), returned as float32 numpy on
  the host: skipped where that map alone exceeds ``--host-map-gib`` (at 128k it is 64 GiB);
- ``last_row``: headmap, the last query row of every layer and head;
- ``eager``: ``attn_implementation="eager"`` + ``output_attentions=True``, where its estimated
  memory (every layer's [head, N, N] maps in the model's dtype, plus one layer's float32 scratch)
  fits the GPU; elsewhere a row says how much it would need.

Each model runs in one worker process (built once on the GPU: ``with torch.device("cuda")``,
``from_config``), rows in order of size; GPU memory is measured per row as
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (weights included), which
needs no fresh process: the caching allocator counts live tensors, not what it keeps cached. Time
is wall time between ``torch.cuda.synchronize`` calls, the median of up to ``--repeats`` runs (rows
over 10 s run once), after one untimed warm-up of each method (Triton's compile, cuBLAS handles).

Budget: one global deadline (``--budget`` seconds from the start), split evenly between the models
(what one leaves unused passes to the next); a row runs under ``--row-limit`` seconds (an alarm stops it between
two blocks; the row records how many layers were done) and after it the same method is skipped at
larger sizes; so is a quadratic method whose last time times (N/N_prev)^2 exceeds the limit. Rows
the deadline leaves out are written as ``skipped: time budget``; CUDA out-of-memory errors are
caught per row. A worker that dies (host memory, a broken kernel) is restarted for the rest.

Run: ``python benchmarks/gpu.py`` (writes benchmarks/gpu.json and the gpu table of
benchmarks/README.md); ``--dry-run``: the same code on two tiny configs at 64-256 tokens on the CPU
(timings meaningless), writing into a temporary folder; ``scripts/gpu-check.sh`` runs the CUDA
tests, then this.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from common import machine_bytes, write_block
from configs import MODELS, TINY_MODELS, encoded_text, parameter_count, random_llama

HERE = Path(__file__).resolve().parent
METHODS = ("plain", "stats", "stats_exact", "one_head", "last_row", "eager")
#: The order rows run in at each size: the floor first, the cheap ones before the long ones.
RUN_ORDER = ("plain", "last_row", "one_head", "eager", "stats", "stats_exact")
SIZES = (8192, 32768, 131072)
DRY_SIZES = (64, 128, 256)
#: Methods whose cost grows with N^2 once the map or the recomputation dominates.
QUADRATIC = ("stats", "stats_exact", "one_head")
#: Rows faster than this are repeated (up to --repeats); slower ones run once.
REPEAT_UNDER_S = 10.0
#: A row is not started with less than this left before the deadline.
MIN_ROW_S = 5.0
#: Tokens of the untimed warm-up run of each method.
WARM_TOKENS = 1024
#: Assumed bfloat16 throughput of an H200 for the budget estimate (flash attention and GEMMs in
#: practice; the datasheet's dense peak is ~990 TFLOP/s, 788 was measured on plain GEMMs).
ASSUMED_FLOPS = 400e12


class RowTimeout(BaseException):
    """Raised by the row alarm (a BaseException: no ``except Exception`` on the way swallows it)."""


@contextmanager
def row_timer(seconds: float) -> Iterator[None]:
    """Raise :class:`RowTimeout` in this (main) thread after ``seconds``; Python code is stopped at
    its next bytecode, a running C call (a CUDA sync) when it returns."""

    def alarm(signum: int, frame: object) -> None:
        raise RowTimeout

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- Estimates ----------------------------------------------------------------------------------------


def dims(published: dict[str, Any]) -> tuple[int, int, int]:
    """``(layers, heads, hidden)`` of a published config."""
    return published["num_hidden_layers"], published["num_attention_heads"], published["hidden_size"]


def forward_flops(published: dict[str, Any], n: int) -> float:
    """FLOPs of a causal forward over ``n`` tokens without the LM head: 2 per weight per token for
    the linear layers, and 2 x (QK^T + AV) over half the N^2 pairs for attention."""
    layers, heads, _ = dims(published)
    d = published.get("head_dim") or published["hidden_size"] // heads
    embeddings = published["vocab_size"] * published["hidden_size"]
    linear = parameter_count(published) - embeddings * (1 if published["tie_word_embeddings"] else 2)
    return 2 * linear * n + layers * 4 * heads * d * n * n / 2


def eager_bytes(published: dict[str, Any], n: int, element: int) -> int:
    """What eager attention with ``output_attentions`` holds at least: every layer's [head, N, N]
    maps in the model's dtype, and one layer's scores, float32 softmax and cast being made."""
    layers, heads, _ = dims(published)
    return layers * heads * n * n * element + heads * n * n * (4 + 2 * element)


def one_head_bytes(n: int) -> int:
    """One head's full map on the host, float32."""
    return n * n * 4


def focus(published: dict[str, Any]) -> tuple[int, int]:
    """The layer and head of ``one_head``: the middle layer, head 4 (or the last head of a tiny model)."""
    layers, heads, _ = dims(published)
    return layers // 2, min(4, heads - 1)


def budget_plan(models: dict[str, dict[str, Any]], sizes: tuple[int, ...]) -> list[str]:
    """The plain forward's estimated time at each size, from its FLOPs at ASSUMED_FLOPS."""
    lines = []
    for name, published in models.items():
        for n in sizes:
            flops = forward_flops(published, n)
            lines.append(
                f"{name} N={n}: plain forward {flops / 1e12:,.0f} TFLOP, ~{flops / ASSUMED_FLOPS:.2f} s "
                f"at {ASSUMED_FLOPS / 1e12:.0f} TFLOP/s"
            )
    return lines


# --- The worker: one model, its rows --------------------------------------------------------------


class Device:
    """Synchronizing, clearing and peak memory on the worker's device (a CPU in dry runs, where the
    peak is the process's RSS so far: meaningless per row, kept so the same code runs)."""

    def __init__(self, kind: str) -> None:
        import torch

        self.torch, self.kind = torch, kind
        self.cuda = kind == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def clear(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def peak(self) -> int:
        if self.cuda:
            self.torch.cuda.synchronize()
            return int(self.torch.cuda.max_memory_allocated())
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def total(self) -> int:
        if self.cuda:
            return int(self.torch.cuda.get_device_properties(0).total_memory)
        return machine_bytes()

    def name(self) -> str:
        if self.cuda:
            return str(self.torch.cuda.get_device_name(0))
        return f"CPU ({platform.machine()}, {os.cpu_count()} cores): dry run, timings meaningless"


def is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


@contextmanager
def eager_attention(model: Any) -> Iterator[None]:
    """The model under eager attention for the block, SDPA again after it (same weights)."""
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation("sdpa")


class LayerCounter:
    """Counts attention layers finished in the current run (a forward hook on each attention
    module), so that a row stopped by its limit can say how far it got."""

    def __init__(self, model: Any) -> None:
        self.done = 0
        for name, module in model.named_modules():
            if name.endswith("self_attn"):
                module.register_forward_hook(self._hook)

    def _hook(self, *args: object) -> None:
        self.done += 1


def run_method(
    loaded: Any, runner: Any, enc: Any, ids: Any, method: str, where: tuple[int, int]
) -> list[str]:
    """Run ``method`` once on ``enc`` (``ids`` on the model's device); the statistics' notes."""
    import numpy as np
    import torch

    from headmap.analysis.stats import collect_stats
    from headmap.capture import capture

    if method in ("plain", "eager"):
        with torch.inference_mode():
            if method == "plain":
                runner(input_ids=ids, use_cache=False)
                return []
            with eager_attention(loaded.model):
                out = runner(input_ids=ids, use_cache=False, output_attentions=True)
                assert len(out.attentions) > 0 and out.attentions[0].shape[-1] == ids.shape[1]
                del out
            return []
    if method in ("stats", "stats_exact"):
        result = collect_stats(loaded, enc, fused=method == "stats")
        assert isinstance(result.entropy, np.ndarray) and np.isfinite(result.entropy).all()
        return [n for n in result.notes if n.startswith("statistics:")]
    layer, head = where
    if method == "one_head":
        maps = capture(loaded, enc, layers=[layer], heads=[head])
    else:
        maps = capture(loaded, enc, rows=[-1])
    assert all(isinstance(m.weights, np.ndarray) for m in maps.layers)
    return []


def kernel_paths(notes: list[str]) -> str:
    """Which kernel computed which layers' statistics, in short ("exact recomputation after the
    model's own kernel: all 16 layers"), from the notes of a statistics run."""
    from headmap.capture.plan import KERNEL_NOTES

    kinds = tuple(f"{v}: " for v in KERNEL_NOTES.values())
    return "; ".join(n.removeprefix("statistics: ").split(" (")[0] for n in notes if n.startswith(kinds))


def exact_everywhere(notes: list[str]) -> str | None:
    """The note saying that every layer's statistics took the exact path, if one does."""
    from headmap.capture.plan import EXACT, KERNEL_NOTES

    return next((n for n in notes if n.startswith(f"{KERNEL_NOTES[EXACT]}: all")), None)


def worker(args: argparse.Namespace) -> None:
    """Build one model, then run the asked rows, each line of ``--events`` a JSON event."""
    import torch

    events = open(args.events, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the whole run

    def emit(event: dict[str, object]) -> None:
        events.write(json.dumps(event) + "\n")
        events.flush()

    dev = Device(args.device)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", str(min(16, os.cpu_count() or 1)))))
    published = (TINY_MODELS if args.dry_run else MODELS)[args.worker]
    dtype = getattr(torch, args.dtype)
    start = time.perf_counter()
    loaded = random_llama(published, args.worker, device=args.device, dtype=dtype)
    from headmap.capture.discovery import discover, forward_module

    runner = forward_module(loaded.model)
    counter = LayerCounter(loaded.model)
    dev.sync()
    weights = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    with torch.inference_mode():  # warm-up: kernels, allocator, thread pools
        runner(input_ids=torch.tensor([[0] * 16], device=args.device), use_cache=False)
    discover(loaded.model)  # once per model and process: a setup cost, not a per-text one
    emit(
        {
            "event": "ready",
            "device": dev.name(),
            "total_bytes": dev.total(),
            "weights_bytes": weights,
            "build_s": time.perf_counter() - start,
            "versions": versions(),
        }
    )
    wanted = [(int(n), m) for n, m in (item.split(":") for item in args.rows.split(","))]
    element = torch.finfo(dtype).bits // 8
    layers, _, _ = dims(published)
    where = focus(published)
    stopped: dict[str, str] = {}  # method -> why it is not run at larger sizes
    last: dict[str, tuple[int, float]] = {}  # method -> (N, seconds) of its last measured row
    warm: set[str] = set()
    exact_note: str | None = None  # the latest stats run's note that every layer took the exact path
    for n in sorted({n for n, _ in wanted}):
        enc = encoded_text(loaded.tokenizer, n)
        ids = torch.tensor([enc.ids], device=args.device)
        warm_enc = encoded_text(loaded.tokenizer, min(WARM_TOKENS, n), seed=1)
        warm_ids = torch.tensor([warm_enc.ids], device=args.device)
        for method in [m for m in RUN_ORDER if (n, m) in wanted]:
            emit({"event": "start", "n": n, "method": method})
            row: dict[str, object] = {"model": args.worker, "n": n, "method": method, "tokens": n}
            left = args.deadline - time.time()
            limit = min(args.row_limit, left - 1.0)
            needed_layers = where[0] + 1 if method == "one_head" else layers
            reason = stopped.get(method)
            if reason is None and left < MIN_ROW_S:
                reason = "time budget"
            if reason is None and method == "eager":
                need = eager_bytes(published, n, element) + weights
                if need > 0.9 * dev.total():
                    reason = f"needs ~{need / 2**30:,.0f} GiB, the device has {dev.total() / 2**30:,.0f} GiB"
            if reason is None and method == "one_head" and one_head_bytes(n) > args.host_map_gib * 2**30:
                reason = (
                    f"one head's map is {one_head_bytes(n) / 2**30:,.0f} GiB of float32 on the host "
                    f"(N^2 x 4 bytes), over --host-map-gib {args.host_map_gib:g}"
                )
            if reason is None and method == "stats_exact" and exact_note is not None:
                reason = f"stats takes this path already ({kernel_paths([exact_note])})"
            if reason is None and method in QUADRATIC and method in last:
                n0, t0 = last[method]
                guess = t0 * (n / n0) ** 2
                if guess > limit:
                    reason = f"~{guess:,.0f} s expected ({t0:.3g} s at N={n0}, x (N/{n0})^2), over the {limit:.3g} s row limit"
            if reason is not None:
                row["skipped"] = reason
                emit({"event": "row", **row})
                print(json.dumps(row), flush=True)
                continue
            runs: list[float] = []
            peaks: list[int] = []
            notes: list[str] = []
            started: float | None = None  # when the timed run in progress began
            try:
                with row_timer(limit):
                    if method not in warm:
                        notes = run_method(loaded, runner, warm_enc, warm_ids, method, where)
                        warm.add(method)
                        if method == "stats":  # the path is known before a long run is cut
                            exact_note = exact_everywhere(notes)
                    while len(runs) < args.repeats and (not runs or sum(runs) < REPEAT_UNDER_S):
                        dev.clear()
                        counter.done = 0
                        started = time.perf_counter()
                        notes = run_method(loaded, runner, enc, ids, method, where)
                        dev.sync()
                        runs.append(time.perf_counter() - started)
                        peaks.append(dev.peak())
            except RowTimeout:
                dev.sync()
                if runs:  # a repeat was cut short: the runs that finished stand
                    row["cut_repeat"] = True
                elif started is None:
                    row["skipped"] = (
                        f"stopped at the {limit:.3g} s row limit in the warm-up ({len(warm_enc.ids)} tokens)"
                    )
                else:
                    done, elapsed = counter.done, time.perf_counter() - started
                    row["skipped"] = (
                        f"stopped at the {limit:.3g} s row limit, {done} of {needed_layers} layers done"
                        + (f" (~{elapsed * needed_layers / done:,.0f} s for all)" if done else "")
                    )
                    row["layers_done"] = done
                if not runs:
                    stopped[method] = f"over the row limit at N={n}"
            except Exception as exc:  # noqa: BLE001 - one row's failure is recorded, the rest go on
                runs = []
                if is_oom(exc):
                    row["skipped"] = f"out of memory ({str(exc).splitlines()[0][:120]})"
                    stopped[method] = f"out of memory at N={n}"
                else:
                    row["error"] = (
                        f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                    )
            finally:
                dev.clear()
            if runs:
                row.update(
                    seconds=statistics.median(runs),
                    runs=runs,
                    peak_bytes=max(peaks, default=0),
                    notes=notes,
                    path=kernel_paths(notes),
                )
                last[method] = (n, statistics.median(runs))
            if method == "stats" and notes:
                exact_note = exact_everywhere(notes)
                row.setdefault("path", kernel_paths(notes))
            emit({"event": "row", **row})
            print(json.dumps(row), flush=True)
        del ids, warm_ids
    events.close()


def versions() -> dict[str, str]:
    import torch
    import transformers

    found = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    try:
        import triton

        found["triton"] = triton.__version__
    except ImportError:
        found["triton"] = "not installed"
    return found


# --- The parent: workers, the deadline, the table ---------------------------------------------------


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with suppress(json.JSONDecodeError):  # a line cut short by a killed worker
            events.append(json.loads(line))
    return events


def run_model(
    name: str, args: argparse.Namespace, deadline: float, scratch: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """All rows of one model, in as many worker processes as it takes (a dead worker is restarted
    for the rows it had not reached); rows the deadline leaves out are skipped."""
    wanted = [(n, m) for n in args.sizes for m in args.methods]
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    info: dict[str, Any] = {}
    attempt = 0
    while len(rows) < len(wanted) and deadline - time.time() > MIN_ROW_S:
        attempt += 1
        todo = [(n, m) for n, m in wanted if (n, m) not in rows]
        events_path, log_path = scratch / f"{name}-{attempt}.jsonl", scratch / f"{name}-{attempt}.log"
        command = [
            sys.executable,
            __file__,
            "--worker",
            name,
            "--events",
            str(events_path),
            "--rows",
            ",".join(f"{n}:{m}" for n, m in todo),
            "--deadline",
            str(deadline),
            "--device",
            args.device,
            "--dtype",
            args.dtype,
            "--row-limit",
            str(args.row_limit),
            "--repeats",
            str(args.repeats),
            "--host-map-gib",
            str(args.host_map_gib),
        ] + (["--dry-run"] if args.dry_run else [])
        print(f"{name}: worker {attempt} for {len(todo)} rows", file=sys.stderr, flush=True)
        with open(log_path, "w", encoding="utf-8") as log:
            proc = subprocess.Popen(command, stderr=log, start_new_session=True)
            try:
                code = proc.wait(timeout=max(1.0, deadline - time.time() + 20))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                code = None
        events = read_events(events_path)
        started = None
        for event in events:
            if event["event"] == "ready":
                info = {k: v for k, v in event.items() if k != "event"}
            elif event["event"] == "start":
                started = (event["n"], event["method"])
            elif event["event"] == "row":
                rows[(event["n"], event["method"])] = {k: v for k, v in event.items() if k != "event"}
                started = None
        log_lines = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines() or [
            "no output"
        ]
        tail = log_lines[-1]
        if code == 0:
            break
        print("\n".join(log_lines[-20:]), file=sys.stderr, flush=True)
        why = "killed at the deadline" if code is None else f"worker exited with {code}: {tail[:200]}"
        print(f"{name}: {why}", file=sys.stderr, flush=True)
        if code is None:
            break
        if started is not None:  # the row it died in
            rows[started] = {"model": name, "n": started[0], "method": started[1], "error": why}
        elif not any(e["event"] == "row" for e in events):
            for n, m in todo:  # died before its first row: it would again
                rows[(n, m)] = {"model": name, "n": n, "method": m, "error": why}
    for n, m in wanted:
        rows.setdefault((n, m), {"model": name, "n": n, "method": m, "skipped": "time budget"})
    return info, [rows[(n, m)] for n in args.sizes for m in METHODS if m in args.methods]


def gib(value: float) -> str:
    return f"{value / 2**30:.2f}"


def table(results: dict[str, Any]) -> str:
    rows = results["rows"]
    plain = {(r["model"], r["n"]): r for r in rows if r["method"] == "plain" and "seconds" in r}
    lines = [
        "| model | N | method | time (s) | peak memory (GiB) | time / plain | memory / plain | statistics path |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        head = f"| {r['model']} | {r['n']} | {r['method']} |"
        if "seconds" not in r:
            why = f"skipped: {r['skipped']}" if "skipped" in r else f"failed: {r.get('error', '')}"
            lines.append(f"{head} {why} | | | | |")
            continue
        base = plain.get((r["model"], r["n"]))
        ratio_t = f"{r['seconds'] / base['seconds']:.2f}x" if base else ""
        ratio_m = f"{r['peak_bytes'] / base['peak_bytes']:.2f}x" if base else ""
        lines.append(
            f"{head} {r['seconds']:.3f} | {gib(r['peak_bytes'])} | {ratio_t} | {ratio_m} | {r.get('path', '')} |"
        )
    return "\n".join(lines)


def summary(results: dict[str, Any]) -> str:
    models = "; ".join(
        f"{name}: {info.get('parameters', 0) / 1e9:.2f} B parameters, {gib(info.get('weights_bytes', 0))} GiB "
        f"of weights, built in {info.get('build_s', 0):.0f} s"
        for name, info in results["models"].items()
    )
    versions = results.get("versions") or {}
    return (
        f"Device: {results['device']}; {results['dtype']}; torch {versions.get('torch', '?')}, transformers "
        f"{versions.get('transformers', '?')}, triton {versions.get('triton', '?')}; {models}. Median of up to "
        f"{results['repeats']} runs (rows over {REPEAT_UNDER_S:.0f} s run once) after a warm-up; row limit "
        f"{results['row_limit_s']:.0f} s, budget {results['budget_s']:.0f} s, whole run {results['elapsed_s']:.0f} s "
        f"({results['when']}). Memory: peak `torch.cuda.max_memory_allocated`, weights included."
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--events", help=argparse.SUPPRESS)
    parser.add_argument("--rows", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument(
        "--dry-run", action="store_true", help="tiny configs, tiny N, on the CPU, into a temp folder"
    )
    parser.add_argument("--models", help="comma-separated (default: every model of the run)")
    parser.add_argument("--sizes", help="comma-separated N (default 8192,32768,131072; dry run 64,128,256)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--device", help="default cuda (dry run: cpu)")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for the whole run (default 420)")
    parser.add_argument("--row-limit", type=float, default=45.0, help="seconds one row may take (default 45)")
    parser.add_argument("--repeats", type=int, help="runs of a row under 10 s (default 3; dry run 1)")
    parser.add_argument("--host-map-gib", type=float, default=16.0, help="largest one-head map to return")
    parser.add_argument(
        "--out", type=Path, help="results JSON (default benchmarks/gpu.json; dry run: a temp folder)"
    )
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README table")
    args = parser.parse_args(argv)
    args.device = args.device or ("cpu" if args.dry_run else "cuda")
    args.repeats = args.repeats or (1 if args.dry_run else 3)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    start = time.time()
    deadline = start + args.budget
    catalog = TINY_MODELS if args.dry_run else MODELS
    names = args.models.split(",") if args.models else list(catalog)
    args.sizes = (
        tuple(int(s) for s in args.sizes.split(",")) if args.sizes else (DRY_SIZES if args.dry_run else SIZES)
    )
    args.methods = tuple(args.methods.split(","))
    readme = HERE / "README.md"
    if args.dry_run:
        folder = Path(tempfile.mkdtemp(prefix="headmap-gpu-dry-"))
        args.out = args.out or folder / "gpu.json"
        readme = folder / "README.md"
        shutil.copy(HERE / "README.md", readme)
    out = args.out or HERE / "gpu.json"
    for line in budget_plan({n: catalog[n] for n in names}, args.sizes):
        print(line, file=sys.stderr)
    results: dict[str, Any] = {
        "device": "",
        "dtype": args.dtype,
        "budget_s": args.budget,
        "row_limit_s": args.row_limit,
        "repeats": args.repeats,
        "host_map_gib": args.host_map_gib,
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "models": {},
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="headmap-gpu-") as scratch:
        for i, name in enumerate(names):
            share = 1 / (len(names) - i)  # an even split of what is left: unused time passes on
            model_deadline = time.time() + (deadline - time.time()) * share
            info, rows = run_model(name, args, model_deadline, Path(scratch))
            results["device"] = results["device"] or info.get("device", "")
            results["versions"] = results.get("versions") or info.get("versions", {})
            results["models"][name] = {
                "parameters": parameter_count(catalog[name]),
                **{k: v for k, v in info.items() if k not in ("device", "versions")},
            }
            results["rows"] += rows
    results["elapsed_s"] = time.time() - start
    out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    if not args.no_readme:
        write_block("gpu", f"{summary(results)}\n\n{table(results)}", readme=readme)
    print(table(results))
    print(f"gpu: results in {out}" + ("" if args.no_readme else f", table in {readme}"), file=sys.stderr)


if __name__ == "__main__":
    main()
