"""``guardstream policy set|get|list|delete``: manage tenant policies in Redis.

``set`` validates the file as a ``TenantPolicy`` before anything reaches Redis, so a typo can never
half-apply; the store assigns the next version and notifies running stream workers (they apply it within
~2 s). Output on stdout is the stored JSON so it can be piped; errors are one line on stderr, exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipelines.errors import user_errors
from schemas.policy import TenantPolicy
from workers.errors import InputError
from workers.intake.tenancy import route_problem
from workers.settings import get_settings

if TYPE_CHECKING:
    from workers.policies.redis_store import RedisPolicyStore

policy_app = typer.Typer(
    name="policy",
    help="Manage tenant policies in Redis (taxonomy, thresholds, route, fail mode).",
    no_args_is_help=True,
)

TenantArg = Annotated[str, typer.Argument(help="Tenant id, e.g. acme.")]


def _store() -> RedisPolicyStore:
    from workers.policies.redis_store import RedisPolicyStore

    return RedisPolicyStore(get_settings())


def load_policy_file(tenant_id: str, path: Path) -> TenantPolicy:
    """Read a policy file for ``tenant_id``; its ``tenant_id`` must match or be absent (then filled in).

    ``version`` and ``updated_at`` in the file are ignored: the store assigns them.
    """
    from workers.policies.file_store import policies_in, read_policy_file

    data = read_policy_file(path)
    if not isinstance(data, dict) or "policies" in data:
        got = "a list of policies" if isinstance(data, dict) else type(data).__name__
        raise InputError(f"policy file {path}: expected one TenantPolicy object, got {got}")
    named = data.setdefault("tenant_id", tenant_id)
    if named != tenant_id:
        raise InputError(f"policy file {path} is for tenant {named!r}, not {tenant_id!r}")
    data.pop("version", None)
    data.pop("updated_at", None)
    (policy,) = policies_in(data, path)
    return policy


def _print(policy: TenantPolicy) -> None:
    typer.echo(policy.model_dump_json(indent=2, exclude_none=False))


@policy_app.command("set")
def set_policy(
    tenant_id: TenantArg,
    file: Annotated[Path, typer.Argument(help="Policy JSON (one TenantPolicy object).")],
) -> None:
    """Validate FILE and store it as TENANT's policy under the next version."""
    with user_errors():
        policy = load_policy_file(tenant_id, file)
        with _store() as store:
            problem = route_problem(policy, get_settings(), store.list())
            if problem is not None:
                raise InputError(f"policy for tenant {tenant_id!r} refused: {problem}")
            _print(store.put(policy))


@policy_app.command("get")
def get_policy(tenant_id: TenantArg) -> None:
    """Print TENANT's stored policy; exit 1 if it has none."""
    with user_errors(), _store() as store:
        policy = store.get(tenant_id)
    if policy is None:
        typer.echo(f"error: no policy for tenant {tenant_id!r}", err=True)
        raise typer.Exit(code=1)
    _print(policy)


@policy_app.command("list")
def list_policies(
    as_json: Annotated[bool, typer.Option("--json", help="One policy JSON per line.")] = False,
) -> None:
    """List stored policies: tenant, version, taxonomy, threshold, route, fail mode."""
    with user_errors(), _store() as store:
        policies = store.list()
    if as_json:
        for policy in policies:
            typer.echo(policy.model_dump_json())
        return
    _print_table(policies)


@policy_app.command("delete")
def delete_policy(tenant_id: TenantArg) -> None:
    """Delete TENANT's policy (workers then apply the unknown-tenant setting); exit 1 if it had none."""
    with user_errors(), _store() as store:
        existed = store.delete(tenant_id)
    if not existed:
        typer.echo(f"error: no policy for tenant {tenant_id!r}", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"deleted policy for tenant {tenant_id}")


def _print_table(policies: list[TenantPolicy]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("tenant", "version", "taxonomy", "sides", "threshold", "model", "on_error", "updated_at")
    for p in policies:
        taxonomy = p.taxonomy.generation.value if p.taxonomy.generation else "custom"
        table.add_row(
            p.tenant_id,
            str(p.version),
            f"{taxonomy} ({len(p.taxonomy.resolve())} categories)",
            ",".join(p.sides),
            f"{p.threshold:g}",
            p.route.model,
            p.on_error,
            p.updated_at.isoformat(timespec="seconds") if p.updated_at else "",
        )
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")
