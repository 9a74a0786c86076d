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


class Gang:
    """One placement group for a set of actors, given their Ray options in order."""

    def __init__(self, options: Sequence[dict], name: str):
        from ray.util.placement_group import placement_group

        self._bundle_of: list[int | None] = []
        bundles, selectors = [], []
        for opts in options:
            bundle = _bundle(opts)
            if bundle:
                self._bundle_of.append(len(bundles))
                bundles.append(bundle)
                selectors.append(dict(opts.get("label_selector") or {}))
            else:
                self._bundle_of.append(None)
        self.bundles = bundles
        """The resources reserved, a dict per actor that asks for any."""
        self.group: PlacementGroup | None = None
        if bundles:
            extra = {"bundle_label_selector": selectors} if any(selectors) else {}
            self.group = placement_group(bundles, strategy="PACK", name=name, **extra)

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


def _bundle(options: dict) -> dict[str, float]:
    """The bundle an actor with these Ray options needs (`as_ray_options`' keys)."""
    bundle = {"CPU": options.get("num_cpus") or 0, "GPU": options.get("num_gpus") or 0,
              "memory": options.get("memory") or 0, **(options.get("resources") or {})}
    return {key: float(value) for key, value in bundle.items() if value}
