"""Granular-ball (GrBFL) image representation: segmentation, ball graphs as Arrow tables, pictures."""
