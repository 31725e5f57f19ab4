"""Error types a person can act on. User mistakes surface as one line, never a traceback."""


class GuardstreamError(Exception):
    """Base of every error guardstream raises on purpose."""


class ModelLoadError(GuardstreamError):
    """The checkpoint can't be loaded or isn't usable as a guard (e.g. safe/unsafe not single tokens)."""


class PromptFormatError(GuardstreamError):
    """No Llama Guard prompt format is configured or inferable for a checkpoint."""


class ScoringError(GuardstreamError):
    """A batch could not be scored (model error, timeout, dead replica)."""


class UnknownModelError(ScoringError):
    """A policy routes to a model pool that this deployment does not configure (``settings.models``)."""


class PolicyStoreUnavailable(GuardstreamError):
    """The policy store can't be reached and no cached policy exists for the tenant."""


class InputError(GuardstreamError):
    """Input a user gave us is malformed (bad JSON, schema violation, unreadable file)."""


class ConsumerStuckError(GuardstreamError):
    """The Kafka consumer left its partitions in a rebalance and never got an assignment back."""


class PolicyInvalid(GuardstreamError):
    """A tenant's stored policy does not validate (corrupt, or from an incompatible version) and no earlier
    valid one is cached; its events are dead-lettered as ``policy_invalid`` until the policy is fixed."""


class StreamStopped(GuardstreamError):
    """A stream worker must stop instead of going on: going on would lose a record or loop on it forever."""


class OutputUnwritable(StreamStopped):
    """A record's dead letter could not be produced either; the worker stops rather than lose the record."""


class UndecodableBatchError(StreamStopped):
    """A record batch cannot be decoded and ``GUARDSTREAM_UNDECODABLE_BATCH=stop`` says not to skip it."""
