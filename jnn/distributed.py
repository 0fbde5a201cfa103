"""Data-parallel and FSDP-style training over devices and hosts, with ``jax.sharding``.

jnn has no transport of its own: it lays arrays out on a
:class:`jax.sharding.Mesh` and lets XLA insert the collectives. With
``jnn.fit(..., mesh=mesh)`` each global batch is split along the mesh's data
axis, params are replicated (or sharded, ``param_sharding="fsdp"``), and the
gradient all-reduce (or the all-gather / reduce-scatter of FSDP) comes from
XLA's SPMD partitioner. The same program runs on one CPU, a multi-GPU machine
or a TPU pod.

Multi-host: every process runs the same script, calls :func:`initialize`
first, passes the same ``key`` and hyperparameters, and feeds ONLY its own
shard of the data (e.g. :func:`process_shard`); the global dataset is the
concatenation of the processes' shards in process order. The trained params
are global arrays; :func:`gather` brings them to every host as numpy, e.g. to
save them.

Example:
  >>> import jax, jnn
  >>> mesh = jnn.distributed.make_mesh()
  >>> mesh.axis_names, mesh.size == len(jax.devices())
  (('data',), True)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jnn._typing import Params

__all__ = [
    "DATA_AXIS",
    "TIMEOUT",
    "data_sharding",
    "gather",
    "initialize",
    "make_mesh",
    "param_shardings",
    "process_shard",
    "replicated",
    "shard_params",
]

#: The mesh axis that batches are split along, unless another is named.
DATA_AXIS = "data"
#: Seconds a process waits for the others at jnn's host-side checks (stream lengths,
#: checkpoint commits) before raising instead of hanging.
TIMEOUT = 300.0
_PARAM_SHARDINGS = ("replicated", "fsdp")


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    cpu_collectives: str | None = "gloo",
    initialization_timeout: int = 300,
    coordinator_bind_address: str | None = None,
) -> None:
    """Join a multi-process JAX job: a thin wrapper over ``jax.distributed.initialize``.

    Call it first, before any other JAX call, in every process. On GPU and TPU
    clusters (SLURM, Cloud TPU, Kubernetes) all three arguments can usually be
    left to JAX's auto-detection. On CPU, collectives across processes need an
    implementation; ``cpu_collectives="gloo"`` (the default) selects it.

    Two processes on one machine, each running the same script (not run here:
    it needs the other process)::

      jnn.distributed.initialize("127.0.0.1:1234", num_processes=2, process_id=pid)
      mesh = jnn.distributed.make_mesh()           # all devices of all processes
      x_mine, y_mine = jnn.distributed.process_shard(x), jnn.distributed.process_shard(y)
      res = jnn.fit(model, params, (x_mine, y_mine), mesh=mesh, key=jax.random.key(0), ...)

    Args:
      coordinator_address: ``"host:port"`` of process 0's coordinator service.
      num_processes: number of processes in the job.
      process_id: this process's index, ``0 <= process_id < num_processes``.
      cpu_collectives: ``"gloo"``, ``"mpi"``, or None to leave JAX's setting.
      initialization_timeout: seconds to wait for all processes to join.
      coordinator_bind_address: where process 0's coordinator listens (JAX's
        default: every interface, ``"[::]:port"``); e.g. ``"127.0.0.1:1234"``
        to keep a single-machine job on loopback.

    Example:
      Without it, a script is a job of one process, and everything in
      :mod:`jnn.distributed` works on that process's devices:

      >>> import jax
      >>> jax.process_index(), jax.process_count()
      (0, 1)
    """
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(
        coordinator_address,
        num_processes,
        process_id,
        initialization_timeout=initialization_timeout,
        coordinator_bind_address=coordinator_bind_address,
    )


def make_mesh(devices: Sequence[jax.Device] | None = None, *, axis: str = DATA_AXIS) -> Mesh:
    """A one-axis mesh over ``devices`` (default: every device of every process).

    Devices are ordered by process, so process ``i``'s data is the ``i``-th
    block of the global batch.

    Args:
      devices: the devices to span; default ``jax.devices()``.
      axis: the name of the mesh's one axis.

    Returns:
      A :class:`jax.sharding.Mesh` of shape ``{axis: len(devices)}``.

    Raises:
      ValueError: if ``devices`` is empty.

    Example:
      >>> import jax, jnn
      >>> dict(jnn.distributed.make_mesh(jax.devices()[:1]).shape)
      {'data': 1}
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("make_mesh: no devices given.")
    ordered = sorted(devices, key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(ordered), (axis,))


def data_sharding(mesh: Mesh, axis: str = DATA_AXIS) -> NamedSharding:
    """Rows (the leading axis) split along ``axis``; every other axis whole.

    Args:
      mesh: the device mesh.
      axis: the mesh axis to split rows along.

    Returns:
      A ``NamedSharding`` with spec ``P(axis)``. An array placed with it must
      have a row count that the axis size divides.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> mesh = jnn.distributed.make_mesh()
      >>> sharding = jnn.distributed.data_sharding(mesh)
      >>> tuple(sharding.spec)
      ('data',)
      >>> x = jax.device_put(jnp.ones((2 * mesh.size, 3)), sharding)
      >>> x.addressable_shards[0].data.shape   # two rows per device
      (2, 3)
    """
    return NamedSharding(mesh, P(axis))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of ``mesh``.

    Args:
      mesh: the device mesh.

    Returns:
      A ``NamedSharding`` with the empty spec ``P()``.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> mesh = jnn.distributed.make_mesh()
      >>> x = jax.device_put(jnp.ones((3, 2)), jnn.distributed.replicated(mesh))
      >>> x.sharding.is_fully_replicated
      True
    """
    return NamedSharding(mesh, P())


def _fsdp_spec(shape: tuple[int, ...], size: int, axis: str) -> P:
    """Split the largest dimension that ``size`` divides; replicate if none does."""
    dims = [i for i, d in enumerate(shape) if d >= size and d % size == 0]
    if size == 1 or not dims:
        return P()
    best = max(dims, key=lambda i: shape[i])
    return P(*(axis if i == best else None for i in range(len(shape))))


def param_shardings(tree: Any, mesh: Mesh, *, axis: str = DATA_AXIS, fsdp: bool = False) -> Any:
    """A ``NamedSharding`` for every leaf of ``tree`` (params, optimizer state).

    Replicated by default. With ``fsdp=True`` each leaf is split along its
    largest dimension divisible by the axis size (leaves with none, e.g.
    scalars, stay replicated). The rule depends only on shapes, so params and
    the optimizer moments that mirror them get the same layout.

    Args:
      tree: a pytree of arrays (or of anything ``np.shape`` accepts).
      mesh: the device mesh.
      axis: the mesh axis to split along with ``fsdp=True``.
      fsdp: shard leaves instead of replicating them.

    Returns:
      A pytree of ``NamedSharding`` with the structure of ``tree``.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> mesh = jnn.distributed.make_mesh(jax.devices()[:1])
      >>> tuple(jnn.distributed.param_shardings({"w": jnp.ones((4, 2))}, mesh, fsdp=True)["w"].spec)
      ()

      On a 4-device mesh the same ``w`` would get ``P("data", None)``: rows
      split four ways.
    """
    size = mesh.shape[axis]

    def one(leaf):
        spec = _fsdp_spec(tuple(np.shape(leaf)), size, axis) if fsdp else P()
        return NamedSharding(mesh, spec)

    return jax.tree.map(one, tree)


def shard_params(tree: Params, mesh: Mesh, *, axis: str = DATA_AXIS, fsdp: bool = False) -> Params:
    """Place ``tree`` (the same full values in every process) on ``mesh``.

    Works in single- and multi-process runs; PRNG key leaves are kept typed.

    Args:
      tree: a pytree of arrays, e.g. params or optimizer state. In a
        multi-process run every process must pass the same values.
      mesh: the device mesh.
      axis: the mesh axis to split along with ``fsdp=True``.
      fsdp: shard leaves as :func:`param_shardings` does instead of replicating.

    Returns:
      ``tree`` with every leaf a global ``jax.Array`` laid out on ``mesh``.

    Example:
      >>> import jax, jax.numpy as jnp, jnn
      >>> mesh = jnn.distributed.make_mesh()
      >>> p = jnn.distributed.shard_params({"w": jnp.ones((8, 2))}, mesh)
      >>> p["w"].sharding.is_fully_replicated
      True
    """
    return jax.tree.map(_put, tree, param_shardings(tree, mesh, axis=axis, fsdp=fsdp))


def _put(leaf: Any, sharding: NamedSharding) -> jax.Array:
    if jax.process_count() == 1:
        return jax.device_put(leaf, sharding)
    if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        data = _put(jax.random.key_data(leaf), NamedSharding(sharding.mesh, P()))
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return jax.device_put(leaf, sharding)  # already global: reshard in place
    host = np.asarray(leaf)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def process_shard(x: Any, *, axis: int = 0) -> np.ndarray:
    """This process's contiguous block of a global array's rows.

    Process ``i`` of ``n`` gets rows ``[i * N // n, (i + 1) * N // n)``; the
    blocks, concatenated in process order, give back ``x``. A helper for
    scripts that can load the whole dataset; at scale each process reads its
    own files instead.

    Args:
      x: the global array (anything ``np.asarray`` accepts), the same in every
        process.
      axis: the axis whose rows are divided among processes.

    Returns:
      This process's block, as numpy. When the row count is not divisible by
      the process count, blocks differ in size by at most one row.

    Example:
      >>> import numpy as np, jnn
      >>> jnn.distributed.process_shard(np.arange(6)).tolist()  # one process: everything
      [0, 1, 2, 3, 4, 5]
    """
    x = np.asarray(x)
    i, n = jax.process_index(), jax.process_count()
    rows = x.shape[axis]
    return np.take(x, np.arange(i * rows // n, (i + 1) * rows // n), axis=axis)


def gather(tree: Any) -> Any:
    """Every leaf of ``tree`` as a full numpy array, in every process.

    A collective in multi-process runs (every process must call it). Use it to
    save a checkpoint from process 0 or to compare results.

    Args:
      tree: a pytree of arrays, e.g. the params :func:`jnn.fit` returned from a
        run with ``mesh=``.

    Returns:
      ``tree`` with every leaf a numpy array holding the full global value;
      typed PRNG keys become their raw key data.

    Example:
      >>> import jax.numpy as jnp, jnn
      >>> jnn.distributed.gather({"w": jnp.ones(2)})["w"]
      array([1., 1.], dtype=float32)
    """

    def one(leaf):
        if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            return np.asarray(leaf)
        if leaf.is_fully_replicated:
            return np.asarray(leaf.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree.map(one, tree)


# --------------------------------------------------------------------------- host-side checks

_EXCHANGES = itertools.count()  # every process makes the same exchanges in the same order


def _exchange(
    where: str, value: str, *, timeout: float | None = None, key: str | None = None
) -> list[str]:
    """Every process's ``value``, in process order (private to jnn).

    Goes through the coordination service's key-value store, not a device
    collective, so a process that never arrives (it crashed, or its stream ended
    early and it left the loop) is a ``TimeoutError`` after ``timeout`` seconds
    (default :data:`TIMEOUT`), never a hang. Every process must make the same
    exchanges in the same order; ``key`` (from :func:`_scope`, e.g. ``"7/3"``:
    group 3 of feed 7) names one made off the main thread, where the order of
    calls is not the program's. A single process gets ``[value]`` back at no cost.
    """
    if jax.process_count() == 1:
        return [value]
    from jax._src import distributed as _jax_distributed  # the coordination service client

    client = _jax_distributed.global_state.client
    if client is None:
        raise RuntimeError(f"{where}: several processes but no jax.distributed client.")
    pid = jax.process_index()
    if key is None:
        n = next(_EXCHANGES)
        key, previous = str(n), (str(n - 1) if n else None)
    else:
        scope, _, index = key.rpartition("/")
        previous = f"{scope}/{int(index) - 1}" if int(index) else None
    client.key_value_set(f"jnn/exchange/{key}/{pid}", value)
    wait_ms = int(1000 * (TIMEOUT if timeout is None else timeout))
    out = []
    for i in range(jax.process_count()):
        try:
            out.append(client.blocking_key_value_get(f"jnn/exchange/{key}/{i}", wait_ms))
        except Exception as err:  # jax raises its runtime error type on DEADLINE_EXCEEDED
            raise TimeoutError(
                f"{where}: process {i} did not reach the same point within {wait_ms / 1000:g} s "
                f"(this is process {pid}); it stopped, crashed or runs a different program. "
                "Every process must make the same calls with the same arguments."
            ) from err
    if previous is not None:  # every process has read the previous one (it set this one)
        client.key_value_delete(f"jnn/exchange/{previous}/{pid}")
    return out


def _scope() -> str:
    """A name for a series of exchanges, the same in every process (call it in the main
    thread, in program order)."""
    return f"s{next(_EXCHANGES)}" if jax.process_count() > 1 else "s"


def _barrier(where: str, name: str, *, timeout: float | None = None) -> None:
    """Wait until every process arrives (a ``TimeoutError`` after ``timeout`` seconds)."""
    _exchange(f"{where} ({name})", name, timeout=timeout)


# --------------------------------------------------------------------------- used by fit


class _Plan(NamedTuple):
    """How ``fit`` / ``evaluate`` / ``predict`` lay out one run (private to jnn).

    Hashable, so compiled epochs are cached per plan.
    """

    mesh: Mesh
    axis: str
    fsdp: bool

    @property
    def size(self) -> int:
        """Devices along the data axis."""
        return self.mesh.shape[self.axis]

    @property
    def batch_sharding(self) -> NamedSharding:
        """One batch ``(B, ...)``: rows split along the data axis."""
        return data_sharding(self.mesh, self.axis)

    def state_shardings(self, tree: Any) -> Any:
        return param_shardings(tree, self.mesh, axis=self.axis, fsdp=self.fsdp)

    def put_state(self, tree: Any) -> Any:
        return jax.tree.map(_put, tree, self.state_shardings(tree))

    def constrain_state(self, tree: Any) -> Any:
        """Inside jit: keep params / optimizer state in their layout across steps."""
        return jax.lax.with_sharding_constraint(tree, self.state_shardings(tree))

    def constrain_batches(self, *arrays: jax.Array) -> list[jax.Array]:
        """Inside jit: ``(num_batches, batch, ...)`` arrays split along the batch axis."""
        spec = NamedSharding(self.mesh, P(None, self.axis))
        return [jax.lax.with_sharding_constraint(a, spec) for a in arrays]

    def global_rows(self, where: str, local_rows: int) -> int:
        """Rows of the global dataset; every process must feed the same number."""
        if jax.process_count() == 1:
            return local_rows
        counts = multihost_utils.process_allgather(np.array([local_rows]))
        counts = np.asarray(counts).reshape(-1)
        if (counts != local_rows).any():
            raise ValueError(
                f"{where}: every process must feed the same number of examples, got "
                f"{counts.tolist()} (process order). Trim or pad the shards to equal size."
            )
        return int(counts.sum())

    def put_data(self, where: str, arrays: Sequence[np.ndarray]) -> list[jax.Array]:
        """Process-local rows -> global arrays, split along the data axis when they divide."""
        rows = arrays[0].shape[0]
        local = len(self.mesh.local_devices)
        if jax.process_count() == 1:
            sharding = data_sharding(self.mesh, self.axis) if rows % self.size == 0 else None
            sharding = sharding or replicated(self.mesh)
            return [jax.device_put(a, sharding) for a in arrays]
        if rows % local:
            raise ValueError(
                f"{where}: each process's examples ({rows}) must divide evenly among its "
                f"{local} local devices; trim or pad the shard."
            )
        sharding = data_sharding(self.mesh, self.axis)
        return [jax.make_array_from_process_local_data(sharding, a) for a in arrays]

    def to_local(self, out: Any) -> Any:
        """A globally sharded batch output -> this process's rows, as numpy."""
        if jax.process_count() == 1:
            return jax.tree.map(np.asarray, out)
        spec = data_sharding(self.mesh, self.axis)

        def one(leaf):
            leaf = jax.device_put(leaf, spec)  # a no-op when already split by rows
            local = multihost_utils.global_array_to_host_local_array(leaf, self.mesh, spec.spec)
            return np.asarray(local)

        return jax.tree.map(one, out)

    def check_stream(self, where: str, batch_size: int, signature: str) -> None:
        """A stream's batches on this mesh: every process the same shapes, and a global
        batch (this process's rows times the process count) the data axis divides."""
        seen = _exchange(where, signature)
        if len(set(seen)) > 1:
            raise ValueError(
                f"{where}: the processes' streams differ in their first batch (rows and "
                f"per-example shapes/dtypes, in process order): {seen}. Every process must "
                "yield batches of the same size and shapes."
            )
        procs, local = jax.process_count(), len(self.mesh.local_devices)
        if (batch_size * procs) % self.size or batch_size % local:
            hint = math.lcm(self.size // math.gcd(self.size, procs), local)
            raise ValueError(
                f"{where}: a stream's batch of {batch_size} rows per process ({batch_size * procs}"
                f" in all) does not split evenly over the {self.size} devices of mesh axis "
                f"{self.axis!r} ({local} in this process); yield batches of a multiple of {hint} "
                "rows per process."
            )

    def batch_size(self, where: str, batch_size: int, rows: int) -> int:
        """A global batch size the data axis divides (a batch larger than the data is cut
        down to the data, rounded up to that multiple; the extra rows are masked)."""
        if batch_size >= rows:
            return math.ceil(rows / self.size) * self.size
        if batch_size % self.size:
            raise ValueError(
                f"{where}: batch_size ({batch_size}) must be a multiple of the {self.size} "
                f"devices on mesh axis {self.axis!r}, e.g. "
                f"{max(self.size, batch_size // self.size * self.size)}."
            )
        return batch_size


def _plan(
    where: str, mesh: Mesh | str | None, param_sharding: str | None, axis: str = DATA_AXIS
) -> _Plan | None:
    """Validate ``mesh=`` / ``param_sharding=`` of fit/evaluate/predict (None: no mesh)."""
    if param_sharding not in (None, *_PARAM_SHARDINGS):
        raise ValueError(
            f"{where}: param_sharding must be None, 'replicated' or 'fsdp', got {param_sharding!r}."
        )
    if mesh is None:
        if param_sharding is not None:
            raise ValueError(f"{where}: param_sharding needs a mesh; pass mesh='auto' or a Mesh.")
        return None
    if isinstance(mesh, str):
        if mesh != "auto":
            raise ValueError(f"{where}: mesh must be a jax.sharding.Mesh or 'auto', got {mesh!r}.")
        mesh = make_mesh(axis=axis)
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"{where}: mesh must be a jax.sharding.Mesh (e.g. jnn.distributed.make_mesh()) or "
            f"'auto', got {type(mesh).__name__}."
        )
    if axis not in mesh.axis_names:
        if len(mesh.axis_names) != 1:
            raise ValueError(
                f"{where}: the mesh has axes {mesh.axis_names}; jnn splits batches along an "
                f"axis named {axis!r}. Name one axis {axis!r}."
            )
        axis = mesh.axis_names[0]
    return _Plan(mesh, axis, param_sharding == "fsdp")
