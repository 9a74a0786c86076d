from fedray.client.pool import placement_columns


def test_placement_columns_are_indexed_by_client_id():
    actors = [
        {"pid": 10, "node_id": "n1", "node_ip": "10.0.0.1", "device": "cpu", "gpu_ids": [], "clients": [0, 2],
         "sources": {2: "/data/a sha256:ab"}},
        {"pid": 11, "node_id": "n2", "node_ip": "10.0.0.2", "device": "cuda:0", "gpu_ids": ["0", "1"],
         "clients": [1]},
    ]
    cols = placement_columns(actors, 3)
    assert list(cols["actor"]) == [0, 1, 0]
    assert list(cols["node_id"]) == ["n1", "n2", "n1"]
    assert list(cols["pid"]) == [10, 11, 10]
    assert cols["actor_device"][1] == "cuda:0" and cols["gpu_ids"][1] == "0,1" and cols["gpu_ids"][0] == ""
    assert list(cols["data_source"]) == ["", "", "/data/a sha256:ab"]  # a site client's files, where read
