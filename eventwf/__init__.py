"""eventwf: durable workflows and live agents for trio, on one append-only event log."""

from eventwf.agent import Agent as Agent
from eventwf.agent import callable as callable
from eventwf.apps.serving import serve as serve
from eventwf.client import AgentConnection as AgentConnection
from eventwf.client import connect_agent as connect_agent
from eventwf.engine import Engine as Engine
from eventwf.engine import EngineStatistics as EngineStatistics
from eventwf.engine import ReplayCheck as ReplayCheck
from eventwf.engine import check_replay as check_replay
from eventwf.engine import open_engine as open_engine
from eventwf.errors import AgentUnavailableError as AgentUnavailableError
from eventwf.errors import CorruptLogError as CorruptLogError
from eventwf.errors import DuplicateWorkflowError as DuplicateWorkflowError
from eventwf.errors import EventwfError as EventwfError
from eventwf.errors import LogLockedError as LogLockedError
from eventwf.errors import MailboxFullError as MailboxFullError
from eventwf.errors import NonDeterminismError as NonDeterminismError
from eventwf.errors import NonRetryableError as NonRetryableError
from eventwf.errors import PayloadTooLargeError as PayloadTooLargeError
from eventwf.errors import RpcError as RpcError
from eventwf.errors import SchemaVersionError as SchemaVersionError
from eventwf.errors import StepFailedError as StepFailedError
from eventwf.errors import StorageError as StorageError
from eventwf.errors import TransitionError as TransitionError
from eventwf.errors import UnknownWorkflowError as UnknownWorkflowError
from eventwf.errors import WorkflowNotFoundError as WorkflowNotFoundError
from eventwf.errors import WorkflowRejectedError as WorkflowRejectedError
from eventwf.errors import WorkflowTimeoutError as WorkflowTimeoutError
from eventwf.model.types import InstanceStatus as InstanceStatus
from eventwf.model.types import ReceivedEvent as ReceivedEvent
from eventwf.model.types import Retries as Retries
from eventwf.model.types import WorkflowEvent as WorkflowEvent
from eventwf.model.types import WorkflowInfo as WorkflowInfo
from eventwf.model.types import WorkflowPage as WorkflowPage
from eventwf.runtime.stephost import StepContext as StepContext
from eventwf.runtime.stephost import step_context as step_context
from eventwf.runtime.steps import AgentWorkflowStep as AgentWorkflowStep
from eventwf.server.connection import Connection as Connection
from eventwf.server.handshake import AgentRequest as AgentRequest
from eventwf.workflow import AgentWorkflow as AgentWorkflow

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentConnection",
    "AgentRequest",
    "AgentUnavailableError",
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
    "MailboxFullError",
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
