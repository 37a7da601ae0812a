"""The one exception hierarchy of agentflow.

    AgentflowError
    ├── ToolError                 a tool failed after its retries (raised inside the agent)
    │   └── ToolArgumentError     a tool was called with arguments its schema refuses
    ├── PolicyDenied              a policy rule refused a tool
    ├── BudgetExceeded            a budget has no room left
    ├── AlreadyDecided            an approval was already decided
    ├── NonDeterminismError       agent code no longer matches a run's recorded history
    ├── UnknownAgent              no agent is registered under a name (or version)
    ├── UnknownTool               no tool is registered under a name
    ├── UnknownModel              no model alias is configured under a name (AGENTFLOW["LLM"])
    ├── ModelError                a model call failed (raised by a provider)
    │   ├── ModelUnavailable      rate limited, overloaded, timed out or cut off: retried
    │   └── ModelRefused          the server refused the request (400, 401, 404): not retried
    ├── InvalidInput              a run's input does not fit its agent's signature
    │   ├── RunNotFound           no run has that id (also an InvalidState)
    │   └── ApprovalNotFound      no approval has that id
    ├── InvalidState              an operation does not apply to the run in its current status
    │   └── RunNotFound
    ├── PayloadError              a value cannot be stored (not JSON, too large or too deep)
    ├── ToolDefinitionError       a @tool option is invalid (also a ValueError)
    └── RedactionUnavailable      a redaction pattern cannot be compiled: nothing is stored

The runtime's own control flow (``Suspend``, ``LeaseLost``) lives in
``agentflow._engine.interrupts`` and derives from ``BaseException``, so user code that
catches ``Exception`` cannot swallow it.
"""

from __future__ import annotations


class AgentflowError(Exception):
    """Root of every error agentflow raises on purpose."""


class ToolError(AgentflowError):
    """A tool call failed; raised inside the agent at the call's position."""

    def __init__(
        self,
        message: str,
        *,
        tool: str = "",
        error_type: str = "",
        attempts: int = 0,
    ) -> None:
        super().__init__(message)
        self.tool = tool
        self.error_type = error_type
        self.attempts = attempts


class ToolArgumentError(ToolError):
    """A tool call's arguments failed validation; the tool did not run."""


class PolicyDenied(AgentflowError):
    """A policy rule refused the tool."""


class BudgetExceeded(AgentflowError):
    """A budget has no room for the next step.

    ``hit`` (an ``agentflow._guardrails.limit_hit.LimitHit``) names the budget and dimension as
    data, for the pause it causes.
    """

    def __init__(self, message: str, *, hit: object = None) -> None:
        super().__init__(message)
        self.hit = hit


class AlreadyDecided(AgentflowError):
    """The approval already has a decision."""


class NonDeterminismError(AgentflowError):
    """The agent's code took a different path than the run's recorded history."""


class UnknownAgent(AgentflowError):
    """No agent is registered under that name or version."""


class UnknownTool(AgentflowError):
    """No tool is registered under that name."""


class UnknownModel(AgentflowError):
    """No model alias of ``AGENTFLOW["LLM"]`` has that name."""


class ModelError(AgentflowError):
    """A model provider could not answer; ``status`` is the HTTP status, if there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ModelUnavailable(ModelError):
    """A passing failure (429, 5xx, 529, a timeout, a cut stream): the call is retried.

    ``retry_after`` is the server's ``Retry-After`` in seconds: no retry comes sooner.
    """

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class ModelRefused(ModelError):
    """The server refused the request itself (400, 401, 404): retrying cannot help."""


class InvalidInput(AgentflowError):
    """A run's input does not match the agent's parameters."""


class InvalidState(AgentflowError):
    """The run's status does not allow the operation."""


class RunNotFound(InvalidInput, InvalidState):
    """No run has that id.

    It derives from both errors that "not found" used to raise, so callers that catch
    either keep working.
    """


class ApprovalNotFound(InvalidInput):
    """No approval has that id."""


class PayloadError(AgentflowError):
    """A value cannot be stored: not JSON, too large, too deep, or holding NUL or a surrogate."""


class ToolDefinitionError(AgentflowError, ValueError):
    """A ``@tool`` option is invalid; raised when the tool is declared.

    It is a ``ValueError`` too, what bad tool options raised before it existed.
    """


class RedactionUnavailable(AgentflowError):
    """A redaction pattern cannot be compiled, so nothing can be made safe to store or publish.

    The engine treats it like a database outage: the run is retried later and nothing is
    failed or written. The system check and the Policy form refuse such patterns first.
    """
