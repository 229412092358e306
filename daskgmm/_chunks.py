"""The chunking and persistence policy: every size a block, a strip, a read or a
write is cut to, with the measurement behind it.

One module, so that a rule is one edit: the fit plan (:mod:`daskgmm._plan`), the
reduction (:mod:`daskgmm._reduce`), the sources and sinks (:mod:`daskgmm.io`) and the
segmentation read their sizes here. Pure policy: the functions take the machine's
figures (threads, bytes) as arguments and import nothing of daskgmm's, so every
layer may use them.

Measured on a 2-core machine (dask/distributed 2026.8, zarr 3.1, pyarrow 26):

- a task costs about 0.2 ms on dask's threaded scheduler and 1.5-3 ms on
  distributed (scheduling, messages, moving its result);
- freshly touched memory is slow (page faults, about 0.4 GB/s): blocks of a few
  tens of MiB amortise it, hundreds of MiB per task make workers stall;
- dask copies task arguments under 1 MB into every task.
"""

from __future__ import annotations

import math

MiB = 2**20

###############################################################################
# Data held in memory during a fit

# Share of the memory available (worker limits, or free RAM with no cluster) that
# persist='auto' may fill with the data; the rest is for the kernels' temporaries,
# the partial statistics and dask itself.
PERSIST_SHARE = 0.5
# Largest row block of data held in memory (NumPy input, persisted data): one task
# per block and pass, and a block of 64 MiB costs ~0.1 s of kernel time, far above
# the task overhead.
MEMORY_BLOCK_BYTES = 64 * MiB
# Smallest row block of data held in memory (below it the task overhead dominates).
MIN_MEMORY_BLOCK_ROWS = 4096
# NumPy input of at most this many rows is predicted in the calling thread (no
# graph: building and scheduling one costs more than the kernel).
DIRECT_ROWS = 100_000


def target_blocks(threads: int, distributed: bool) -> tuple[int, int]:
    """How many row blocks a pass over data held in memory should have, at least and
    at most, on ``threads`` threads.

    On the threaded scheduler about 4 blocks per core balance the load at no cost;
    on distributed one block per worker thread keeps the overhead to one task per
    thread and pass (1.5-3 ms each), and fewer blocks than threads would leave
    threads idle.
    """
    return (threads, threads) if distributed else (threads, 4 * threads)


def memory_block_rows(n_rows: int, row_bytes: int, blocks: int) -> int:
    """Rows of ``blocks`` equal blocks of data in memory (at least
    ``MIN_MEMORY_BLOCK_ROWS`` rows, at most ``MEMORY_BLOCK_BYTES`` each)."""
    rows = max(MIN_MEMORY_BLOCK_ROWS, math.ceil(n_rows / blocks))
    return min(rows, max(1, MEMORY_BLOCK_BYTES // max(row_bytes, 1)))


###############################################################################
# Reading sources

# Largest block read from a source by one task (Zarr shards or chunks, .npy slices,
# Parquet row-group slices): 16 MiB keeps a worker at about one block plus small
# temporaries (2 workers x 400 MiB streamed 20M x 8 float64 from Zarr at a peak of
# 620 MiB in all, with no spill).
SOURCE_BLOCK_BYTES = 16 * MiB
# Blocks read from a source are not cut below this (a task per block costs
# 0.2-3 ms, however little it reads).
MIN_SOURCE_BLOCK_BYTES = MiB
# Rows a Parquet piece is streamed in (pyarrow record batches) and the read buffer.
PARQUET_BATCH_ROWS = 65_536
PARQUET_READ_BUFFER_BYTES = MiB
# Rows a synthetic block is generated in (make_gmm), whatever the block size.
GENERATION_ROWS = 65_536
# Row blocks of a job's synthetic data when data.rows_per_chunk is not set.
SYNTHETIC_BLOCK_ROWS = 131_072


def source_block_rows(n_rows: int, row_bytes: int, max_bytes: int, threads: int) -> int:
    """Rows per block read from a source (Zarr, .npy): at most ``max_bytes``, and
    about 4 blocks per thread when the source is small enough (a few big blocks
    would leave threads idle: a 100 MB chunk ran on one thread), but not below
    ``MIN_SOURCE_BLOCK_BYTES``."""
    row_bytes = max(int(row_bytes), 1)
    most = max(1, max_bytes // row_bytes)
    least = max(1, MIN_SOURCE_BLOCK_BYTES // row_bytes)
    spread = math.ceil(n_rows / (4 * max(threads, 1)))
    return min(most, max(least, spread))


###############################################################################
# Images

# Raw bytes of a strip of full rows read from an image (TIFF, PNG, Zarr) per task.
IMAGE_STRIP_BYTES = 32 * MiB
# Raw bytes per strip read for segmentation: a uint8 RGB strip of 8 MiB becomes
# 32 MiB of float32 features (53 MiB with xy), plus the kernels' small temporaries.
SEGMENT_STRIP_BYTES = 8 * MiB
# Rows per predict_proba call inside a segmentation task (NumPy in, NumPy out).
SEGMENT_PREDICT_ROWS = 65_536
# Pixels per rgb2lab call (its float temporaries stay near 10 MiB).
LAB_ROWS = 262_144

###############################################################################
# The reduction

# Bytes of partial results one combine task may hold; the fan-in is lowered below
# split_every when the partials are bigger (K=64, d=128 full: 8.4 MB each, fan-in 7).
COMBINE_INPUT_BYTES = 64 * MiB
# Pass parameters up to this many bytes of arrays are copied into every block task;
# larger ones (K·d² floats: K=8, d=64 is 262 KB) are one key that tasks reference.
INLINE_PARAMS_BYTES = 64 * 2**10

###############################################################################
# Writing outputs

# Largest Zarr chunk write_zarr writes: a quarter of SOURCE_BLOCK_BYTES, so that a
# pass over a small store still has several blocks per core (a 100 MB chunk would
# be read and computed on one thread), while a big one is read in blocks of 4
# chunks.
ZARR_WRITE_CHUNK_BYTES = SOURCE_BLOCK_BYTES // 4
# Rows per Parquet row group written by write_parquet.
PARQUET_ROW_GROUP_ROWS = 65_536
