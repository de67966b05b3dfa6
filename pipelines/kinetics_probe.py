"""Action recognition (Kinetics, Moments in Time, any labelled video list):
``python pipelines/kinetics_probe.py --config configs/probe/kinetics400_frozen.yaml [dotted.key=value ...]``."""

import sys

from coca_video.cli import main

if __name__ == "__main__":
    sys.exit(main(["probe", *sys.argv[1:]], exiting=True))
