"""Engines that run the one scoring core (:mod:`coca_video.scoring`) somewhere other than this process: Ray."""
