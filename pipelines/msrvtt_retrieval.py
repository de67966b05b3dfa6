"""Zero-shot MSR-VTT retrieval: ``python pipelines/msrvtt_retrieval.py --config configs/retrieval/msrvtt_1k.yaml
[dotted.key=value ...]``."""

import sys

from coca_video.cli import main

if __name__ == "__main__":
    sys.exit(main(["retrieval", *sys.argv[1:]], exiting=True))
