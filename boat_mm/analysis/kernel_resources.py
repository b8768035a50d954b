"""Resources of FSLA's Triton kernels on every NVIDIA architecture, measured without a GPU.

Triton's interpreter proves what the kernels compute, never whether they compile, spill or fit: that is the
compiler's. Triton compiles for a GPU that is not there (``triton.compile(ASTSource(...),
target=GPUTarget('cuda', arch, 32))``), and ``cuobjdump -res-usage`` (shipped in the triton wheel) reads from
the cubin what the driver would load: registers per thread, stack bytes per thread (local memory: spills) and
static shared memory; Triton's metadata adds the dynamic shared memory it requests at launch.

Each kernel is compiled exactly as the launcher configures it (``triton_launch_configs``: block sizes, warps,
stages, accumulation and product precision), for every architecture x arithmetic x head dim x cluster size.
Needs triton, not torch: ``benchmarks/kernel_resources.py`` runs it with the pinned triton and in an environment
holding only the GPU image's triton. Compiled results are cached by Triton (``~/.triton/cache``) and here by
the kernel source, configuration and triton version (``cache_dir``)."""
import hashlib
import inspect
import json
import os
import os.path as osp
import re
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, Iterable, List, Optional

from ..models.layers import triton_kernel_bodies as bodies
from ..models.layers import triton_launch_configs as configs

__all__ = ['BODIES', 'KERNELS', 'ATTENTION_KERNELS', 'RELEASED_OVERLAP', 'report_cases', 'compile_case',
           'resource_report', 'launched', 'violations', 'split_level_occupancy', 'GPU_CHECK_STAGE1', 'format_table',
           'cuobjdump_path', 'SPILL_FREE_ARCHS']

BODIES = {body.__name__: body for body in bodies.KERNEL_BODIES}
KERNELS = tuple(BODIES)
ATTENTION_KERNELS = ('_attention_forward', '_attention_backward')
# Keys a cluster borrows from its sibling in the released models (the report's key count: slots + overlap).
RELEASED_OVERLAP = 20
# Soft 2-means iterations of the released models (a loop bound of ``_split_keys``).
RELEASED_KMEANS_ITERS = 2
# Group size of the report's clustering kernels: the first levels' groups, where the token block is full.
REPORT_GROUP_SLOTS = 3136
# The architectures the fast test compiles every launched kernel for (where users train most); the full report
# holds every architecture to the same bar.
SPILL_FREE_ARCHS = (80, 90)
# The architecture whose launch configuration the table's 'launch' column shows (others: ARCH_*_OVERRIDES).
REFERENCE_ARCH = 90
# Scalar arguments that are floats; every other non-pointer, non-constexpr argument is an int.
FLOAT_ARGUMENTS = frozenset({'scale', 'temperature', 'eps'})
TRITON_TYPES = {'fp32': 'fp32', 'tf32': 'fp32', 'bf16': 'bf16', 'fp16': 'fp16', 'fp64': 'fp64'}
RESOURCE_LINE = re.compile(r'REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)')


def cuobjdump_path() -> str:
    """The cuobjdump that ships in the triton wheel."""
    import triton
    return osp.join(osp.dirname(triton.__file__), 'backends', 'nvidia', 'bin', 'cuobjdump')


def _launch(kernel: str, arch: int, arithmetic: str, head_dims: int, slots: int) -> configs.Launch:
    """The launcher's configuration of ``kernel`` on ``arch`` for one case of the report."""
    key_count = slots + RELEASED_OVERLAP
    if kernel in ATTENTION_KERNELS:
        return configs.attention_launch(kernel, arithmetic, head_dims, slots, key_count, arch)
    if kernel == '_add_borrowed':
        return configs.add_borrowed_launch(arithmetic, head_dims, RELEASED_OVERLAP)
    if kernel == '_split_keys':
        return configs.split_launch(arithmetic, head_dims, REPORT_GROUP_SLOTS, RELEASED_KMEANS_ITERS, arch=arch)
    return configs.order_launch(arithmetic, REPORT_GROUP_SLOTS, has_layout=True)


def report_cases(archs: Iterable[int] = configs.ARCHITECTURES, arithmetics: Iterable[str] = configs.ARITHMETICS,
                 head_dims: Iterable[int] = configs.HEAD_DIMS, slots: Iterable[int] = configs.CLUSTER_SLOTS,
                 kernels: Iterable[str] = KERNELS) -> List[dict]:
    """Every (kernel, arch, arithmetic, head dim, slots) the report compiles. Kernels whose code does not depend
    on an argument are compiled once for it: the clustering kernels for one cluster size (they see groups, not
    clusters), and only the attention kernels take products (so 'tf32' is theirs alone)."""
    cases = []
    for kernel in kernels:
        for arch in archs:
            for arithmetic in arithmetics:
                if arithmetic == 'tf32' and kernel not in ATTENTION_KERNELS:
                    continue
                for head_dim in (head_dims if kernel != '_apply_order' else (configs.HEAD_DIMS[1],)):
                    for slot in (slots if kernel in ATTENTION_KERNELS else (configs.CLUSTER_SLOTS[0],)):
                        cases.append(dict(kernel=kernel, arch=arch, arithmetic=arithmetic, head_dim=head_dim,
                                          slots=slot))
    return cases


def _signature(fn, kernel: str, arithmetic: str) -> dict:
    data = TRITON_TYPES[arithmetic]
    acc = configs.accumulation(arithmetic)
    pointer_types = dict(data=data, acc=acc, index='i64', key='fp64' if arithmetic == 'fp64' else 'i64')
    pointers = bodies.POINTER_ARGUMENTS[kernel]
    params = inspect.signature(fn.fn if hasattr(fn, 'fn') else fn).parameters
    signature = {}
    for name, param in params.items():
        if name in pointers:
            signature[name] = '*' + pointer_types[pointers[name]]
        elif param.annotation is not inspect.Parameter.empty:  # the constexpr annotation
            signature[name] = 'constexpr'
        else:
            signature[name] = 'fp32' if name in FLOAT_ARGUMENTS else 'i32'
    return signature


def _case_key(case: dict) -> str:
    import triton
    body = BODIES[case['kernel']]
    launch = _launch(case['kernel'], case['arch'], case['arithmetic'], case['head_dim'], case['slots'])
    text = json.dumps([inspect.getsource(body), sorted(case.items()), launch.constexprs, launch.num_warps,
                       launch.num_stages, triton.__version__], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def compile_case(case: dict, cache_dir: Optional[str] = None) -> dict:
    """Compile one case for its architecture and read its resources. Returns the case with ``compiled``,
    ``error`` (the compiler's message, or None), ``registers``, ``stack``, ``shared`` (bytes: static + Triton's
    dynamic request), ``shared_limit``, ``num_warps``, ``num_stages`` and the block sizes."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.runtime.jit import JITFunction
    cache_file = osp.join(cache_dir, _case_key(case) + '.json') if cache_dir else None
    if cache_file and osp.exists(cache_file):
        with open(cache_file) as f:
            return json.load(f)
    kernel, arch, arithmetic = case['kernel'], case['arch'], case['arithmetic']
    launch = _launch(kernel, arch, arithmetic, case['head_dim'], case['slots'])
    body = BODIES[kernel]
    # JITFunction itself, not triton.jit: in a process started with TRITON_INTERPRET=1 (the tests) triton.jit
    # gives the interpreter's function, which does not compile.
    fn = JITFunction(body)
    row = dict(case, num_warps=launch.num_warps, num_stages=launch.num_stages,
               blocks={k: v for k, v in launch.constexprs.items() if k.startswith('BLOCK_')},
               shared_limit=configs.SHARED_MEMORY_LIMIT[arch], triton=triton.__version__)
    try:
        compiled = triton.compile(triton.compiler.ASTSource(fn=fn, signature=_signature(fn, kernel, arithmetic),
                                                            constexprs=launch.triton_constexprs()),
                                  target=GPUTarget('cuda', arch, 32),
                                  options=dict(num_warps=launch.num_warps, num_stages=launch.num_stages))
        with tempfile.NamedTemporaryFile(suffix='.cubin') as cubin:
            cubin.write(compiled.asm['cubin'])
            cubin.flush()
            usage = subprocess.run([cuobjdump_path(), '-res-usage', cubin.name], capture_output=True, text=True,
                                   check=True).stdout
        registers, stack, static_shared = (int(v) for v in RESOURCE_LINE.search(usage).groups())
        row.update(compiled=True, error=None, registers=registers, stack=stack,
                   shared=static_shared + int(compiled.metadata.shared))
    except Exception as error:  # the compiler's refusal is a result of the report
        message = str(error).strip().splitlines()
        row.update(compiled=False, error=(message[-1] if message else type(error).__name__)[:300], registers=None,
                   stack=None, shared=None)
    if cache_file and row['compiled']:  # a failure may be the environment's: compiled again next time
        os.makedirs(cache_dir, exist_ok=True)
        with open(cache_file, 'w') as f:
            json.dump(row, f)
    return row


def _compile_one(args):
    return compile_case(*args)


def resource_report(cases: List[dict], cache_dir: Optional[str] = None, workers: int = 1) -> List[dict]:
    """``compile_case`` of every case, in ``workers`` processes."""
    if workers <= 1:
        return [compile_case(case, cache_dir) for case in cases]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_compile_one, [(case, cache_dir) for case in cases]))


# Stage 1 of the GPU check's four shapes (images, FSLA heads, tokens): the split levels with the fewest programs.
# BOAT-Swin-T: 3 heads, 56x56 tokens at 224 and 128x128 at 512; BOAT-CSWin-T: 2 heads, the same token maps.
GPU_CHECK_STAGE1 = {
    'BOAT-Swin-T 64x224': (64, 3, 56 * 56), 'BOAT-CSWin-T 64x224': (64, 2, 56 * 56),
    'BOAT-Swin-T 8x512': (8, 3, 128 * 128), 'BOAT-CSWin-T 8x512': (8, 2, 128 * 128),
}
# Passes of ``_split_keys`` over its group's queries: the half means, each soft 2-means iteration, the ratios.
SPLIT_PASSES = 2 + RELEASED_KMEANS_ITERS
# Levels shown per shape: the first ones, where the programs are fewest and largest.
OCCUPANCY_LEVELS = 4


def split_level_occupancy(images: int, heads: int, num_tokens: int, head_dims: int = 32, element_bytes: int = 4,
                          levels: int = OCCUPANCY_LEVELS, cluster_size: int = 49) -> List[dict]:
    """The first split levels of one clustering: programs per ``_split_keys`` launch (rows x groups) and the
    bytes each reads (its group's queries, ``SPLIT_PASSES`` times), against how many SMs a GPU has."""
    import math
    total_levels = max(0, int(math.floor(math.log2(num_tokens / cluster_size) + 0.5)))
    slots = -(-num_tokens // (1 << total_levels)) << total_levels
    rows = []
    for level in range(min(levels, total_levels)):
        programs = images * heads << level
        group_bytes = (slots >> level) * head_dims * element_bytes * SPLIT_PASSES
        rows.append(dict(level=level, programs=programs, bytes_per_program=group_bytes,
                         launch_bytes=programs * group_bytes))
    return rows


def launched(row: dict) -> bool:
    """Whether the launcher runs this row's kernel: its arch takes the fused kernels for its arithmetic and,
    for the attention kernels, the fused attention takes its head dim and cluster size."""
    slots = row['slots'] if row['kernel'] in ATTENTION_KERNELS else 0
    return configs.fused_refusal(row['arch'], row['arithmetic'], row['head_dim'], slots) is None


def violations(rows: List[dict], spill_free_archs: Iterable[int] = configs.ARCHITECTURES) -> List[str]:
    """What the launcher must never meet, for the rows it launches: a compile error, shared memory over the
    arch's limit, or a stack (spills) on ``spill_free_archs`` (every architecture by default; any kernel, any
    arithmetic but fp64, which only the tests use: its spills are listed by the report, not refused)."""
    problems = []
    for row in rows:
        if not launched(row):
            continue
        where = (f"{row['kernel']} sm_{row['arch']} {row['arithmetic']} head_dim {row['head_dim']} slots "
                 f"{row['slots']}")
        if not row['compiled']:
            problems.append(f'{where}: does not compile: {row["error"]}')
            continue
        if row['shared'] > row['shared_limit']:
            problems.append(f"{where}: {row['shared']} B of shared memory, over the {row['shared_limit']} B limit")
        if row['stack'] and row['arch'] in spill_free_archs and row['arithmetic'] != 'fp64':
            problems.append(f"{where}: {row['stack']} B of stack per thread ({row['registers']} registers)")
    return problems


def format_table(rows: List[dict], head_dim: Optional[int] = None) -> str:
    """A markdown table: one line per (kernel, arithmetic, head dim, slots), one column per architecture with
    'registers / stack B / shared KB' (or 'error'; in parentheses where the launcher runs the torch ops
    instead), and the launch configuration on ``REFERENCE_ARCH``."""
    archs = sorted({row['arch'] for row in rows})
    by_key: Dict[tuple, Dict[int, dict]] = {}
    for row in rows:
        if head_dim is not None and row['head_dim'] != head_dim:
            continue
        key = (row['kernel'], row['arithmetic'], row['head_dim'], row['slots'])
        by_key.setdefault(key, {})[row['arch']] = row
    header = ['kernel', 'arith', 'd', 'slots', 'launch'] + [f'sm_{arch}' for arch in archs]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for (kernel, arithmetic, dims, slots), per_arch in by_key.items():
        any_row = per_arch.get(REFERENCE_ARCH) or next(iter(per_arch.values()))
        blocks = ' '.join(f"{k[6:]}{v}" for k, v in any_row['blocks'].items())
        launch = f"{blocks} w{any_row['num_warps']} s{any_row['num_stages']}"
        cells = []
        for arch in archs:
            row = per_arch.get(arch)
            if row is None:
                cells.append('')
            elif not row['compiled']:
                cells.append('error' if launched(row) else '(error)')
            else:
                over = '!' if row['shared'] > row['shared_limit'] else ''
                cell = f"{row['registers']} / {row['stack']} / {row['shared'] / 1024:.1f}{over}"
                cells.append(cell if launched(row) else f'({cell})')
        lines.append('| ' + ' | '.join([kernel.strip('_'), arithmetic, str(dims), str(slots), launch] + cells) + ' |')
    return '\n'.join(lines)
