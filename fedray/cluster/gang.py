"""All-or-nothing placement of a pool's client actors.

Actors created one by one take resources as each is placed. Two runs on one
cluster that each need all of a scarce resource (silo A's two `silo_a` slots, a
node's GPUs) can then each take part of it and wait for the rest forever: a
deadlock that only shows when jobs start together. A `Gang` reserves one Ray
placement group with a bundle per actor; Ray places a group whole or not at all,
so one run gets every bundle and the other waits until they are free.

Each bundle is the actor's own request (`ResourcesConfig.as_bundle`), its label
selector moved onto the bundle; the group's strategy is PACK, which like Ray's
default actor scheduling prefers filling nodes but places elsewhere when it must.
An actor that asks for no resources at all cannot hold anything up and has no
bundle (Ray refuses empty ones); it is scheduled as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from ray.util.placement_group import PlacementGroup

    from fedray.config.resources import ResourcesConfig


class Gang:
    """One placement group for a set of actors, given each one's resources in order."""

    def __init__(self, resources: Sequence["ResourcesConfig"], name: str):
        from ray.util.placement_group import placement_group

        self._bundle_of, self.bundles, selectors = plan_bundles(resources)
        """`bundles`: the resources reserved, a dict per actor that asks for any."""
        self.group: PlacementGroup | None = None
        if self.bundles:
            extra = {"bundle_label_selector": selectors} if any(selectors) else {}
            self.group = placement_group(self.bundles, strategy="PACK", name=name, **extra)

    def actor_options(self, k: int, options: dict) -> dict:
        """`options` of actor `k` with its bundle as where it runs (the label selector
        is the bundle's, so the actor's own is dropped)."""
        index = self._bundle_of[k]
        if index is None:
            return options
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        placed = {key: value for key, value in options.items() if key != "label_selector"}
        placed["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
            self.group, placement_group_bundle_index=index, placement_group_capture_child_tasks=False)
        return placed

    def is_placed(self) -> bool:
        """Whether Ray has reserved every bundle (True for a gang with none)."""
        if self.group is None:
            return True
        from ray.util.placement_group import placement_group_table

        return placement_group_table(self.group)["state"] == "CREATED"

    def describe(self) -> str:
        """What the gang waits for, for an error message."""
        shapes: dict[str, int] = {}
        for bundle in self.bundles:
            shape = repr(bundle)
            shapes[shape] = shapes.get(shape, 0) + 1
        return " + ".join(f"{n} x {shape}" for shape, n in shapes.items())

    def release(self) -> None:
        """Give the bundles back (Ray ends any actor still in them)."""
        if self.group is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(self.group)
            self.group = None


def plan_bundles(resources: Sequence["ResourcesConfig"]) -> tuple[list[int | None], list[dict], list[dict]]:
    """(bundle index of each actor, None for one that asks for nothing; the bundles;
    each bundle's label selector)."""
    bundle_of: list[int | None] = []
    bundles: list[dict] = []
    selectors: list[dict] = []
    for resource in resources:
        bundle = resource.as_bundle()
        if bundle:
            bundle_of.append(len(bundles))
            bundles.append(bundle)
            selectors.append(dict(resource.label_selector))
        else:
            bundle_of.append(None)
    return bundle_of, bundles, selectors
