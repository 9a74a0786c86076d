"""SecAgg+ (Bell et al., CCS 2020): secure aggregation with dropout tolerance, its
cryptographic parts, the client's and server's sides, and its stages as Ray calls."""
