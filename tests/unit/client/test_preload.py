"""A worker's preload: the client code imported without garbage collections, and what that
made set aside from them; collection on again for everything made afterwards."""

import gc

import fedray.client.preload as preload


def test_preloading_freezes_only_inside_a_ray_worker(ray_cluster):
    """Ray's workers (which import `fedray.session.PRELOAD` as they start) hold a frozen
    generation and collect garbage again; importing the module anywhere else (here,
    pytest) freezes nothing and leaves collection on."""
    assert not preload.in_ray_worker()
    assert gc.get_freeze_count() == 0 and gc.isenabled()

    @ray_cluster.remote(num_cpus=0)
    def worker_state():
        import gc as worker_gc
        import sys

        return (preload.in_ray_worker(), "fedray.client.preload" in sys.modules, worker_gc.get_freeze_count(),
                worker_gc.isenabled())

    in_worker, preloaded, frozen, collecting = ray_cluster.get(worker_state.remote())
    assert in_worker and preloaded and collecting
    assert frozen > 10_000  # torch's and fedray's module objects, at least
