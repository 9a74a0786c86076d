import numpy as np

from fedray.client.pool import clients_table


def test_clients_table_has_one_row_per_client_sorted_by_id():
    actors = [
        {"pid": 10, "node_id": "n1", "node_ip": "10.0.0.1", "device": "cpu", "gpu_ids": [], "clients": [0, 2]},
        {"pid": 11, "node_id": "n2", "node_ip": "10.0.0.2", "device": "cuda:0", "gpu_ids": ["0", "1"],
         "clients": [1]},
    ]
    rows = clients_table(actors, np.array([5, 6, 7]))
    assert [r["client_id"] for r in rows] == [0, 1, 2]
    assert [r["actor"] for r in rows] == [0, 1, 0]
    assert rows[1] == {"client_id": 1, "actor": 1, "node_id": "n2", "node_ip": "10.0.0.2", "pid": 11,
                       "device": "cuda:0", "gpu_ids": "0,1", "num_examples": 6}
