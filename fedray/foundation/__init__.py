"""The server-side foundation model: sharded with DeepSpeed ZeRO over Ray actors."""
