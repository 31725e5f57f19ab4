"""Defusing the prompt formats' own markers inside conversation content, so content can't forge structure.

A Llama Guard prompt is plain text with a few structural markers. Content that contains them could close
the conversation early, append fake instructions or a fake assessment, or open a fake turn. Each marker
found in content has its ASCII brackets or colon swapped for a look-alike character that a person reads
the same but that the model never saw as structure:

- ``<BEGIN CONVERSATION>``, ``<END CONVERSATION>``, ``<BEGIN|END UNSAFE CONTENT CATEGORIES>`` (any case,
  any spacing) → ``‹END CONVERSATION›`` etc. (U+2039 / U+203A);
- ``[INST]`` / ``[/INST]`` → ``‹INST›`` / ``‹/INST›``;
- special-token spellings ``<|name|>``, ``<s>``, ``</s>`` → ``‹|name|›``, ``‹s›``, ``‹/s›`` (the token ids
  are safe anyway, ``GuardTokens.encode_rendered`` never parses specials in content; this also keeps the
  *text* free of them for any tool that re-tokenizes it naively);
- a line starting with a role label (``User:``, ``Agent:``, ``Assistant:``, ``System:``, any case) gets
  ``∶`` (U+2236) for its colon, so it can't open a fake turn.

Everything else, ``<b>tags</b>``, ``{{ }}``, ``$x``, ``Note: ...`` lines, passes unchanged, and so does
every ordinary golden vector. ``neutralise`` is idempotent.
"""

from __future__ import annotations

import re

_MARKERS = re.compile(
    r"<(\s*/?\s*(?:BEGIN|END)\s+(?:UNSAFE\s+CONTENT\s+CATEGORIES|CONVERSATION)\s*)>"
    r"|\[(\s*/?\s*INST\s*)\]"
    r"|<(\|[^<>|\s]{1,64}\||/?s)>",
    re.IGNORECASE,
)
_ROLE_LINE = re.compile(r"^(\s*(?:User|Agent|Assistant|System)\s*):", re.IGNORECASE | re.MULTILINE)


def neutralise(content: str) -> str:
    """``content`` with the prompt formats' structural markers defused (module docstring); idempotent."""
    content = _MARKERS.sub(lambda m: "‹" + next(g for g in m.groups() if g is not None) + "›", content)
    return _ROLE_LINE.sub(lambda m: m.group(1) + "\u2236", content)
