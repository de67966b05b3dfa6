"""Image-text pretraining: ``python pipelines/pretrain.py --config FILE [dotted.key=value ...]``; also under
torchrun."""

import sys

from coca_video.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]], exiting=True))
