"""Launch configurations of FSLA's Triton kernels per GPU architecture and arithmetic, and the per-GPU limits
they were chosen against: named tables, read by the launcher (``triton_kernels``) and by the resource report
(``boat_mm.analysis.kernel_resources``, which compiles every kernel as configured here for every architecture
and checks it compiles, does not spill and fits the architecture's shared memory).

Importable without torch and without triton (the report runs in an environment holding triton alone).

How the tables were chosen (docs/performance.md, "Kernel resources"): with IEEE fp32 products (torch's
default: TF32 off) Triton multiplies on the FMA units and a 64 x BLOCK_K tile of logits lives in registers;
4 warps and 32-key blocks spilled on sm_80 (255 registers and 96-128 B of stack), 8 warps and 16-key blocks
compile to 98-173 registers and no stack on sm_80 and sm_90. bf16 / fp16 products run on tensor cores with
fewer live registers: 4 warps and 32-key blocks (69 keys: 96 columns, 3 blocks).
"""
from typing import NamedTuple, Optional

__all__ = ['ARCHITECTURES', 'ARCH_GPUS', 'SHARED_MEMORY_LIMIT', 'MAX_REGISTERS', 'ARITHMETICS', 'HEAD_DIMS',
           'CLUSTER_SLOTS', 'AttentionConfig', 'SplitConfig', 'Launch', 'ATTENTION_CONFIG',
           'ATTENTION_CONFIG_OVERRIDES', 'ARITHMETIC_CONFIGS', 'ARCH_ATTENTION_OVERRIDES', 'ARCH_SPLIT_OVERRIDES',
           'ARCH_MAX_FUSED_BLOCK_D', 'SPLIT_CONFIGS', 'SPLIT_CONFIG', 'ORDER_CONFIG', 'FUSED_ARCHITECTURES',
           'MAX_FUSED_BLOCK_D', 'attention_fits', 'attention_config', 'attention_launch', 'add_borrowed_launch',
           'split_launch', 'order_launch',
           'arithmetic_name', 'fused_supported', 'fused_refusal', 'arch_of', 'next_pow2', 'accumulation']

# NVIDIA architectures BOAT users train on (compute capability as major * 10 + minor) and their GPUs.
ARCH_GPUS = {
    70: 'V100', 75: 'T4', 80: 'A100', 86: 'RTX 3090 / A6000', 89: 'RTX 4090 / L40', 90: 'H100 / H200',
    100: 'B200', 120: 'RTX 5090',
}
ARCHITECTURES = tuple(ARCH_GPUS)
KIB = 1024
# Shared memory one block may use (the opt-in maximum per block), per architecture.
SHARED_MEMORY_LIMIT = {70: 96 * KIB, 75: 64 * KIB, 80: 163 * KIB, 86: 99 * KIB, 89: 99 * KIB, 90: 227 * KIB,
                       100: 227 * KIB, 120: 99 * KIB}
# Registers per thread a kernel can have; a kernel that needs more keeps the rest on its stack (spills).
MAX_REGISTERS = 255
# The arithmetics of the attention kernels: the input dtype, and for fp32 inputs how products are taken
# ('fp32': IEEE, torch's default; 'tf32': torch.backends.cuda.matmul.allow_tf32 on).
ARITHMETICS = ('fp32', 'tf32', 'bf16', 'fp16', 'fp64')
# Head dims of the report (BOAT-Swin / BOAT-CSWin heads are 32 wide; 16 and 64 for other widths).
HEAD_DIMS = (16, 32, 64)
# Query slots per cluster of the report: 49 (the released cluster size: BLOCK_Q 64) and 69 (sizes whose clusters
# hold up to sqrt(2) x 49 tokens: BLOCK_Q 128).
CLUSTER_SLOTS = (49, 69)
# tl.dot needs every dimension of its operands to be at least 16.
MIN_DOT_DIM = 16


class AttentionConfig(NamedTuple):
    """How ``_attention_forward`` / ``_attention_backward`` are launched: keys per block of the online
    softmax, warps per program, software-pipelining stages of the key loop."""
    block_k: int
    num_warps: int
    num_stages: int


class SplitConfig(NamedTuple):
    """How ``_split_keys`` / ``_apply_order`` are launched: tokens a program handles at once, warps."""
    block_n: int
    num_warps: int
    num_stages: int


# The attention kernels' configuration wherever no override applies: 16-key blocks and 8 warps compile without
# spills for every arithmetic on sm_80 and sm_90 (docs/performance.md); 2 stages keep the key loop's shared
# memory well under the smallest limit (sm_75, 64 KB).
ATTENTION_CONFIG = AttentionConfig(block_k=16, num_warps=8, num_stages=2)
# Overrides from the resource report, keyed by (kernel, arithmetic, BLOCK_D, BLOCK_Q): 16-wide heads in IEEE fp32
# kept 16-24 B of stack in the backward with 8 warps (80 registers), none with 4 (116-118 registers).
# The same with triton 3.6 (the GPU image) for 16-wide heads and 128-query tiles on sm_80 with TF32, bf16 and fp16
# products: 8-16 B with 8 warps (IEEE fp32 keeps 8 warps: with 4, triton 3.8 spilled 16 B on sm_90).
ATTENTION_CONFIG_OVERRIDES = {
    ('_attention_backward', 'fp32', 16, 64): AttentionConfig(block_k=16, num_warps=4, num_stages=2),
    **{('_attention_backward', arithmetic, 16, 128): AttentionConfig(block_k=16, num_warps=4, num_stages=2)
       for arithmetic in ('tf32', 'bf16', 'fp16')},
}
# Per-architecture overrides from the report, keyed by (arch, kernel, arithmetic, BLOCK_D, BLOCK_Q): the first
# configuration that both triton 3.6 and 3.8 compile without a stack where the defaults kept 8-56 B.
ARCH_ATTENTION_OVERRIDES = {
    (70, '_attention_backward', 'fp16', 16, 128): AttentionConfig(block_k=16, num_warps=8, num_stages=1),
    (75, '_attention_forward', 'fp16', 16, 64): AttentionConfig(block_k=16, num_warps=4, num_stages=2),
    (75, '_attention_forward', 'fp16', 16, 128): AttentionConfig(block_k=16, num_warps=4, num_stages=2),
    (75, '_attention_backward', 'fp32', 16, 64): AttentionConfig(block_k=16, num_warps=8, num_stages=1),
    (75, '_attention_backward', 'tf32', 16, 128): AttentionConfig(block_k=16, num_warps=8, num_stages=1),
    (75, '_attention_backward', 'fp16', 16, 128): AttentionConfig(block_k=16, num_warps=8, num_stages=1),
    (86, '_attention_backward', 'tf32', 16, 128): AttentionConfig(block_k=16, num_warps=8, num_stages=1),
    (89, '_attention_backward', 'tf32', 16, 128): AttentionConfig(block_k=16, num_warps=8, num_stages=1),
    (100, '_attention_forward', 'tf32', 32, 128): AttentionConfig(block_k=16, num_warps=4, num_stages=2),
    (100, '_attention_backward', 'tf32', 16, 128): AttentionConfig(block_k=16, num_warps=8, num_stages=1),
    (100, '_attention_backward', 'tf32', 32, 128): AttentionConfig(block_k=16, num_warps=4, num_stages=2),
    (100, '_attention_backward', 'bf16', 32, 128): AttentionConfig(block_k=16, num_warps=4, num_stages=2),
    (120, '_attention_forward', 'tf32', 16, 64): AttentionConfig(block_k=16, num_warps=4, num_stages=2),
    (120, '_attention_forward', 'bf16', 32, 128): AttentionConfig(block_k=16, num_warps=4, num_stages=1),
    (120, '_attention_forward', 'fp16', 32, 128): AttentionConfig(block_k=16, num_warps=4, num_stages=1),
    (120, '_attention_backward', 'fp32', 32, 128): AttentionConfig(block_k=16, num_warps=16, num_stages=2),
}
# The clustering kernel's configuration per (architecture, BLOCK_D), where the table's kept a stack: sm_100 with
# triton 3.6, 8 B for 32-wide heads with 4 warps.
ARCH_SPLIT_OVERRIDES = {(100, 32): SplitConfig(block_n=64, num_warps=8, num_stages=1)}
# Per-arithmetic defaults: fp64 tiles are twice as large; no pipelining keeps their shared memory lowest.
ARITHMETIC_CONFIGS = {'fp64': AttentionConfig(block_k=16, num_warps=8, num_stages=1)}
# The widest head (BLOCK_D) the fused attention takes, per query tile (BLOCK_Q): a 128-query tile of 64-wide heads
# spilled in the backward on sm_80 / sm_90 (48-448 B) and needed 74-164 KB of shared memory (over sm_75's and
# sm_86 / 89 / 120's limits), with 8 or 16 warps alike. Those clusters (head dim 64, over 64 tokens per
# cluster) run the torch ops; the released models' heads are 32 wide.
MAX_FUSED_BLOCK_D = {16: 64, 32: 64, 64: 64, 128: 32}
# sm_70 / sm_75 (V100, T4: no bf16 tensor cores, older register allocation): 128-query tiles of 32-wide heads
# spilled in the backward with every configuration tried (4 to 16 warps, 1 or 2 stages), and 64-query tiles of
# 64-wide heads on sm_70; those clusters run the torch ops there.
ARCH_MAX_FUSED_BLOCK_D = {
    70: {16: 64, 32: 64, 64: 32, 128: 16},
    75: {16: 64, 32: 64, 64: 64, 128: 16},
}
# Clustering kernels (they accumulate in fp32 / fp64), per BLOCK_D: 64 tokens a step and 4 warps compile
# without a stack for heads up to 32 wide; 64-wide heads kept 8-16 B that way on sm_70 to sm_100, and with
# 128 tokens and 8 warps none on any architecture, with either triton.
SPLIT_CONFIGS = {
    16: SplitConfig(block_n=64, num_warps=4, num_stages=2),
    32: SplitConfig(block_n=64, num_warps=4, num_stages=2),
    64: SplitConfig(block_n=128, num_warps=8, num_stages=1),
}
# Heads wider than the table (the torch ops run the attention then, the clustering still fused).
SPLIT_CONFIG = SPLIT_CONFIGS[64]
ORDER_CONFIG = SplitConfig(block_n=128, num_warps=4, num_stages=1)
# Where the fused kernels run, per arithmetic: the architectures on which the resource report shows every kernel
# compiled, without spills and within the shared memory limit, for every head dim (docs/performance.md).
# Elsewhere FSLA runs the torch ops (and says so once).
FUSED_ARCHITECTURES = {
    'fp32': ARCHITECTURES,
    'tf32': ARCHITECTURES,
    # V100 and T4 have no bf16 tensor cores (autocast emulates bf16 there): the bf16 backward spilled 256-512 B.
    'bf16': tuple(arch for arch in ARCHITECTURES if arch not in (70, 75)),
    'fp16': ARCHITECTURES,
    # fp64 (the tests' arithmetic) needs twice the tiles: its backward of 128-query tiles needs 88 KB on sm_75
    # (64 KB there) and, with triton 3.6, 164 KB on sm_80 (163 KB there).
    'fp64': tuple(arch for arch in ARCHITECTURES if arch not in (75, 80)),
}
def arithmetic_name(dtype_name: str, allow_tf32: bool = False) -> str:
    """The arithmetic of an attention launch: ``dtype_name`` ('fp32', 'bf16', 'fp16', 'fp64'), with fp32 taken
    as 'tf32' when TF32 products are allowed."""
    if dtype_name not in ('fp32', 'bf16', 'fp16', 'fp64'):
        raise ValueError(f'the fused FSLA kernels take fp32, bf16, fp16 or fp64 tensors, got {dtype_name}')
    return 'tf32' if dtype_name == 'fp32' and allow_tf32 else dtype_name


def attention_config(kernel: str, arithmetic: str, block_d: int, block_q: int,
                     arch: Optional[int] = None) -> AttentionConfig:
    """The launch configuration of an attention kernel on ``arch`` (None: Triton's interpreter)."""
    key = (kernel, arithmetic, block_d, block_q)
    if (arch,) + key in ARCH_ATTENTION_OVERRIDES:
        return ARCH_ATTENTION_OVERRIDES[(arch,) + key]
    return ATTENTION_CONFIG_OVERRIDES.get(key, ARITHMETIC_CONFIGS.get(arithmetic, ATTENTION_CONFIG))


class Launch(NamedTuple):
    """One kernel launch's compile-time arguments (``ACC`` as 'fp32' / 'fp64', so that this module needs no
    triton) and its warps and pipelining stages."""
    constexprs: dict
    num_warps: int
    num_stages: int

    def triton_constexprs(self) -> dict:
        """The compile-time arguments as triton takes them: ``ACC`` as triton's dtype (needs triton)."""
        import triton.language as tl
        constexprs = dict(self.constexprs)
        if 'ACC' in constexprs:
            constexprs['ACC'] = tl.float64 if constexprs['ACC'] == 'fp64' else tl.float32
        return constexprs


def next_pow2(value: int, at_least: int = 1) -> int:
    """The smallest power of two >= ``value`` and >= ``at_least``."""
    return max(at_least, 1 << max(0, int(value) - 1).bit_length())


def accumulation(arithmetic: str) -> str:
    return 'fp64' if arithmetic == 'fp64' else 'fp32'


def attention_launch(kernel: str, arithmetic: str, head_dims: int, slots: int, key_count: int,
                     arch: Optional[int] = None) -> Launch:
    """``_attention_forward`` / ``_attention_backward`` for clusters of ``slots`` query slots and ``key_count``
    keys (own slots + borrowed) on ``arch``."""
    block_d, block_q = next_pow2(head_dims, MIN_DOT_DIM), next_pow2(slots, MIN_DOT_DIM)
    config = attention_config(kernel, arithmetic, block_d, block_q, arch)
    return Launch(dict(HEAD_DIMS=head_dims, BLOCK_D=block_d, BLOCK_Q=block_q,
                       BLOCK_K=min(config.block_k, next_pow2(key_count, MIN_DOT_DIM)),
                       ACC=accumulation(arithmetic), PRECISION='tf32' if arithmetic == 'tf32' else 'ieee'),
                  config.num_warps, config.num_stages)


def add_borrowed_launch(arithmetic: str, head_dims: int, overlap: int) -> Launch:
    """``_add_borrowed`` for ``overlap`` borrowed keys per cluster."""
    return Launch(dict(HEAD_DIMS=head_dims, BLOCK_D=next_pow2(head_dims, MIN_DOT_DIM), BLOCK_O=next_pow2(overlap),
                       ACC=accumulation(arithmetic)), ORDER_CONFIG.num_warps, ORDER_CONFIG.num_stages)


def split_launch(arithmetic: str, head_dims: int, group_slots: int, kmeans_iters: int, block_cap: int = 0,
                 arch: Optional[int] = None) -> Launch:
    """``_split_keys`` for groups of ``group_slots`` slots on ``arch``; ``block_cap`` replaces the table's
    block (the interpreter takes bigger blocks: fewer Python steps)."""
    block_d = next_pow2(head_dims)
    config = ARCH_SPLIT_OVERRIDES.get((arch, block_d), SPLIT_CONFIGS.get(block_d, SPLIT_CONFIG))
    block_n = min(block_cap or config.block_n, next_pow2(group_slots))
    return Launch(dict(HEAD_DIMS=head_dims, BLOCK_D=block_d, BLOCK_N=block_n, ITERS=kmeans_iters,
                       ACC=accumulation(arithmetic), COMPOSITE_KEY=arithmetic != 'fp64'),
                  config.num_warps, config.num_stages)


def order_launch(arithmetic: str, group_slots: int, has_layout: bool, block_cap: int = 0) -> Launch:
    """``_apply_order`` for groups of ``group_slots`` slots (its grid's second axis: blocks of BLOCK_N)."""
    block_n = min(block_cap or ORDER_CONFIG.block_n, next_pow2(group_slots))
    return Launch(dict(HAS_LAYOUT=has_layout, COMPOSITE_KEY=arithmetic != 'fp64', BLOCK_N=block_n),
                  ORDER_CONFIG.num_warps, ORDER_CONFIG.num_stages)


def arch_of(capability) -> int:
    """(major, minor) compute capability -> the architecture number of these tables (e.g. (9, 0) -> 90)."""
    major, minor = capability
    return major * 10 + minor


def fused_supported(arch: Optional[int], arithmetic: str) -> bool:
    """Whether the fused kernels run for ``arithmetic`` on ``arch`` (None: Triton's interpreter, always)."""
    if arch is None:
        return True
    return arch in FUSED_ARCHITECTURES.get(arithmetic, ())


def attention_fits(head_dims: int, slots: int, arch: Optional[int] = None) -> bool:
    """Whether the fused attention takes clusters of ``slots`` query slots with ``head_dims``-wide heads on
    ``arch`` (None: Triton's interpreter)."""
    block_q = next_pow2(slots, MIN_DOT_DIM)
    limits = ARCH_MAX_FUSED_BLOCK_D.get(arch, MAX_FUSED_BLOCK_D)
    return next_pow2(head_dims, MIN_DOT_DIM) <= limits.get(block_q, 0)


def fused_refusal(arch: Optional[int], arithmetic: str, head_dims: int, slots: int = 0) -> Optional[str]:
    """Why the fused kernels do not run for ``arithmetic`` with ``head_dims``-wide heads on ``arch`` and, for
    the attention (``slots`` > 0), clusters of ``slots`` query slots; None where they run. The one rule the
    launcher gates by and the resource report holds to."""
    if head_dims > max(HEAD_DIMS):
        return f'head dim {head_dims} (the resource report covers up to {max(HEAD_DIMS)})'
    if not fused_supported(arch, arithmetic):
        return f'sm_{arch} with {arithmetic} (not among the architectures the resource report shows fitting)'
    if slots and not attention_fits(head_dims, slots, arch):
        return f'the attention of {slots}-token clusters with head dim {head_dims} (its tiles do not fit)'
    return None
