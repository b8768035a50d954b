"""The GPU check: what one lent GPU machine should tell us, measured in one call of at most eight minutes.

    bash benchmarks/gpu_check.sh              # on the GPU machine: installs .gpu_wheels/, then runs this
    bash benchmarks/gpu_check.sh --rehearse   # here, on CPU, in a fresh venv holding what the image holds
    python benchmarks/gpu_check.py [--rehearse] [--out DIR] [--budget-s 330] [--steps NAME ...]

Every step (``STEPS``) runs in a process of its own under a time box, so a hung kernel or a CUDA error in one
step cannot take the others down: a step that fails or runs out of time is recorded with the end of its
output and the next one runs. A step writes each measurement the moment it has it, so a step cut short keeps
what it measured; after every step ``OUT/gpu_check.json`` (every measurement), ``OUT/gpu_check.md`` (the
tables) and ``OUT/gpu_check.log`` (each step's output) are rewritten.

``--rehearse`` runs every step on the CPU at small sizes (torch.compile with the ``aot_eager`` backend: the
same graph capture and autograd tracing as on the GPU, without inductor's C++ build), which proves that the
first lent minute is not spent on an import error. What needs mmdet or mmseg (whole Mask R-CNN or UperNet
models) is out of scope: the GPU image has neither, and their mmcv ops have no wheel for it.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

TOTAL_BUDGET_S = 420  # steps' wall time: with the wheel install, the call stays under 8 minutes
REHEARSAL_BUDGET_S = 330  # on 2 CPU cores; with the venv's build the rehearsal stays under 7 minutes
MIN_STEP_S = 10  # a step is not started with less time than this left
STEP_GRACE_S = 5  # a step is told to stop this long before its box ends, when it is killed
LOG_TAIL_CHARS = 2000  # of a failed step's output, kept in the JSON
# Random rows drawn to find 4 tie-free ones: 22% of 3136-token rows are tie-free, 0.5% of 12544-token rows
# (2 of 400 on the GPU machine, 2026-12-04, which spent the clusters step's whole box drawing them).
TIE_FREE_CANDIDATES = 64
# The implementations of FSLA's clustering and cluster attention that the check compares, by their setting of
# the one switch (``BOAT_MM_NATIVE``): the torch ops (the GPU path before issue 32) and the fused Triton kernels
# (the GPU default since; in the rehearsal, Triton's interpreter on CPU tensors).
FSLA_PATHS = {'torch ops': '0', 'fused Triton': 'triton'}
PROFILE_TOP_KERNELS = 10


def fsla_paths(ctx) -> dict:
    """``FSLA_PATHS`` that can run on this device: without a GPU the fused path needs Triton's interpreter at
    ``triton_kernels.MIN_INTERPRETER_TRITON`` (the image's triton 3.6 runs it on CUDA only)."""
    from boat_mm.models.layers import triton_kernels
    if triton_kernels.triton_available(torch.device(ctx.device)):
        return FSLA_PATHS
    return {name: setting for name, setting in fsla_paths(ctx).items() if setting != 'triton'}


class Sizes:
    """What each step measures: the GPU's sizes (the issue's, what users train with) or the rehearsal's."""

    def __init__(self, rehearse: bool):
        if rehearse:
            self.cluster_tokens = (825, 196)
            self.fsla_tokens = (196,)  # Triton's interpreter runs the fused path: seconds per call
            self.fsla_total_tokens = 392
            self.backbone_inputs = ((1, 32, 32),)
            self.fp64_inputs = ((1, 64, 64), (1, 49, 67))
            self.amp_input = (1, 64, 48)
            self.repeats, self.warmup = 1, 0  # rehearsal numbers prove the code runs, they measure nothing
            self.compile_backend = 'aot_eager'
            self.compile_dtypes = ('fp32',)  # bf16 is emulated on most CPUs: its compiled run would take minutes
            self.compile_modes = ('fwd+bwd',)  # the training graph traces the forward too; 2 CPU cores
            self.compile_models = ('BOAT-Swin-T', 'BOAT-CSWin-T')  # this project's code (the baselines compile)
            self.profile_input = (1, 196)  # images x tokens of the FSLA profile
            self.attention_tokens = (196, 825, 1)
        else:
            self.cluster_tokens = (3136, 825, 12544)
            self.fsla_tokens = (3136, 12544)
            # every FSLA size runs 64x3136 tokens in all (64 images of stage 1 at 224): per-token numbers of
            # the three sizes are comparable and the GPU is kept busy
            self.fsla_total_tokens = 64 * 3136
            self.backbone_inputs = ((64, 224, 224), (8, 512, 512))
            self.fp64_inputs = ((1, 224, 224), (1, 97, 131))
            self.amp_input = (2, 224, 160)
            self.repeats, self.warmup = 10, 3
            self.compile_backend = 'inductor'
            self.compile_dtypes = ('bf16', 'fp32')  # AMP first: what GPU users train with
            self.compile_modes = ('fwd+bwd',)  # the training step: one compile per model within the box
            self.compile_models = None  # all four
            self.profile_input = (64, 3136)
            self.attention_tokens = (3136, 825, 1)


class Context:
    """What a step gets: the device, the sizes, its deadline, and ``record`` for its measurements."""

    def __init__(self, device: str, rehearse: bool, deadline: float, result_path: str):
        self.device, self.rehearse, self.deadline = device, rehearse, deadline
        self.sizes = Sizes(rehearse)
        self.result_path = result_path

    def time_left(self) -> float:
        return self.deadline - time.time()

    def _write(self, entry: dict) -> None:
        with open(self.result_path, 'a') as out:
            out.write(json.dumps(entry) + '\n')

    def row(self, table: str, **values) -> None:
        """One measurement row of ``table`` (written at once)."""
        self._write({'table': table, 'row': values})
        print(f'  {table}: {values}', flush=True)

    def check(self, name: str, ok, detail: str = '') -> None:
        """A pass/fail finding (``ok`` None: not applicable here)."""
        self._write({'check': name, 'ok': ok, 'detail': detail})
        print(f'  check {name}: {"n/a" if ok is None else "ok" if ok else "FAILED"} {detail}', flush=True)

    def note(self, text: str) -> None:
        """A remark for the report (what a time box cut, what is out of scope)."""
        self._write({'note': text})
        print(f'  note: {text}', flush=True)

    def info(self, **values) -> None:
        self._write({'info': values})
        print(f'  info: {values}', flush=True)

    def synchronize(self) -> None:
        if self.device == 'cuda':
            torch.cuda.synchronize()


# --- measurement helpers ----------------------------------------------------------------------------------

def median_ms(ctx: Context, fn) -> float:
    """Median milliseconds of ``fn()`` after warm-up calls: CUDA events on the GPU (no host sync between the
    calls), on the CPU the benchmarks' wall-time timer (``boat_mm.analysis.timing.median_seconds``)."""
    repeats, warmup = ctx.sizes.repeats, ctx.sizes.warmup
    if ctx.device != 'cuda':
        from boat_mm.analysis.timing import median_seconds
        return median_seconds(fn, repeats, warmup=warmup) * 1e3
    for _ in range(warmup):
        fn()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(end) for start, end in events)


def peak_mb(ctx: Context, fn):
    """Peak memory in MB of one ``fn()``, ``torch.cuda.max_memory_allocated`` (the one implementation the
    benchmarks share, ``boat_mm.analysis.benchmark.peak_memory_mb``); None on the CPU, where that function's
    profiler takes 30-40 s per backbone step here, more than the rehearsal's time box."""
    if ctx.device != 'cuda':
        return None
    from boat_mm.analysis.benchmark import peak_memory_mb
    return round(peak_memory_mb(fn, ctx.device), 1)


def autocast(ctx: Context, dtype_name: str, cache_enabled: bool = True):
    dtype = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[dtype_name]
    return torch.autocast(ctx.device, dtype=dtype, cache_enabled=cache_enabled) if dtype else nullcontext()


@contextmanager
def fsla_path(setting: str):
    """Within the context, FSLA runs the implementation that ``BOAT_MM_NATIVE=setting`` chooses."""
    from boat_mm.models.layers.native_clustering import NATIVE_ENV
    previous = os.environ.get(NATIVE_ENV)
    os.environ[NATIVE_ENV] = setting
    try:
        yield
    finally:
        if previous is None:
            del os.environ[NATIVE_ENV]
        else:
            os.environ[NATIVE_ENV] = previous


def backbone_builders() -> dict:
    from benchmarks.bench_backbones import models
    return models()


def backbone_pairs() -> dict:
    """The BOAT / twin pairs the GPU check times: bench_backbones' default pairs (each BOAT against its stock
    twin); the extra FSLA-off pairs stay for CPU runs, where the time box allows them."""
    from benchmarks.bench_backbones import DEFAULT_PAIRS, PAIRS
    return {family: PAIRS[family] for family in DEFAULT_PAIRS}


# --- the steps ----------------------------------------------------------------------------------------------

def step_environment(ctx: Context) -> None:
    """Versions, the device, TF32 defaults; boat_mm registered in mmpretrain; the CPU kernel built."""
    import mmengine
    import mmpretrain
    from mmpretrain.registry import MODELS

    import boat_mm
    from boat_mm.models.layers.native_clustering import native_clustering_available
    from boat_mm.utils.machine import cpu_description
    info = dict(torch=torch.__version__, cuda=torch.version.cuda, python=sys.version.split()[0],
                mmengine=mmengine.__version__, mmpretrain=mmpretrain.__version__, boat_mm=boat_mm.__version__,
                cpu=cpu_description(), cpu_threads=torch.get_num_threads())
    from boat_mm.models.layers import triton_kernels
    from boat_mm.models.layers.clustering import kernel_choice
    info.update(triton=getattr(triton_kernels.triton, '__version__', None),
                triton_interpreter=triton_kernels.interpreting(),
                fsla_default_path=kernel_choice(torch.device(ctx.device)))
    try:
        import mmcv
        info['mmcv'] = mmcv.__version__
    except ImportError as error:
        info['mmcv'] = f'not importable ({error})'
    if ctx.device == 'cuda':
        props = torch.cuda.get_device_properties(0)
        info.update(device=torch.cuda.get_device_name(0), capability='.'.join(map(str, (props.major, props.minor))),
                    gpu_memory_gib=round(props.total_memory / 2 ** 30, 1), multiprocessors=props.multi_processor_count,
                    cudnn=torch.backends.cudnn.version(), tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                    tf32_cudnn=torch.backends.cudnn.allow_tf32)
    else:
        info['device'] = 'cpu (rehearsal)'
    ctx.info(**info)
    ctx.check('boat_mm registered in mmpretrain', MODELS.get('BOATSwinTransformer') is boat_mm.BOATSwinTransformer)
    start = time.time()
    native = native_clustering_available(torch.zeros(1, 4, 2))
    ctx.check('CPU clustering kernel built', native, f'{time.time() - start:.1f} s (the CPU reference of the '
              'cluster comparison; without it the reference is the torch path on the CPU)')


def step_clusters(ctx: Context) -> None:
    """The device's clusters against the CPU's, for each device implementation (``FSLA_PATHS``): float64
    identical; float32 on tie-free queries identical to float64; float32 on arbitrary queries, the share of
    tokens that moved (bounded, never exact)."""
    from boat_mm.models.layers.feature_space_attention import balanced_hierarchical_clustering, plan_clusters
    from boat_mm.testing.arithmetic import FLOAT32_MOVED_TOKENS, cluster_sets, moved_token_share, tie_free_queries
    device = torch.device(ctx.device)
    for n in ctx.sizes.cluster_tokens:
        plan, device_plan = plan_clusters(n), plan_clusters(n, device=device)
        torch.manual_seed(0)
        q64 = torch.randn(6, n, 32, dtype=torch.float64)
        on_cpu = cluster_sets(balanced_hierarchical_clustering(q64, plan), plan)
        q32 = torch.randn(6, n, 32)
        reference32 = balanced_hierarchical_clustering(q32.double(), plan)
        try:
            tie_free = tie_free_queries(4, n, 32, max_candidates=TIE_FREE_CANDIDATES)
        except RuntimeError as error:  # random rows near no split point get rarer with N (a margin per level)
            tie_free = None
            ctx.note(f'clusters N={n}: no float32 tie-free comparison ({error}); float64 and the moved share '
                     'are the comparison at this size')
        for path, setting in fsla_paths(ctx).items():
            def on_device(q):  # the device path's clustering on the device, brought back
                with fsla_path(setting):
                    return balanced_hierarchical_clustering(q.to(device), device_plan).cpu()
            ctx.check(f'clusters float64 device == CPU, {path}, N={n}',
                      torch.equal(cluster_sets(on_device(q64), plan), on_cpu))
            moved = moved_token_share(on_device(q32), reference32, plan)
            ctx.row('float32 clusters on random queries', path=path, N=n, moved_vs_float64=f'{moved:.4%}')
            ctx.check(f'clusters float32 random: moved share <= {FLOAT32_MOVED_TOKENS:.0%}, {path}, N={n}',
                      moved <= FLOAT32_MOVED_TOKENS, f'{moved:.4%}')
            if tie_free is not None:
                expected = cluster_sets(balanced_hierarchical_clustering(tie_free.double(), plan, use_native=False),
                                        plan)
                ctx.check(f'clusters float32 tie-free device == float64, {path}, N={n}',
                          torch.equal(cluster_sets(on_device(tie_free), plan), expected))


def step_fused_attention(ctx: Context) -> None:
    """The fused cluster attention against autograd of the torch ops on the device: float64 output and qkv
    gradient to rounding, float32 (IEEE products) within float32 rounding."""
    from boat_mm.models.layers import cluster_attention, fsla_ops, triton_kernels
    from boat_mm.models.layers.clustering import balanced_hierarchical_clustering, plan_clusters
    if not triton_kernels.triton_available(torch.device(ctx.device)):
        ctx.note(f'fused kernels not run: triton {triton_kernels.TRITON_VERSION} cannot run them on {ctx.device} '
                 f'(the interpreter needs {triton_kernels.MIN_INTERPRETER_TRITON}); the torch path only')
        return
    heads, head_dims = 3, 32
    for n in ctx.sizes.attention_tokens:
        plan = plan_clusters(n, device=ctx.device)
        for dtype in (torch.float64, torch.float32):
            torch.manual_seed(0)
            qkv = torch.randn(2, n, 3, heads, head_dims, device=ctx.device, dtype=dtype)
            perm = balanced_hierarchical_clustering(qkv[:, :, 0].transpose(1, 2).double(), plan, use_native=False)
            grad_out = torch.randn(2, n, heads * head_dims, device=ctx.device, dtype=dtype)
            results = []
            for attend in (lambda t: fsla_ops.attend(t, perm, plan, head_dims ** -0.5),
                           lambda t: cluster_attention._attend(t, perm, plan, head_dims ** -0.5, 0.0)):
                leaf = qkv.clone().requires_grad_(True)
                out = attend(leaf)
                out.backward(grad_out)
                results.append((out.detach(), leaf.grad))
            worst = max(float((a - b).abs().max()) for a, b in zip(*results))
            bound = 1e-10 if dtype == torch.float64 else 1e-4
            name = str(dtype).replace('torch.', '')
            ctx.row('fused attention vs autograd', N=n, dtype=name, max_abs_diff=f'{worst:.2e}')
            ctx.check(f'fused attention {name} output and gradient == autograd, N={n}', worst < bound,
                      f'max |diff| {worst:.2e}')


def step_backbones_float64(ctx: Context) -> None:
    """Whole released-size backbones in float64 on the device, each device path (``FSLA_PATHS``), and on the
    CPU (same weights): the outputs of every stage agree to float64 rounding. (Rehearsal: CPU paths against
    the CPU kernel.)"""
    from boat_mm import BOATCSWinTransformer, BOATSwinTransformer
    for cls in (BOATSwinTransformer, BOATCSWinTransformer):
        torch.manual_seed(0)
        model = cls('tiny').double().eval()
        for shape in ctx.sizes.fp64_inputs:
            x = torch.randn(*shape[:1], 3, *shape[1:], dtype=torch.float64)
            with torch.no_grad():
                reference = model(x)
                for path, setting in fsla_paths(ctx).items():
                    with fsla_path(setting):
                        on_device = [out.cpu() for out in model.to(ctx.device)(x.to(ctx.device))]
                    model.cpu()
                    worst = max(float((a - b).abs().max()) for a, b in zip(reference, on_device))
                    size = 'x'.join(map(str, shape))
                    ctx.row('float64 backbone outputs, device vs CPU', model=cls.__name__, path=path, input=size,
                            max_abs_diff=f'{worst:.2e}')
                    ctx.check(f'{cls.__name__} float64 device == CPU, {path}, at {size}', worst < 1e-10,
                              f'max |diff| {worst:.2e}')


def step_no_host_sync(ctx: Context) -> None:
    """Forwards under ``torch.cuda.set_sync_debug_mode('error')``: any .item(), nonzero or blocking copy
    raises. Plans and masks are built (and cached) by a first call outside the checked one."""
    from boat_mm import BOATCSWinTransformer, BOATSwinTransformer, FeatureSpaceLocalAttention
    fsla = FeatureSpaceLocalAttention(96, 3).to(ctx.device).eval()
    tokens = torch.randn(2, 97 * 131, 96, device=ctx.device)
    cases = {'FSLA module, 2x97x131 tokens': lambda: fsla(tokens, (97, 131))}
    image = torch.randn(1, 3, 97, 131, device=ctx.device)
    for cls in (BOATSwinTransformer, BOATCSWinTransformer):
        model = cls('tiny').to(ctx.device).eval()
        cases[f'{cls.__name__} forward, 1x3x97x131'] = lambda model=model: model(image)
    for name, forward in cases.items():
        with torch.no_grad():
            forward()
            ctx.synchronize()
            if ctx.device != 'cuda':
                forward()
                ctx.check(f'no host sync: {name}', None, 'ran; the sync debug mode exists on CUDA only')
                continue
            torch.cuda.set_sync_debug_mode('error')
            try:
                forward()
                ctx.check(f'no host sync: {name}', True)
            except RuntimeError as error:
                ctx.check(f'no host sync: {name}', False, str(error).splitlines()[0][:300])
            finally:
                torch.cuda.set_sync_debug_mode('default')


def step_amp_training(ctx: Context) -> None:
    """One fp16 (GradScaler) and one bf16 autocast training step of each released-size backbone: the loss
    and every gradient finite."""
    from boat_mm import BOATCSWinTransformer, BOATSwinTransformer
    batch, height, width = ctx.sizes.amp_input
    for cls in (BOATSwinTransformer, BOATCSWinTransformer):
        for dtype_name in ('fp16', 'bf16'):
            torch.manual_seed(0)
            model = cls('tiny', drop_path_rate=0.1).to(ctx.device).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
            scaler = torch.amp.GradScaler(ctx.device, enabled=dtype_name == 'fp16')
            x = torch.randn(batch, 3, height, width, device=ctx.device)
            with autocast(ctx, dtype_name):
                loss = sum(out.float().pow(2).mean() for out in model(x))
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            finite = bool(torch.isfinite(loss)) and all(
                p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in model.parameters())
            scaler.step(optimizer)
            scaler.update()
            ctx.check(f'{dtype_name} training step of {cls.__name__} finite', finite, f'loss {float(loss):.4g}')


def _fsla_workload(ctx: Context, n: int, batch: int, dtype_name: str):
    """A seeded FSLA module (C=96, 3 heads: BOAT-Swin-T stage 1) on ``batch`` x ``n`` tokens: (forward,
    forward+backward) callables."""
    from boat_mm import FeatureSpaceLocalAttention
    embed_dims, num_heads = 96, 3
    side = int(round(n ** 0.5))
    hw = (side, n // side) if side * (n // side) == n else (n, 1)
    torch.manual_seed(0)
    module = FeatureSpaceLocalAttention(embed_dims, num_heads).to(ctx.device)
    x = torch.randn(batch, n, embed_dims, device=ctx.device, requires_grad=True)

    def forward():
        with torch.no_grad(), autocast(ctx, dtype_name):
            module(x, hw)

    def forward_backward():
        with autocast(ctx, dtype_name):
            out = module(x, hw)
        out.float().sum().backward()
    return forward, forward_backward


def step_fsla_profile(ctx: Context) -> None:
    """One FSLA forward+backward (fp32, ``profile_input``: 64x3136 on the GPU) per device path under
    torch.profiler: device kernels launched, their summed device time, the host time of issuing them, the
    wall time, and the top kernels by device time. (Rehearsal: the kernel census, aten ops + Triton launches.)"""
    batch, n = ctx.sizes.profile_input
    for path, setting in fsla_paths(ctx).items():
        with fsla_path(setting):
            _, forward_backward = _fsla_workload(ctx, n, batch, 'fp32')
            forward_backward()  # plans, kernels compiled
            ctx.synchronize()
            if ctx.device != 'cuda':
                from boat_mm.analysis.kernel_census import count_kernels
                with count_kernels() as ops:
                    forward_backward()
                ctx.row('FSLA profile, fwd+bwd fp32', path=path, input=f'{batch}x{n}', kernels=sum(ops.values()),
                        top=', '.join(f'{name} {count}' for name, count in ops.most_common(PROFILE_TOP_KERNELS)))
                continue
            from torch.autograd import DeviceType
            from torch.profiler import ProfilerActivity, profile
            start = time.perf_counter()
            forward_backward()
            host_ms = (time.perf_counter() - start) * 1e3  # issuing the kernels: nothing in it waits for the GPU
            ctx.synchronize()
            wall_ms = median_ms(ctx, forward_backward)
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                forward_backward()
                ctx.synchronize()
            kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA
                       and not e.name.startswith(('Memcpy', 'Memset'))]
            per_name = {}
            for event in kernels:
                per_name[event.name] = per_name.get(event.name, 0.0) + event.time_range.elapsed_us()
            top = sorted(per_name.items(), key=lambda item: -item[1])[:PROFILE_TOP_KERNELS]
            ctx.row('FSLA profile, fwd+bwd fp32', path=path, input=f'{batch}x{n}', kernels=len(kernels),
                    device_ms=round(sum(per_name.values()) / 1e3, 3), host_ms=round(host_ms, 3),
                    wall_ms=round(wall_ms, 3),
                    top=', '.join(f'{name[:60]} {us / 1e3:.3f} ms' for name, us in top))


def step_loaded_kernels(ctx: Context) -> None:
    """The fused kernels as the driver loaded them on this GPU (registers, spills, shared memory) and the launch
    configurations chosen, after one FSLA forward+backward per arithmetic, beside the CPU resource report's
    compile of the same kernels for this architecture (benchmarks/kernel_resources.py): a GPU run confirms it.
    (Rehearsal: the interpreter loads nothing; the report's rows for sm_90 are listed.)"""
    from boat_mm.analysis import kernel_resources
    from boat_mm.models.layers import triton_kernels
    from boat_mm.models.layers import triton_launch_configs as configs
    if not triton_kernels.triton_available(torch.device(ctx.device)):
        ctx.note('loaded kernels: the fused kernels cannot run here')
        return
    arch = triton_kernels.device_arch(torch.device(ctx.device)) or kernel_resources.SPILL_FREE_ARCHS[-1]
    ctx.info(arch=f'sm_{arch}', fused_architectures={k: list(v) for k, v in configs.FUSED_ARCHITECTURES.items()})
    n = ctx.sizes.attention_tokens[0]
    for dtype_name in ('fp32', 'bf16'):
        triton_kernels.LOADED_KERNELS.clear()
        _, forward_backward = _fsla_workload(ctx, n, 2, dtype_name)
        with fsla_path('1' if ctx.device == 'cuda' else 'triton'):
            forward_backward()
        ctx.synchronize()
        arithmetic = 'bf16' if dtype_name == 'bf16' else triton_kernels.arithmetic_of(
            torch.empty(0, device=ctx.device))
        for name, loaded in sorted(triton_kernels.LOADED_KERNELS.items()):
            ctx.row('loaded kernels', dtype=dtype_name, kernel=loaded['kernel'], blocks=loaded['blocks'],
                    warps=loaded['num_warps'], stages=loaded['num_stages'], n_regs=loaded['registers'],
                    n_spills=loaded['spills'], shared_B=loaded['shared'])
            ctx.check(f"{loaded['kernel']} {dtype_name} loaded without spills", loaded['spills'] == 0,
                      f"{loaded['registers']} registers, {loaded['spills']} spills")
        if time.time() > ctx.deadline - MIN_STEP_S:
            break
        cases = kernel_resources.report_cases(archs=(arch,), arithmetics=(arithmetic,), head_dims=(32,),
                                              slots=(49,), kernels=kernel_resources.ATTENTION_KERNELS)
        try:
            for row in kernel_resources.resource_report(cases):
                ctx.row('CPU report for this arch', dtype=dtype_name, kernel=row['kernel'],
                        registers=row['registers'], stack=row['stack'], shared_B=row['shared'])
        except Exception as error:  # no cuobjdump in this triton: the loaded numbers stand alone
            ctx.note(f'CPU resource report not compiled here: {type(error).__name__}: {error}')


def step_fsla_speed(ctx: Context) -> None:
    """The FSLA module (C=96, 3 heads: BOAT-Swin-T stage 1) forward and forward+backward, fp32 and bf16
    autocast, per device path, and peak memory of a forward+backward."""
    for dtype_name in ('fp32', 'bf16'):
        for n in ctx.sizes.fsla_tokens:
            for path, setting in fsla_paths(ctx).items():
                if ctx.time_left() < MIN_STEP_S:
                    ctx.note(f'FSLA module: time box reached before {path} {dtype_name} N={n}')
                    return
                batch = max(1, ctx.sizes.fsla_total_tokens // n)
                with fsla_path(setting):
                    forward, forward_backward = _fsla_workload(ctx, n, batch, dtype_name)
                    fwd, fwd_bwd = median_ms(ctx, forward), median_ms(ctx, forward_backward)
                    memory = peak_mb(ctx, forward_backward)
                tokens = batch * n
                ctx.row('FSLA module', path=path, dtype=dtype_name, N=n, batch=batch, fwd_ms=round(fwd, 3),
                        fwd_bwd_ms=round(fwd_bwd, 3), fwd_us_per_token=round(fwd * 1e3 / tokens, 4),
                        fwd_bwd_us_per_token=round(fwd_bwd * 1e3 / tokens, 4), fwd_bwd_peak_MB=memory,
                        KB_per_token=None if memory is None else round(memory * 1024 / tokens, 2))


# How a backbone runs in the backbone steps: eager; eager with every training step replayed from CUDA graphs
# (``torch.cuda.make_graphed_callables``, the fused kernels included: static shapes and no host syncs make a
# step capturable); under ``torch.compile`` (which traces the torch ops: inductor fuses them itself).
EAGER, GRAPHED, COMPILED = 'eager', 'CUDA graphs', 'torch.compile'
BACKBONE_TABLES = {EAGER: 'backbones, eager', GRAPHED: 'backbones, CUDA graphs', COMPILED: 'backbones, torch.compile'}


def _has_fsla(name: str) -> bool:
    return name.startswith('BOAT')


def _graphed_training_step(ctx: Context, model, x, dtype_name: str):
    """``model``'s forward and backward captured as CUDA graphs (autocast inside, with its weight cache off, as
    capture requires): a forward+backward callable that replays them."""
    with autocast(ctx, dtype_name, cache_enabled=False):
        graphed = torch.cuda.make_graphed_callables(model, (x,))

    def forward_backward():
        with autocast(ctx, dtype_name, cache_enabled=False):
            outs = graphed(x)
        sum(out.float().mean() for out in outs).backward()
        model.zero_grad(set_to_none=True)
    return forward_backward


def _measure_backbone(ctx: Context, name: str, size: tuple, dtype_name: str, kind: str) -> dict:
    """One model at one input size and dtype: forward (eval, no grad) and forward+backward (train) median
    ms and images/s, peak memory of a forward+backward; compiled, also the compile time (first calls); graphed,
    the training step only, and its capture time."""
    batch, height, width = size
    torch.manual_seed(0)
    model = backbone_builders()[name]().to(ctx.device)
    runner = torch.compile(model, backend=ctx.sizes.compile_backend, dynamic=False) if kind == COMPILED else model
    x = torch.randn(batch, 3, height, width, device=ctx.device)

    def forward():
        with torch.no_grad(), autocast(ctx, dtype_name):
            runner(x)

    def forward_backward():
        with autocast(ctx, dtype_name):
            outs = runner(x)
        sum(out.float().mean() for out in outs).backward()
        model.zero_grad(set_to_none=True)
    row = dict(model=name, kind=kind, dtype=dtype_name, input=f'{batch}x{height}x{width}')
    modes = (('fwd', forward, False), ('fwd+bwd', forward_backward, True))
    if kind == GRAPHED:
        model.train(True)
        forward_backward()  # plans cached, kernels compiled: nothing of that may happen during the capture
        ctx.synchronize()
        start = time.time()
        modes = (('fwd+bwd', _graphed_training_step(ctx, model, x, dtype_name), True),)
        row['capture_s'] = round(time.time() - start, 1)
    for mode, fn, train in modes:
        if kind == COMPILED and mode not in ctx.sizes.compile_modes:
            continue
        model.train(train)
        if kind == COMPILED:
            start = time.time()
            fn()  # compiles: eval and train are two graphs
            ctx.synchronize()
            row[f'{mode} compile_s'] = round(time.time() - start, 1)
        milliseconds = median_ms(ctx, fn)
        row[f'{mode} ms'] = round(milliseconds, 2)
        row[f'{mode} img/s'] = round(batch / milliseconds * 1e3, 1)
        if mode == 'fwd+bwd':
            row['fwd+bwd peak_MB'] = peak_mb(ctx, fn)
    return row


def _measure_backbones(ctx: Context, kind: str) -> None:
    """Every model of the two pairs (bench_backbones.PAIRS) at every size and dtype, pairs completed first, the
    BOAT models on each FSLA path where they run eager (compiled, they trace the torch ops; graphed, the fused
    kernels are what is captured); a measurement that raises is a failed check, and the next one runs."""
    table = BACKBONE_TABLES[kind]
    order = [name for pair in backbone_pairs().values() for name in pair]
    if kind == COMPILED and ctx.sizes.compile_models:
        order = [name for name in order if name in ctx.sizes.compile_models]
    dtypes = ctx.sizes.compile_dtypes if kind == COMPILED else ('fp32', 'bf16')
    for size in ctx.sizes.backbone_inputs:
        for dtype_name in dtypes:
            for name in order:
                if not _has_fsla(name) or kind == COMPILED:
                    paths = {'-': None}
                elif kind == GRAPHED:
                    paths = {'fused Triton': FSLA_PATHS['fused Triton']}
                else:
                    paths = fsla_paths(ctx)
                for path, setting in paths.items():
                    label = f'{name} {dtype_name} {"x".join(map(str, size))}{"" if setting is None else " " + path}'
                    if ctx.time_left() < MIN_STEP_S:
                        ctx.note(f'{table}: time box reached before {label}; the rest was not measured')
                        return
                    if kind == COMPILED:
                        torch._dynamo.reset()
                    try:
                        with fsla_path(setting) if setting is not None else nullcontext():
                            row = _measure_backbone(ctx, name, size, dtype_name, kind)
                        ctx.row(table, **dict(row, path=path))
                    except Exception as error:  # recorded, and the next model runs
                        ctx.check(f'{table}: {label} ran', False, f'{type(error).__name__}: {str(error)[:300]}')


def step_backbones_eager(ctx: Context) -> None:
    """BOAT-Swin-T vs mmpretrain's Swin-T and BOAT-CSWin-T vs FSLA off, eager, fp32 (TF32 as PyTorch's
    defaults) and bf16 autocast; the BOAT models on the torch ops and on the fused kernels."""
    _measure_backbones(ctx, EAGER)


def step_backbones_graphed(ctx: Context) -> None:
    """The training step (forward+backward) of the same models replayed from CUDA graphs, BOAT on the fused
    kernels: what is left of launch overhead once no kernel is launched from Python."""
    if ctx.device != 'cuda':
        ctx.check('CUDA graphs capture the training steps', None, 'CUDA graphs exist on CUDA only')
        return
    _measure_backbones(ctx, GRAPHED)


def step_backbones_compiled(ctx: Context) -> None:
    """The same models under ``torch.compile(dynamic=False)`` (inductor on the GPU)."""
    _measure_backbones(ctx, COMPILED)


# name -> (function, time box in seconds on the GPU). The boxes add up to more than the budget on purpose:
# each step gets min(its box, the time left), and the compiled models (last) take what the others leave.
# Ordered by what the second edition must tell first (issue 32): exactness of the fused kernels, their kernel
# count, the eager and graphed ratios; amp_training (all finite on the H200) comes last.
STEPS = {
    'environment': (step_environment, 30),
    'fused_attention': (step_fused_attention, 30),
    'loaded_kernels': (step_loaded_kernels, 40),
    'clusters': (step_clusters, 50),
    'backbones_float64': (step_backbones_float64, 30),
    'no_host_sync': (step_no_host_sync, 25),
    'fsla_profile': (step_fsla_profile, 30),
    'backbones_eager': (step_backbones_eager, 110),
    'backbones_graphed': (step_backbones_graphed, 60),
    'fsla_speed': (step_fsla_speed, 35),
    'backbones_compiled': (step_backbones_compiled, 120),
    'amp_training': (step_amp_training, 35),
}


# --- the driver ---------------------------------------------------------------------------------------------

def run_step(name: str, args) -> dict:
    """Run step ``name`` in its own process under its time box; returns its record and its measurements."""
    box = STEPS[name][1]
    remaining = args.deadline - time.time()
    record = dict(step=name, status='skipped', seconds=0.0, entries=[])
    if remaining < MIN_STEP_S:
        record['error'] = f'not started: {remaining:.0f} s of the budget left'
        return record
    limit = min(box * (args.box_scale or 1.0), remaining)
    result_path = osp.join(args.out, f'.{name}.jsonl')
    if osp.exists(result_path):
        os.remove(result_path)
    command = [sys.executable, osp.abspath(__file__), '--run-step', name, '--result', result_path,
               '--step-deadline', str(time.time() + limit - STEP_GRACE_S), '--device', args.device]
    if args.rehearse:
        command.append('--rehearse')
    start = time.time()
    try:
        env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
        if args.rehearse:  # the fused kernels on CPU tensors: Triton's interpreter, chosen at triton's import
            env['TRITON_INTERPRET'] = '1'
        else:
            env.pop('TRITON_INTERPRET', None)
        process = subprocess.run(command, capture_output=True, text=True, timeout=limit, env=env)
        output, code = process.stdout + process.stderr, process.returncode
        record['status'] = 'ok' if code == 0 else f'failed (exit {code})'
    except subprocess.TimeoutExpired as expired:
        output = ''.join(part.decode(errors='replace') if isinstance(part, bytes) else (part or '')
                         for part in (expired.stdout, expired.stderr))
        record['status'] = f'timed out ({limit:.0f} s box)'
        output += f'\n[gpu_check] killed at its time box of {limit:.0f} s'
    record['seconds'] = round(time.time() - start, 1)
    if record['status'] != 'ok':
        record['error'] = output[-LOG_TAIL_CHARS:]
    record['output'] = output
    if osp.exists(result_path):
        with open(result_path) as lines:
            record['entries'] = [json.loads(line) for line in lines if line.strip()]
        os.remove(result_path)
    return record


def pair_ratios(rows: list) -> list:
    """BOAT / baseline ratios of each pair, per input, dtype, mode and FSLA path, from the backbone rows of one
    kind (eager, graphed, compiled): each BOAT row against its baseline's row of the same kind."""
    bases = [base for _, base in backbone_pairs().values()]
    baselines = {(r['model'], r['dtype'], r['input']): r for r in rows if r['model'] in bases}
    ratios = []
    for boat, base in backbone_pairs().values():
        for row in rows:
            other = baselines.get((base, row['dtype'], row['input']))
            if row['model'] != boat or other is None:
                continue
            entry = dict(pair=f'{boat} / {base}', path=row.get('path', '-'), dtype=row['dtype'], input=row['input'])
            for mode in ('fwd', 'fwd+bwd'):
                if f'{mode} ms' in row and f'{mode} ms' in other:
                    entry[f'{mode} time ratio'] = round(row[f'{mode} ms'] / other[f'{mode} ms'], 2)
            if row.get('fwd+bwd peak_MB') and other.get('fwd+bwd peak_MB'):
                entry['memory ratio'] = round(row['fwd+bwd peak_MB'] / other['fwd+bwd peak_MB'], 2)
            ratios.append(entry)
    return ratios


def summarise(records: list, args) -> dict:
    info, checks, tables, notes = {}, [], {}, []
    for record in records:
        for entry in record['entries']:
            if 'info' in entry:
                info.update(entry['info'])
            elif 'note' in entry:
                notes.append(f'{record["step"]}: {entry["note"]}')
            elif 'check' in entry:
                checks.append(dict(entry, step=record['step']))
            else:
                tables.setdefault(entry['table'], []).append(entry['row'])
    for table in BACKBONE_TABLES.values():
        if table in tables:
            tables[f'{table}: ratios'] = pair_ratios(tables[table])
    for record in records:
        if record['status'].startswith('timed out'):
            notes.append(f'{record["step"]}: cut by its time box; {len(record["entries"])} measurements kept')
    if not args.rehearse:
        notes.append('out of scope here: whole UperNet / Mask R-CNN models (mmseg and mmdet need mmcv ops, '
                     'which have no wheel for the GPU image)')
    else:
        rehearsal = Sizes(True)
        notes.append(f'rehearsal: CPU, small sizes, one timed call each; torch.compile with backend '
                     f'{rehearsal.compile_backend}, {"/".join(rehearsal.compile_dtypes)}, '
                     f'{"/".join(rehearsal.compile_modes)}, {" and ".join(rehearsal.compile_models)} only: '
                     'these numbers prove the steps run, they are not GPU numbers')
    steps = [{k: v for k, v in r.items() if k not in ('entries', 'output')} for r in records]
    return dict(mode='rehearsal (CPU)' if args.rehearse else 'GPU', budget_s=args.budget_s,
                started=time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(args.started)), info=info,
                steps=steps, checks=checks, notes=notes, tables=tables)


def markdown(summary: dict) -> str:
    from boat_mm.utils.tables import markdown_table
    info = summary['info']
    lines = [f'# GPU check, {summary["mode"]}, {summary["started"]}', '',
             f'device: {info.get("device", "?")}; torch {info.get("torch", "?")} (CUDA {info.get("cuda")}), '
             f'mmengine {info.get("mmengine", "?")}, mmcv {info.get("mmcv", "?")}, '
             f'mmpretrain {info.get("mmpretrain", "?")}; CPU {info.get("cpu", "?")}', '']
    if 'tf32_matmul' in info:
        lines += [f'TF32 (PyTorch defaults): matmul {info["tf32_matmul"]}, cuDNN {info["tf32_cudnn"]}', '']
    lines += ['## Steps', '', markdown_table(
        [dict(step=s['step'], status=s['status'], seconds=s['seconds'],
              note=(s.get('error') or '').strip().splitlines()[-1][:160] if s.get('error') else '')
         for s in summary['steps']], ['step', 'status', 'seconds', 'note']), '']
    if summary['notes']:
        lines += ['## Notes', ''] + [f'- {note}' for note in summary['notes']] + ['']
    if summary['checks']:
        lines += ['## Checks', '', markdown_table(
            [dict(check=c['check'], result='n/a' if c['ok'] is None else 'ok' if c['ok'] else 'FAILED',
                  detail=c['detail']) for c in summary['checks']], ['check', 'result', 'detail']), '']
    for table, rows in summary['tables'].items():
        if rows:
            columns = list(dict.fromkeys(key for row in rows for key in row))
            cells = [{c: '-' if row.get(c) is None else row[c] for c in columns} for row in rows]
            lines += [f'## {table}', '', markdown_table(cells, columns), '']
    return '\n'.join(lines)


def write_outputs(records: list, args) -> dict:
    from boat_mm.utils.file_io import write_atomically

    def write_text(path: str, text: str) -> None:
        write_atomically(path, lambda out: out.write(text), binary=False)
    summary = summarise(records, args)
    write_text(osp.join(args.out, 'gpu_check.json'), json.dumps(summary, indent=1))
    write_text(osp.join(args.out, 'gpu_check.md'), markdown(summary))
    write_text(osp.join(args.out, 'gpu_check.log'), ''.join(
        f'===== {r["step"]}: {r["status"]}, {r["seconds"]} s\n{r.get("output", "")}\n' for r in records))
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rehearse', action='store_true', help='every step on the CPU at small sizes')
    parser.add_argument('--device', help='default: cuda, or cpu with --rehearse')
    parser.add_argument('--out', default=os.environ.get('OUT') or osp.join(REPO, 'gpu_check_out'))
    parser.add_argument('--budget-s', type=float, help=f'wall time for all steps (default {TOTAL_BUDGET_S}, '
                        f'{REHEARSAL_BUDGET_S} with --rehearse)')
    parser.add_argument('--box-scale', type=float, help='scale every step time box (default 1)')
    parser.add_argument('--steps', nargs='+', choices=list(STEPS), default=list(STEPS), help='which steps')
    parser.add_argument('--run-step', choices=list(STEPS), help=argparse.SUPPRESS)  # a step's own process
    parser.add_argument('--result', help=argparse.SUPPRESS)
    parser.add_argument('--step-deadline', type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.device = args.device or ('cpu' if args.rehearse else 'cuda')
    if args.run_step:
        STEPS[args.run_step][0](Context(args.device, args.rehearse, args.step_deadline, args.result))
        return 0
    if args.device == 'cuda' and not torch.cuda.is_available():
        print('gpu_check: no CUDA device (bash benchmarks/gpu_check.sh --rehearse runs the steps on the CPU)',
              file=sys.stderr)
        return 2
    args.budget_s = args.budget_s or (REHEARSAL_BUDGET_S if args.rehearse else TOTAL_BUDGET_S)
    if args.rehearse and args.box_scale is None:  # the GPU's boxes: the interpreter's small sizes need as long
        args.box_scale = 1.0
    args.started = time.time()
    args.deadline = args.started + args.budget_s
    os.makedirs(args.out, exist_ok=True)
    records = []
    for name in args.steps:
        print(f'[gpu_check] {name} ...', flush=True)
        records.append(run_step(name, args))
        print(f'[gpu_check] {name}: {records[-1]["status"]} in {records[-1]["seconds"]} s', flush=True)
        summary = write_outputs(records, args)
    failed = [s['step'] for s in summary['steps'] if s['status'] != 'ok']
    failed += [c['check'] for c in summary['checks'] if c['ok'] is False]
    print(f'[gpu_check] {time.time() - args.started:.0f} s; wrote {args.out}/gpu_check.json, gpu_check.md, '
          f'gpu_check.log; {"all steps and checks ok" if not failed else "not ok: " + "; ".join(failed)}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
