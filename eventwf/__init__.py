"""eventwf: durable workflows and live agents for trio, on one append-only event log."""

from ._step import AgentWorkflowStep as AgentWorkflowStep
from ._stephost import StepContext as StepContext
from ._stephost import step_context as step_context
from ._types import InstanceStatus as InstanceStatus
from ._types import ReceivedEvent as ReceivedEvent
from ._types import Retries as Retries
from ._types import WorkflowEvent as WorkflowEvent
from ._types import WorkflowInfo as WorkflowInfo
from ._types import WorkflowPage as WorkflowPage
from .agent import Agent as Agent
from .agent import callable as callable
from .client import AgentConnection as AgentConnection
from .client import connect_agent as connect_agent
from .engine import Engine as Engine
from .engine import EngineStatistics as EngineStatistics
from .engine import ReplayCheck as ReplayCheck
from .engine import check_replay as check_replay
from .engine import open_engine as open_engine
from .errors import CorruptLogError as CorruptLogError
from .errors import DuplicateWorkflowError as DuplicateWorkflowError
from .errors import EventwfError as EventwfError
from .errors import LogLockedError as LogLockedError
from .errors import NonDeterminismError as NonDeterminismError
from .errors import NonRetryableError as NonRetryableError
from .errors import PayloadTooLargeError as PayloadTooLargeError
from .errors import RpcError as RpcError
from .errors import SchemaVersionError as SchemaVersionError
from .errors import StepFailedError as StepFailedError
from .errors import StorageError as StorageError
from .errors import TransitionError as TransitionError
from .errors import UnknownWorkflowError as UnknownWorkflowError
from .errors import WorkflowNotFoundError as WorkflowNotFoundError
from .errors import WorkflowRejectedError as WorkflowRejectedError
from .errors import WorkflowTimeoutError as WorkflowTimeoutError
from .server import Connection as Connection
from .server import serve as serve
from .workflow import AgentWorkflow as AgentWorkflow

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentConnection",
    "AgentWorkflow",
    "AgentWorkflowStep",
    "Connection",
    "CorruptLogError",
    "DuplicateWorkflowError",
    "Engine",
    "EngineStatistics",
    "EventwfError",
    "InstanceStatus",
    "LogLockedError",
    "NonDeterminismError",
    "NonRetryableError",
    "PayloadTooLargeError",
    "ReceivedEvent",
    "ReplayCheck",
    "Retries",
    "RpcError",
    "SchemaVersionError",
    "StepContext",
    "StepFailedError",
    "StorageError",
    "TransitionError",
    "UnknownWorkflowError",
    "WorkflowEvent",
    "WorkflowInfo",
    "WorkflowNotFoundError",
    "WorkflowPage",
    "WorkflowRejectedError",
    "WorkflowTimeoutError",
    "callable",
    "check_replay",
    "connect_agent",
    "open_engine",
    "serve",
    "step_context",
]
