"""The wire contract: pydantic models for everything that crosses a process or topic boundary.

Imports nothing else of guardstream. ``python -m schemas.export DIR`` writes JSON Schema files.
"""

from schemas.events import ConversationEvent, Message, Role, Side
from schemas.policy import OnError, Route, TenantPolicy
from schemas.taxonomy import BuiltinTaxonomy, Category, Generation, Taxonomy, builtin_taxonomy
from schemas.verdicts import CategoryVerdict, DeadLetter, DeadLetterCode, Verdict

__all__ = [
    "BuiltinTaxonomy",
    "Category",
    "CategoryVerdict",
    "ConversationEvent",
    "DeadLetter",
    "DeadLetterCode",
    "Generation",
    "Message",
    "OnError",
    "Role",
    "Route",
    "Side",
    "Taxonomy",
    "TenantPolicy",
    "Verdict",
    "builtin_taxonomy",
]
