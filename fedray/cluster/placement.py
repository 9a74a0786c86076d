"""Where a run's actors go: the server next to the driver, the server's workers in a placement group.

Client actors are pinned by their own resources (`clients.resources`,
`clients.pinned`: GPUs, custom resources, label selectors); a pool reserves them as
one gang (`fedray.cluster.gang`), so runs sharing a cluster never deadlock on them.
The server's foundation-model workers must come up together, so their bundles are
reserved as one placement group with the configured strategy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedray.cluster.errors import ClusterError
from fedray.config.schema import FoundationConfig

if TYPE_CHECKING:
    from ray.util.placement_group import PlacementGroup


def server_options() -> dict:
    """Prefer the driver's node for the server actor, so that a local run directory is
    written on the machine that started the run (soft: elsewhere if it cannot fit)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node_id = ray.get_runtime_context().get_node_id()
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=True)}


def reserve_worker_group(workers: FoundationConfig, name: str) -> "PlacementGroup":
    """Reserve one bundle per worker and wait until every bundle is placed."""
    import ray
    from ray.exceptions import GetTimeoutError
    from ray.util.placement_group import placement_group, remove_placement_group

    bundle = workers.resources.as_bundle()
    options: dict = {}
    if workers.resources.label_selector:
        options["bundle_label_selector"] = [dict(workers.resources.label_selector)] * workers.num_workers
    group = placement_group(
        [dict(bundle) for _ in range(workers.num_workers)],
        strategy=workers.placement_strategy.value,
        name=name,
        **options,
    )
    try:
        ray.get(group.ready(), timeout=workers.ready_timeout_s)
    except GetTimeoutError:
        remove_placement_group(group)
        raise ClusterError(
            f"server.foundation_model: {workers.num_workers} x {bundle} ({workers.placement_strategy.value}) not free "
            f"after {workers.ready_timeout_s:g} s; the cluster has them, but other work holds them"
        ) from None
    return group


def bundle_nodes(group: "PlacementGroup") -> list[str]:
    """The node id of each bundle, in bundle order."""
    from ray.util.placement_group import placement_group_table

    table = placement_group_table(group)["bundles_to_node_id"]
    return [table[i] for i in range(len(table))]


def release(group: "PlacementGroup | None") -> None:
    """Give the group's resources back (at the end of a run)."""
    if group is not None:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(group)
