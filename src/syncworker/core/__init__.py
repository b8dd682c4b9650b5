"""The runtime: records, the connector contracts, the pipeline loop, schedules, the engine."""

from syncworker.core.pipeline import Pipeline, PipelineSettings
from syncworker.core.policies import BreakerPolicy, RetryPolicy
from syncworker.core.protocols import Processor, Sink, Source, WriteResult
from syncworker.core.record import Batch, Record
from syncworker.core.schedule import Schedule

__all__ = [
    "Batch",
    "BreakerPolicy",
    "Pipeline",
    "PipelineSettings",
    "Processor",
    "Record",
    "RetryPolicy",
    "Schedule",
    "Sink",
    "Source",
    "WriteResult",
]
