"""Datasets: the synthetic world, image-text pairs, video lists, retrieval sets, class lists and result tables."""
