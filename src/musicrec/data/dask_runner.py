"""The preprocess Beam job on Dask: Beam's ``DaskRunner`` translations, driven so that tf.Transform runs.

Beam 2.77's ``apache_beam.runners.dask`` driver runs simple pipelines only. On the preprocess job:

- ``beam.io.Read`` is replaced by a ``_Read`` that has no translation, so every source yields no bag
  (``AttributeError: 'NoneType' object has no attribute 'map'``): :func:`read_parquet` reads from a
  ``beam.Create`` of row groups instead.
- A ``ParDo``'s side inputs reach the DoFn as their ``AsSingleton`` markers (``TypeError: Expected binary or
  unicode string, got AsSingleton(...)`` in tf.Transform).
- A multi-output ``ParDo`` (``with_outputs``; the hot-key fan-out of ``CombinePerKey``, which tf.Transform's
  vocabularies use) hands every output to every consumer: ``ValueError: too many values to unpack``.
- Only the last transform's bag is computed, so of several sinks all but one are silently dropped; outputs of
  ``finish_bundle`` are dropped too.
- Each side input is recomputed inside every task that reads it, so a sink's writes run more than once.

:class:`DaskRunner` keeps Beam's translations and fixes those: side inputs are filled in, outputs keep their tag
and each consumer takes its own, side inputs are computed once and kept on the cluster before the tasks that
read them, and every sink is computed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult, PipelineRunner, PipelineState

from musicrec.errors import PreprocessError

logger = logging.getLogger(__name__)

RUNNER_NAMES = ("DaskRunner", "apache_beam.runners.dask.dask_runner.DaskRunner")


def is_dask(runner: str) -> bool:
    """Whether ``runner`` names Beam's Dask runner (short or full name)."""
    return runner in RUNNER_NAMES


class LocalDaskOptions(PipelineOptions):
    """The one Dask option Beam lacks: how many worker processes a cluster started here gets."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        parser.add_argument(
            "--dask_local_workers",
            type=int,
            default=None,
            help="worker processes of the dask.distributed LocalCluster started when no --dask_client_address "
            "or --dask_scheduler_file is given (default: one per usable CPU)",
        )


@contextlib.contextmanager
def dask_cluster(options: Sequence[str], default_workers: int) -> Iterator[list[str]]:
    """Yield the Beam flags of a Dask run, starting a ``LocalCluster`` when they name no scheduler.

    ``options`` are kept, plus one partition per row group unless they set the partitioning. Without
    ``--dask_client_address`` or ``--dask_scheduler_file``, a cluster of ``--dask_local_workers`` processes
    (default ``default_workers``), one thread each, is started here, its address added, and it is closed on the
    way out, whatever happened.
    """
    from apache_beam.runners.dask.dask_runner import DaskOptions

    flags = list(options)
    dask_options = PipelineOptions(flags).view_as(DaskOptions).get_all_options(drop_default=True)
    if not dask_options.get("npartitions") and not dask_options.get("partition_size"):
        # A partition per created element: the job's sources are Creates of Parquet row groups, and Beam's
        # default of 128 a partition would read every split's row groups in one task.
        flags.append("--dask_partition_size=1")
    if dask_options.get("address") or dask_options.get("scheduler_file"):
        yield flags
        return
    workers = PipelineOptions(flags).view_as(LocalDaskOptions).dask_local_workers
    workers = default_workers if workers is None else workers
    if workers < 1:
        raise PreprocessError(f"--dask_local_workers must be at least 1, got {workers}")
    from dask.distributed import LocalCluster

    # One thread a process: TensorFlow and the NLTK normalizer hold the GIL for most of their work.
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        logger.info(
            "preprocess: Dask LocalCluster with %d worker processes at %s", workers, cluster.scheduler_address
        )
        yield [*flags, f"--dask_client_address={cluster.scheduler_address}"]


def _read_row_group(piece: tuple[str, int], columns: Sequence[str]) -> Iterator[pa.Table]:
    import pyarrow.parquet as pq

    path, row_group = piece
    yield pq.ParquetFile(path).read_row_group(row_group, columns=list(columns))


def read_parquet(pipeline: beam.Pipeline, label: str, files: Sequence[Path], columns: Sequence[str]) -> Any:
    """One table per Parquet row group of ``files``: the DaskRunner's source, since it cannot run ``Read``."""
    import pyarrow.parquet as pq

    pieces = [
        (str(path), group) for path in files for group in range(pq.ParquetFile(path).metadata.num_row_groups)
    ]
    return (
        pipeline
        | f"{label} row groups" >> beam.Create(pieces)
        | f"{label} tables" >> beam.FlatMap(_read_row_group, columns)
    )


def _run_dofn(items: Any, signature: Any, window_fn: Any, invoker_kwargs: dict[str, Any]) -> list[Any]:
    """Beam's ``apply_dofn_to_bundle``, but outputs keep their tag and ``finish_bundle``'s are not lost."""
    from apache_beam import TaggedOutput
    from apache_beam.runners.common import DoFnInvoker, _OutputHandler
    from apache_beam.runners.dask.transform_evaluator import OneReceiver

    receivers = OneReceiver()  # a fresh one a bundle: tasks in one worker may share their arguments
    handler = _OutputHandler(
        window_fn=window_fn,
        main_receivers=receivers[None],
        tagged_receivers=receivers,
        per_element_output_counter=None,
        output_batch_converter=None,
        process_yields_batches=False,
        process_batch_yields_elements=False,
    )
    invoker = DoFnInvoker.create_invoker(signature, handler, **invoker_kwargs)
    invoker.invoke_setup()
    invoker.invoke_start_bundle()
    for item in items:
        invoker.invoke_process(item)
    invoker.invoke_finish_bundle()
    invoker.invoke_teardown()
    # A tagged receiver holds TaggedOutput(tag, windowed value), the main one the windowed value.
    return [
        TaggedOutput(out.tag, out.value.value) if isinstance(out, TaggedOutput) else out.value
        for out in receivers.values
    ]


def _tagged(bag: Any, tag: str | None) -> Any:
    from apache_beam import TaggedOutput

    if tag is None:
        return bag.filter(lambda item: not isinstance(item, TaggedOutput))
    return bag.filter(lambda item: isinstance(item, TaggedOutput) and item.tag == tag).map(lambda item: item.value)


class _Done(PipelineResult):
    def __init__(self) -> None:
        super().__init__(PipelineState.DONE)

    def wait_until_finish(self, duration: Any = None) -> str:
        return self._state

    def metrics(self) -> Any:
        raise NotImplementedError("the Dask runner collects no Beam metrics")


class DaskRunner(PipelineRunner):
    """Beam's DaskRunner translations, run so that a tf.Transform job works (see the module docstring).

    ``run_pipeline`` returns when the job is done: the client it opens is closed before it returns.
    """

    def run_pipeline(self, pipeline: beam.Pipeline, options: PipelineOptions) -> PipelineResult:
        """Translate ``pipeline`` to Dask bags, compute every side input once, then every sink together."""
        import dask.distributed as ddist
        from apache_beam.runners.dask.dask_runner import DaskOptions
        from apache_beam.runners.dask.overrides import dask_overrides

        dask_options = options.view_as(DaskOptions).get_all_options(drop_default=True, current_only=True)
        bag_kwargs = DaskOptions._extract_bag_kwargs(dask_options)
        pipeline.replace_all(dask_overrides())
        try:
            client = ddist.Client(**dask_options)
        except OSError as error:  # distributed's connection timeout is an OSError too
            where = dask_options.get("address") or dask_options.get("scheduler_file")
            reason = str(error).splitlines()[0]
            raise PreprocessError(f"cannot reach the Dask scheduler at {where}: {reason}") from None
        with client:
            visitor = _BagVisitor(client, bag_kwargs)
            pipeline.visit(visitor)
            sinks = [bag for node, bag in visitor.bags.items() if node not in visitor.consumed and bag is not None]
            client.gather(client.compute(sinks))
        return _Done()


class _BagVisitor(beam.pipeline.PipelineVisitor):
    def __init__(self, client: Any, bag_kwargs: dict[str, Any]) -> None:
        self.client = client
        self.bag_kwargs = bag_kwargs
        self.bags: dict[Any, Any] = {}
        self.consumed: set[Any] = set()
        self.persisted: set[Any] = set()

    def _input(self, pcoll: Any) -> Any:
        producer = pcoll.producer
        self.consumed.add(producer)
        bag = self.bags[producer]
        if isinstance(producer.transform, beam.ParDo) and len(producer.outputs) > 1:
            return _tagged(bag, pcoll.tag)
        return bag

    def visit_transform(self, transform_node: Any) -> None:
        """Translate one leaf transform into a bag over its inputs' bags."""
        from apache_beam import pvalue
        from apache_beam.runners.dask import transform_evaluator as evaluator
        from apache_beam.transforms.sideinputs import SideInputMap

        op_class = evaluator.TRANSLATIONS.get(type(transform_node.transform), evaluator.NoOp)
        op = op_class(transform_node, bag_kwargs=self.bag_kwargs)
        inputs = [
            None if isinstance(value, pvalue.PBegin) else self._input(value) for value in transform_node.inputs
        ]
        kwargs: dict[str, Any] = {"input_bag": None, "side_inputs": None}
        if inputs:
            kwargs["input_bag"] = inputs[0] if len(inputs) == 1 and op_class is not evaluator.Flatten else inputs
        if transform_node.side_inputs:
            kwargs["side_inputs"] = [
                SideInputMap(type(side), side._view_options(), self._materialized(side))
                for side in transform_node.side_inputs
            ]
        if op_class is evaluator.ParDo:
            self.bags[transform_node] = self._par_do(op, **kwargs)
        else:
            self.bags[transform_node] = op.apply(**kwargs)

    def _materialized(self, side: Any) -> list[Any]:
        from apache_beam.runners.dask.transform_evaluator import get_windowed_value

        # Computed now and kept on the workers: Beam's iterator recomputes the whole upstream inside every task
        # that reads it, and a sink's writes run again each time (WriteToTFRecord reads its write results twice,
        # and each run leaves its own temporary files).
        producer = side.pvalue.producer
        if producer not in self.persisted:
            self.bags[producer] = self.client.persist(self.bags[producer])
            self.persisted.add(producer)
        values = self.client.compute(self._input(side.pvalue)).result()
        return [get_windowed_value(value, side._window_mapping_fn) for value in values]

    def _par_do(self, op: Any, input_bag: Any, side_inputs: Any) -> Any:
        from apache_beam import DoFn
        from apache_beam.runners.common import DoFnContext, DoFnSignature
        from apache_beam.runners.dask.transform_evaluator import get_windowed_value

        transform = op.transform
        # Not raw_side_inputs, as Beam's translation passes: those hold the AsSingleton markers themselves, where
        # the invoker wants the placeholders it fills with side input values.
        args, kwargs = transform.args, transform.kwargs
        main_input = next(iter(op.applied.main_inputs.values()))
        window_fn = main_input.windowing.windowfn if hasattr(main_input, "windowing") else None
        invoker_kwargs = {
            "context": DoFnContext(transform.label, state=None),
            "side_inputs": side_inputs,
            "input_args": list(args),
            "input_kwargs": kwargs,
            "user_state_context": None,
            "bundle_finalizer_param": DoFn.BundleFinalizerParam(),
        }
        return input_bag.map(get_windowed_value, window_fn).map_partitions(
            _run_dofn, DoFnSignature(transform.fn), window_fn, invoker_kwargs
        )
