import pyarrow as pa
import ray.data
from ray.data.block import BlockAccessor

from operators.base import Operator, Resources
from ray_jobs.adapter import map_batches_kwargs, resolve_resources, run_operator
from ray_jobs.config import StageOverride


class Stateless(Operator):
    name = "stateless"


class OnGpu(Operator):
    name = "on_gpu"
    stateful = True

    def default_resources(self):
        return Resources(num_gpus=1, concurrency=(1, 4), batch_size=32)


def test_stateless_operator_runs_as_task_pool():
    op = Stateless()
    kwargs = map_batches_kwargs(op, op.resources)
    assert kwargs["fn_kwargs"] == {"op": op, "batch_size": op.resources.batch_size}
    assert kwargs["batch_size"] is None  # the task chunks its block itself (run_in_chunks)
    assert "num_gpus" not in kwargs
    assert kwargs["batch_format"] == "numpy"


def test_gpu_operator_runs_as_actor_pool_with_its_range():
    op = OnGpu()
    kwargs = map_batches_kwargs(op, op.resources)
    assert isinstance(kwargs["compute"], ray.data.ActorPoolStrategy)
    assert (kwargs["compute"].min_size, kwargs["compute"].max_size) == (1, 4)
    assert kwargs["num_gpus"] == 1
    assert kwargs["batch_size"] == 32
    assert kwargs["fn_constructor_kwargs"] == {"op": op}


def test_config_overrides_declared_resources():
    res = resolve_resources(OnGpu(), StageOverride(num_gpus=0, batch_size=2, concurrency=(2, 2)))
    assert (res.num_gpus, res.batch_size, res.concurrency) == (0, 2, (2, 2))
    kwargs = map_batches_kwargs(OnGpu(), res)
    assert "num_gpus" not in kwargs
    assert kwargs["compute"].max_size == 2


def test_run_operator_records_stage_time_per_row():
    class Echo(Operator):
        name = "echo"

        def __call__(self, batch):
            return batch

    out = run_operator(Echo(), {"video_id": ["a", "b"], "reject_reason": [None, None]})
    assert list(out) == ["video_id", "reject_reason", "_t_echo"]
    assert all(t >= 0 for t in out["_t_echo"])


def test_a_column_null_in_a_whole_block_stays_concatenable_with_real_values():
    """A block whose rows were all rejected before sampling has ``frame_timestamps`` of Arrow
    type null; Ray gives it to the next numpy stage as float32 NaN. The stage's output must
    still concatenate with a block holding real timestamps (the writer gathers both)."""
    class Echo(Operator):
        name = "echo"

        def __call__(self, batch):
            return batch

    rejected = pa.table({"video_id": ["a", "b"], "frame_timestamps": pa.nulls(2),
                         "reject_reason": ["too_long", "too_long"]})
    batch = BlockAccessor.for_block(rejected).to_batch_format("numpy")
    assert batch["frame_timestamps"].dtype == "float32"  # how Ray hands it over
    out = BlockAccessor.batch_to_block(run_operator(Echo(), batch)).select(
        ["video_id", "frame_timestamps", "reject_reason"])
    sampled = pa.table({"video_id": ["c"], "frame_timestamps": [[0.0, 0.5]],
                        "reject_reason": pa.array([None], pa.string())})
    merged = pa.concat_tables([out, sampled], promote_options="default")
    assert merged.column("frame_timestamps").to_pylist() == [None, None, [0.0, 0.5]]


def test_operator_declaring_concurrent_batches_overlaps_them_in_each_actor():
    class Overlapping(OnGpu):
        name = "overlapping"
        max_concurrent_batches = 3

    compute = map_batches_kwargs(Overlapping(), Overlapping().resources)["compute"]
    assert compute.max_concurrent_calls_per_actor == 3 and compute.enable_true_multi_threading
    plain = map_batches_kwargs(OnGpu(), OnGpu().resources)["compute"]
    assert plain.max_concurrent_calls_per_actor is None and not plain.enable_true_multi_threading
