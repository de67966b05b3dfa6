"""Every shipped config loads strictly (unknown keys and bad values are errors) into the config of the command it
is written for, as torchtune's test_configs does: a renamed key can never leave a shipped file behind."""

from __future__ import annotations

import pytest
from helpers import REPO

from coca_video.cli import TASKS
from coca_video.config import load_config

COMMAND_OF_FOLDER = {"probe": "probe", "pretrain": "pretrain", "captioning": "finetune-captions",
                     "retrieval": "retrieval",
                     "videoqa": "videoqa"}  # configs/<folder>/*.yaml -> the command that reads them
SHIPPED = sorted((REPO / "configs").rglob("*.yaml"))


def test_every_config_folder_names_the_command_it_serves():
    folders = {path.relative_to(REPO / "configs").parts[0] for path in SHIPPED}
    assert folders == set(COMMAND_OF_FOLDER), "map each folder under configs/ to its command"


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(REPO / "configs")) for p in SHIPPED])
def test_every_shipped_config_loads_into_its_command(path):
    command = COMMAND_OF_FOLDER[path.relative_to(REPO / "configs").parts[0]]
    load_config(TASKS[command].config_class(), path)
    header = path.read_text().splitlines()[0]
    if header.startswith("# coca-video "):  # a usage line names the command it runs
        assert header.split()[2] == command, header
