"""The ``guardstream`` command line.

Each command lives in its own module exposing ``register(app)``; the list below is the whole command set,
as plain imports. Modules keep heavy imports (torch, ray, transformers, kafka clients) inside their command
functions so that light commands such as ``render-prompt`` start fast and never import torch.
"""

from __future__ import annotations

import typer

from pipelines import infra_cmds, moderate, policy_cmds, render
from pipelines.backfill import cli as backfill
from pipelines.evaluate import cli as evaluate
from pipelines.finetune import cli as finetune
from pipelines.stream import demo, produce, topics
from pipelines.stream import run as stream

app = typer.Typer(
    name="guardstream",
    help="Streaming content moderation with Llama Guard-style models on Kafka, Ray and Redis.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

COMMANDS = (
    render,
    moderate,
    infra_cmds,
    policy_cmds,
    topics,
    produce,
    stream,
    demo,
    evaluate,
    finetune,
    backfill,
)
"""In ``guardstream --help`` order."""

for command in COMMANDS:
    command.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
