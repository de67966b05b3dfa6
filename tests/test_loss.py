"""Losses against closed forms worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from coca_video.model import CoCaLoss, CoCaOutput, caption_loss, contrastive_loss


def test_contrastive_loss_two_pairs_by_hand():
    # Orthogonal unit vectors: matching pairs have cosine 1, others 0. With scale s each row's CE is
    # -log(e^s / (e^s + e^0)) = log(1 + e^-s), in both directions.
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = image.clone()
    scale = torch.tensor(3.0)
    assert contrastive_loss(image, text, scale).item() == pytest.approx(math.log(1 + math.exp(-3.0)), rel=1e-6)


def test_contrastive_loss_is_symmetric_average():
    # image 0 matches text 0 at cos 0.6 and text 1 at 0.8; image 1: cos 0 with text 0, 1 with text 1.
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    s = 2.0
    i2t = [-math.log(math.exp(s * 0.6) / (math.exp(s * 0.6) + math.exp(s * 0.0))),
           -math.log(math.exp(s * 1.0) / (math.exp(s * 0.8) + math.exp(s * 1.0)))]
    t2i = [-math.log(math.exp(s * 0.6) / (math.exp(s * 0.6) + math.exp(s * 0.8))),
           -math.log(math.exp(s * 1.0) / (math.exp(s * 0.0) + math.exp(s * 1.0)))]
    expected = (sum(i2t) / 2 + sum(t2i) / 2) / 2
    assert contrastive_loss(image, text, torch.tensor(s)).item() == pytest.approx(expected, rel=1e-6)


def test_caption_loss_ignores_pad_labels():
    # Uniform logits over V=4 give log(4) per counted token; pad labels (0) do not count.
    logits = torch.zeros(1, 3, 4)
    labels = torch.tensor([[2, 3, 0]])
    assert caption_loss(logits, labels, pad_id=0).item() == pytest.approx(math.log(4))
    # a confident correct prediction at one position lowers the mean over the two counted positions only
    logits[0, 0, 2] = 100.0
    assert caption_loss(logits, labels, pad_id=0).item() == pytest.approx(math.log(4) / 2, rel=1e-4)


def test_coca_loss_weights():
    image = torch.eye(2)
    out = CoCaOutput(image, image, torch.zeros(2, 3, 4), torch.tensor([[1, 2, 0], [3, 0, 0]]), torch.tensor(1.0))
    parts = CoCaLoss(pad_id=0, contrastive_weight=0.5, caption_weight=3.0)(out)
    expected = 0.5 * parts["contrastive_loss"] + 3.0 * parts["caption_loss"]
    assert parts["loss"].item() == pytest.approx(expected.item())
    assert parts["caption_loss"].item() == pytest.approx(math.log(4))
