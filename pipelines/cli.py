"""The ``guardstream`` command line.

Each command lives in its own module exposing ``register(app)``. Modules keep heavy imports (torch, ray,
transformers, kafka) inside their command functions so that light commands such as ``render-prompt`` start
fast and never import torch.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="guardstream",
    help="Streaming content moderation with Llama Guard-style models on Kafka, Ray and Redis.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

COMMAND_MODULES: tuple[str, ...] = (
    "pipelines.render",
    "pipelines.moderate",
    "pipelines.infra_cmds",
    "pipelines.policy_cmds",
    "pipelines.stream.topics",
    "pipelines.stream.produce",
    "pipelines.stream.run",
    "pipelines.stream.demo",
    "pipelines.evaluate.cli",
    "pipelines.finetune.cli",
    "pipelines.backfill.cli",
)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


def main() -> None:
    _register_all()
    app()


if __name__ == "__main__":
    main()
